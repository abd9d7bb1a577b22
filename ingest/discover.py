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
    # Files and folders that could not be read this time (permissions, a share that dropped): what
    # was indexed from them is kept, not taken for deleted.
    unread_files: set[str] = field(default_factory=set)
    unread_folders: list[str] = field(default_factory=list)  # "a/b/"

    def unread(self, path: str) -> bool:
        return path in self.unread_files or any(path.startswith(folder) for folder in self.unread_folders)


def printable(name: str) -> str:
    """A name as it can be stored and shown: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode kept undecodable bytes as lone surrogates
        return False
    return True


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


def walk_folder(root: Path, *, max_bytes: int, exclude: Path | None = None) -> Discovery:
    """Every indexable file under `root`; what is passed over is listed with the reason. A hidden
    folder (".git"), a link to a folder and `exclude` (docqa's own data folder, which holds the
    first login's password) are one entry each: none is entered. A folder or file that cannot be
    read is listed too, and noted so that what was indexed from it is kept."""
    root = root.resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    try:
        os.scandir(root).close()
    except OSError as exc:  # nothing under it can be seen: not a folder emptied of everything
        raise PermissionError(f"cannot read the folder {root}: {exc.strerror or exc}") from exc
    exclude = exclude.resolve() if exclude is not None else None
    found = Discovery()

    def unreadable(error: OSError) -> None:
        where = Path(error.filename or root)
        if where == root:  # the root went away mid-walk: nothing under it may be taken for deleted
            raise PermissionError(f"cannot read the folder {root}: {error.strerror or error}")
        rel = printable(where.relative_to(root).as_posix()) + "/"
        found.skipped.append(PassedOver(rel, f"cannot read folder: {error.strerror or error}; what was indexed "
                                             "from it is kept"))
        found.unread_folders.append(rel)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        here = Path(dirpath)
        entered = []
        for name in sorted(dirnames):
            rel = printable((here / name).relative_to(root).as_posix())
            if (here / name).is_symlink():  # os.walk lists links to folders here and does not follow them
                found.skipped.append(PassedOver(rel + "/", "link to a folder; not followed"))
            elif name.startswith("."):
                found.skipped.append(PassedOver(rel + "/", "hidden folder; not read"))
            elif exclude is not None and here / name == exclude:
                found.skipped.append(PassedOver(rel + "/", "docqa's own data folder; never read"))
            elif not valid_name(name):
                found.skipped.append(PassedOver(rel + "/", "folder name is not valid UTF-8; not read (rename it)"))
            else:
                entered.append(name)
        dirnames[:] = entered
        for name in sorted(filenames):
            if name.startswith("."):
                found.skipped.append(PassedOver(printable((here / name).relative_to(root).as_posix()),
                                                "hidden file; not read"))
            elif not valid_name(name):
                found.skipped.append(PassedOver(printable((here / name).relative_to(root).as_posix()),
                                                "file name is not valid UTF-8; not read (rename it)"))
            else:
                _classify(root, here / name, max_bytes, found)
    return found


def size_text(size: int) -> str:
    """1,000 bytes, 2.5 MiB, 1,024 MiB"""
    if size < 2**20:
        return f"{size:,} bytes"
    return f"{size / 2**20:,.1f} MiB" if size < 10 * 2**20 else f"{size / 2**20:,.0f} MiB"


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
        found.skipped.append(PassedOver(rel, f"file is {size_text(size)}, over the limit of {size_text(max_bytes)} "
                                             "(DOCQA_MAX_FILE_MB)"))
        return
    try:
        kind = detect_kind(path, read_head(path))
        digest = hash_file(path)
    except Unsupported as exc:
        found.skipped.append(PassedOver(rel, str(exc)))
        return
    except OSError as exc:
        found.skipped.append(PassedOver(rel, f"cannot read file: {exc.strerror or exc}; what was indexed from it "
                                             "is kept"))
        found.unread_files.add(rel)
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
