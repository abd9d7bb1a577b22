"""Decide a file's type from its content, with the extension only as a hint.

A PDF named `.txt` is parsed as a PDF, a text file named `.docx` as text, a ZIP archive is looked
into to tell DOCX, PPTX and XLSX apart, and anything unrecognised is passed over with the reason.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

# Extension -> parser kind, for content that does not identify itself (text formats).
EXTENSIONS = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
    ".html": "html", ".htm": "html", ".csv": "csv", ".eml": "email",
    ".pdf": "pdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx", ".msg": "msg",
    ".rtf": "rtf", ".odt": "odt",
}
TEXT_KINDS = {"text", "markdown", "html", "csv", "email"}
OOXML = {"word/document.xml": "docx", "ppt/presentation.xml": "pptx", "xl/workbook.xml": "xlsx"}
HEAD_BYTES = 8192
# Office files are ZIP archives that their parsers unpack whole in memory. One that would unpack
# to more than this, or one entry that deflates more than this ratio (real XML: 5-40x; a run of
# zeros: ~1,000x), is passed over as a possible zip bomb. zipfile stops at an entry's declared
# size, so the declared sizes bound what a parser can read.
MAX_UNPACKED_BYTES = 512 * 2**20
MAX_RATIO = 200
RATIO_FLOOR = 2**20  # entries smaller than this unpacked are never refused for their ratio


class Unsupported(Exception):
    """The file is passed over; the message says why."""


def read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    sample = head.decode("latin-1")
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f\v")
    return controls <= len(sample) // 50


def detect_kind(path: Path, head: bytes) -> str:
    """The parser kind for `path`, or Unsupported with the reason."""
    suffix = path.suffix.lower()
    claimed = EXTENSIONS.get(suffix)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return zip_kind(path, claimed, suffix)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        if claimed == "msg":
            return "msg"
        raise Unsupported("legacy Office binary file (.doc/.xls/.ppt); save it as DOCX, XLSX or PPTX")
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if claimed is None:
        raise Unsupported(f"unsupported file type {suffix or '(no extension)'}")
    if head and looks_like_text(head) and claimed not in TEXT_KINDS:
        return "text"  # a text file under a binary format's name: the content decides
    return claimed  # empty and binary files fail at parsing, with the reason


def zip_kind(path: Path, claimed: str | None, suffix: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        if claimed in ("docx", "pptx", "xlsx"):
            return claimed  # a damaged Office file: the parser says what is wrong
        raise Unsupported(f"damaged ZIP archive ({exc})") from exc
    names = {entry.filename for entry in entries}
    refuse_bomb(entries)
    for member, kind in OOXML.items():
        if member in names:
            return kind
    if "content.xml" in names and "mimetype" in names:
        mimetype = opendocument_type(path)
        if mimetype == "application/vnd.oasis.opendocument.text":
            return "odt"
        raise Unsupported(f"OpenDocument file of type {mimetype or 'unknown'}; only text documents (.odt) are indexed")
    entries_text = "1 entry" if len(names) == 1 else f"{len(names)} entries"
    raise Unsupported(f"archive ({suffix or 'zip'}) with {entries_text}; archives are not indexed")


def refuse_bomb(entries: list[zipfile.ZipInfo]) -> None:
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > MAX_UNPACKED_BYTES:
        raise Unsupported(f"ZIP container would unpack to {unpacked / 2**20:,.0f} MiB (more than "
                          f"{MAX_UNPACKED_BYTES // 2**20} MiB): passed over as a possible zip bomb")
    for entry in entries:
        if entry.file_size > RATIO_FLOOR and entry.file_size > MAX_RATIO * max(entry.compress_size, 1):
            raise Unsupported(f"ZIP entry {entry.filename!r} deflates {entry.file_size // max(entry.compress_size, 1):,}x "
                              f"(to {entry.file_size / 2**20:,.0f} MiB; more than {MAX_RATIO}x): passed over as a "
                              "possible zip bomb")


def opendocument_type(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        with archive.open("mimetype") as member:  # read a little: the entry may be a zip bomb
            return member.read(100).decode("ascii", "replace").strip()
