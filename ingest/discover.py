"""Walk a folder tree and say what changed since the last sync.

`walk_folder` never follows a link out of the root, never reads a file over the size limit, and
returns every file it passed over with the reason, so nothing disappears silently.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ingest.detect import EXTENSIONS, Unsupported, detect_kind, read_head

# Files without a document extension whose content may still be a document (a PDF saved with no
# or the wrong extension is common in exported shares); everything else unknown is passed over
# without being opened.
SNIFFED_ANYWAY = {"", ".bin", ".dat", ".tmp"}

@dataclass(frozen=True)
class FoundFile:
    path: str  # relative to the root, POSIX separators
    abspath: Path
    size: int
    sha256: str
    kind: str


@dataclass(frozen=True)
class PassedOver:
    path: str
    reason: str


@dataclass
class Discovery:
    files: list[FoundFile] = field(default_factory=list)
    skipped: list[PassedOver] = field(default_factory=list)


@dataclass
class SyncPlan:
    new: list[FoundFile] = field(default_factory=list)
    changed: list[FoundFile] = field(default_factory=list)
    unchanged: list[FoundFile] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    moved: list[tuple[str, FoundFile]] = field(default_factory=list)  # (old path, file at new path)


def hash_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def walk_folder(root: Path, *, max_bytes: int) -> Discovery:
    """Every indexable file under `root`; what is passed over is listed with the reason. A hidden
    folder (".git") and a link to a folder are one entry each: neither is entered."""
    root = root.resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    found = Discovery()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        entered = []
        for name in sorted(dirnames):
            rel = (here / name).relative_to(root).as_posix()
            if (here / name).is_symlink():  # os.walk lists links to folders here and does not follow them
                found.skipped.append(PassedOver(rel + "/", "link to a folder; not followed"))
            elif name.startswith("."):
                found.skipped.append(PassedOver(rel + "/", "hidden folder; not read"))
            else:
                entered.append(name)
        dirnames[:] = entered
        for name in sorted(filenames):
            if name.startswith("."):
                found.skipped.append(PassedOver((here / name).relative_to(root).as_posix(), "hidden file; not read"))
                continue
            _classify(root, here / name, max_bytes, found)
    return found


def _classify(root: Path, path: Path, max_bytes: int, found: Discovery) -> None:
    rel = path.relative_to(root).as_posix()
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            found.skipped.append(PassedOver(rel, "broken link or link loop; not followed"))
            return
        if not target.is_relative_to(root):
            found.skipped.append(PassedOver(rel, "link points outside the folder"))
            return
    if not path.is_file():
        found.skipped.append(PassedOver(rel, "not a regular file"))
        return
    if path.suffix.lower() not in EXTENSIONS and path.suffix.lower() not in SNIFFED_ANYWAY:
        found.skipped.append(PassedOver(rel, f"unsupported file type {path.suffix or '(no extension)'}"))
        return
    size = path.stat().st_size
    if size > max_bytes:
        found.skipped.append(PassedOver(rel, f"file is {size} bytes, over the {max_bytes}-byte limit"))
        return
    try:
        kind = detect_kind(path, read_head(path))
        digest = hash_file(path)
    except Unsupported as exc:
        found.skipped.append(PassedOver(rel, str(exc)))
        return
    except OSError as exc:
        found.skipped.append(PassedOver(rel, f"cannot read file: {exc.strerror or exc}"))
        return
    found.files.append(FoundFile(rel, path, size, digest, kind))


def plan_sync(files: list[FoundFile], known: dict[str, str]) -> SyncPlan:
    """Diff discovered files against `known` (path -> sha256 of the indexed version)."""
    plan = SyncPlan()
    for found in files:
        previous = known.get(found.path)
        if previous is None:
            plan.new.append(found)
        elif previous != found.sha256:
            plan.changed.append(found)
        else:
            plan.unchanged.append(found)
    present = {f.path for f in files}
    plan.deleted = sorted(path for path in known if path not in present)
    pair_moves(plan, known)
    return plan


def pair_moves(plan: SyncPlan, known: dict[str, str]) -> None:
    """A new file with the content of a vanished indexed one is that file moved: no re-embedding."""
    vanished: dict[str, list[str]] = {}
    for path in plan.deleted:
        if known[path]:
            vanished.setdefault(known[path], []).append(path)
    still_new = []
    for found in plan.new:
        candidates = vanished.get(found.sha256)
        if candidates:
            old = candidates.pop(0)
            plan.moved.append((old, found))
            plan.deleted.remove(old)
        else:
            still_new.append(found)
    plan.new = still_new
