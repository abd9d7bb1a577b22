"""Attachments of e-mail messages (EML and Outlook MSG), indexed as child documents.

Only a message's own attachments are taken (one level): an attached message is indexed as a
message, but its attachments are not opened, so a crafted chain of messages cannot multiply
the work. Counts and sizes are bounded.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import ParseError, is_time_limit

MAX_ATTACHMENTS = 50
MAX_NAME_BYTES = 200
UNSAFE = re.compile(r"[^\w.\- ]+")


@dataclass(frozen=True)
class Attachment:
    name: str  # a safe, unique file name within the message
    data: bytes


def extract_attachments(path: Path, kind: str, max_bytes: int) -> tuple[list[Attachment], list[str]]:
    """The message's attachments, and a note for each one left out (too big, too many)."""
    if kind == "email":
        raw = _eml_attachments(path)
    elif kind == "msg":
        raw = _msg_attachments(path)
    else:
        return [], []
    kept: list[Attachment] = []
    notes: list[str] = []
    used: set[str] = set()
    for index, (name, data) in enumerate(raw, 1):
        name = safe_name(name, index, used)
        if len(kept) >= MAX_ATTACHMENTS:
            notes.append(f"{name}: more than {MAX_ATTACHMENTS} attachments; not indexed")
        elif len(data) > max_bytes:
            notes.append(f"{name}: {len(data) // (1 << 20)} MiB, over the file size limit; not indexed")
        else:
            kept.append(Attachment(name, data))
    return kept, notes


def safe_name(name: str, index: int, used: set[str]) -> str:
    """A name without path separators or control characters, unique among its siblings."""
    base = UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip(" .") or f"attachment-{index}"
    while len(base.encode("utf-8")) > MAX_NAME_BYTES:  # a path part; keep the extension
        stem, dot, suffix = base.rpartition(".")
        base = f"{stem[:-1]}.{suffix}" if dot and len(suffix) <= 16 and stem else base[:-1]
    candidate = base
    while candidate.lower() in used:
        candidate = f"{index}-{base}"
        index += 1000
    used.add(candidate.lower())
    return candidate


def _eml_attachments(path: Path) -> list[tuple[str, bytes]]:
    with path.open("rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    found = []
    if not isinstance(message, email.message.EmailMessage):
        return []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        if payload is None and part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            payload = first.as_bytes() if isinstance(first, email.message.Message) else None
        if isinstance(payload, bytes) and payload:
            default = "message.eml" if part.get_content_type() == "message/rfc822" else ""
            found.append((part.get_filename() or default, payload))
    return found


def _msg_attachments(path: Path) -> list[tuple[str, bytes]]:
    try:
        from oxmsg import Message

        message = Message.load(str(path))
        return [(a.file_name or "", a.file_bytes or b"") for a in message.attachments if a.file_bytes]
    except Exception as exc:  # a damaged MSG: the body parser reports the file itself
        if is_time_limit(exc):
            raise
        raise ParseError(f"attachments could not be read: {type(exc).__name__}: {exc}") from exc
