"""Folders and uploads from the web UI (editors): register a folder, sync it, upload files or a zip.

A folder may be added only under one of the matter's own roots (set by an administrator, within
`DOCQA_SOURCE_ROOTS`) and never where it overlaps another matter's folders or docqa's data: an
editor cannot reach another matter's files by naming them. Uploads land in the data folder, one
folder per matter, and are synced like any source. A zip is unpacked with its names checked: nothing absolute, nothing outside the folder,
no links, and a cap on the files and bytes it may unpack to (a zip bomb stops at the cap).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from docqa import actions
from docqa.faults import sentence
from docqa.models import Matter, Role, Source
from docqa.permissions import matter_for
from ingest.errors import DocqaError


def allowed_roots() -> list[Path]:
    """The server-wide ceiling: every matter's roots must lie under one of these (when set)."""
    return [Path(r).resolve() for r in settings.SOURCE_ROOTS]


def upload_folder(matter: Matter) -> Path:
    return matter.upload_folder()


def overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def others_folders(matter: Matter) -> list[Path]:
    """Every folder another matter syncs or may sync: an ethical wall runs around all of them."""
    folders = [Path(r) for r in Source.objects.exclude(matter=matter).values_list("root", flat=True)]
    for other in Matter.objects.exclude(id=matter.id).exclude(source_roots=""):
        folders += [Path(r).resolve() for r in other.roots()]
    return folders


def check_roots(matter: Matter, roots: list[str]) -> list[str]:
    """Validate a matter's roots (absolute folders under DOCQA_SOURCE_ROOTS, apart from other matters')."""
    checked = []
    for raw in roots:
        path = Path(raw).expanduser()
        if not path.is_absolute():
            raise DocqaError(f"{raw}: give an absolute path on the server")
        path = path.resolve()
        ceiling = allowed_roots()
        if ceiling and not any(path.is_relative_to(r) for r in ceiling):
            raise DocqaError(f"{path} is not under DOCQA_SOURCE_ROOTS ({', '.join(map(str, ceiling))})")
        if overlaps(path, settings.DATA_DIR.resolve()):
            raise DocqaError(f"{path} overlaps docqa's own data folder")
        clash = next((o for o in others_folders(matter) if overlaps(path, o)), None)
        if clash is not None:
            how = "is" if clash == path else "is inside" if path.is_relative_to(clash) else "holds"
            raise DocqaError(f"{path} {how} {clash if clash != path else 'a folder'} of another matter: a matter's "
                             "folders stay apart from every other matter's")
        checked.append(str(path))
    return checked


def checked_folder(matter: Matter, raw: str) -> Path:
    """The folder to sync: a registered source of the matter, its uploads, or a folder under its roots
    that no other matter holds (an editor can never reach another matter's files this way)."""
    if not raw.strip():
        raise DocqaError("give the folder's path on the server")
    path = Path(raw.strip()).expanduser()
    if not path.is_absolute():
        raise DocqaError("give an absolute path on the server, e.g. /srv/shares/acme")
    path = path.resolve()
    if Source.objects.filter(matter=matter, root=str(path)).exists() or path == upload_folder(matter):
        return path
    roots = [Path(r).resolve() for r in matter.roots()]
    if not any(path.is_relative_to(r) for r in roots):
        allowed = ", ".join(map(str, roots)) or "none are set (an administrator sets them: manage.py matter roots)"
        raise DocqaError(f"{path} is not under a folder this matter may sync from; its folders: {allowed}")
    clash = next((o for o in others_folders(matter) if overlaps(path, o)), None)
    if clash is not None or overlaps(path, settings.DATA_DIR.resolve()):
        raise DocqaError(f"{path} overlaps a folder of another matter or docqa's own data; it cannot be synced here")
    if not path.is_dir():
        raise DocqaError(f"{path} is not a folder on the server")
    return path


def save_uploads(matter: Matter, files: list[UploadedFile]) -> tuple[int, list[str]]:
    """Write uploaded files (a .zip unpacked) into the matter's upload folder: the count written,
    and the hidden entries of zips left out. Every name and cap is checked before anything is
    written, so a refused upload leaves the folder as it was."""
    if not files:
        raise DocqaError("choose one or more files, or a zip")
    budget = {"files": settings.UPLOAD_MAX_FILES, "bytes": settings.UPLOAD_MAX_BYTES}
    plans: list[tuple[UploadedFile, str, Zip | None]] = []
    try:
        for upload in files:
            name = safe_name(upload.name or "")
            if name.lower().endswith(".zip"):
                plans.append((upload, name, checked_zip(upload, budget)))
                continue
            spend(budget, 1, upload.size or 0, name)
            plans.append((upload, name, None))
        folder = upload_folder(matter)
        folder.mkdir(parents=True, exist_ok=True)
        written, hidden = 0, list[str]()
        for upload, name, zipped in plans:
            if zipped is not None:
                for member, member_name in zipped.members:
                    write_member(zipped.archive, member, folder / member_name, name)
                written, hidden = written + len(zipped.members), hidden + zipped.hidden
                continue
            try:
                with (folder / name).open("wb") as out:
                    for piece in upload.chunks():
                        out.write(piece)
            except OSError as exc:
                raise DocqaError(f"cannot write {name!r}: {exc.strerror or type(exc).__name__}") from exc
            written += 1
    finally:
        for _, _, zipped in plans:
            if zipped is not None:
                zipped.archive.close()
    return written, hidden


def name_parts(name: str) -> list[str]:
    """The parts of a name as an upload or a zip writes it (either slash), without its empty and '.' ones."""
    return [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", "/", ".")]


def safe_name(name: str) -> str:
    """A relative path with no '..', no absolute part and no hidden component, or a refusal."""
    parts = name_parts(name)
    if not parts or any(p == ".." for p in parts) or ":" in parts[0]:
        raise DocqaError(f"refused the file name {name!r}: it would land outside the upload folder")
    if any(p.startswith(".") for p in parts):
        raise DocqaError(f"refused the file name {name!r}: hidden files (a name starting with '.') are not synced")
    return str(PurePosixPath(*parts))


def hidden_entry(name: str) -> bool:
    """An entry a zip carries that is no document: macOS's `__MACOSX/` resource forks and
    `.DS_Store`, or any other hidden file or folder (which a sync passes over in any case)."""
    parts = name_parts(name)
    return bool(parts) and (parts[0] == "__MACOSX" or any(p.startswith(".") and p != ".." for p in parts))


def spend(budget: dict[str, int], files: int, size: int, name: str) -> None:
    budget["files"] -= files
    budget["bytes"] -= size
    if budget["files"] < 0 or budget["bytes"] < 0:
        raise DocqaError(f"the upload is too large at {name!r}: at most {settings.UPLOAD_MAX_FILES} files and "
                         f"{settings.UPLOAD_MAX_BYTES // 2**20} MiB in all (DOCQA_UPLOAD_MAX_FILES, DOCQA_UPLOAD_MAX_BYTES)")


@dataclass
class Zip:
    archive: zipfile.ZipFile
    members: list[tuple[zipfile.ZipInfo, str]]  # each with its checked name
    hidden: list[str]  # entries left out: __MACOSX/..., .DS_Store and other hidden names


def checked_zip(upload: UploadedFile, budget: dict[str, int]) -> Zip:
    """Check every entry (names, links, caps, a file where another needs a folder) before any is written."""
    try:
        archive = zipfile.ZipFile(upload)
    except zipfile.BadZipFile as exc:
        raise DocqaError(f"{upload.name} is not a readable zip file") from exc
    try:
        members, hidden = [], []
        for member in archive.infolist():
            if member.is_dir():
                continue
            if hidden_entry(member.filename):
                hidden.append(member.filename)
                continue
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DocqaError(f"refused {member.filename!r} in {upload.name}: links are not unpacked")
            name = safe_name(member.filename)
            spend(budget, 1, member.file_size, name)
            members.append((member, name))
        files = {name for _, name in members}
        for _, name in members:
            parents = {str(p) for p in PurePosixPath(name).parents if str(p) != "."}
            if parents & files:
                raise DocqaError(f"refused {upload.name}: {name!r} needs a folder where the zip also has a file")
    except BaseException:
        archive.close()
        raise
    return Zip(archive, members, hidden)


def write_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, zip_name: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        left = member.file_size
        with archive.open(member) as src, target.open("wb") as out:
            while piece := src.read(1 << 20):
                left -= len(piece)
                if left < 0:  # more bytes than the header promised: stop at the promise
                    raise DocqaError(f"refused {member.filename!r} in {zip_name}: it unpacks larger than it says")
                out.write(piece)
    except OSError as exc:  # e.g. an earlier upload left a file where this needs a folder
        raise DocqaError(f"cannot write {member.filename!r} from {zip_name}: {exc.strerror or type(exc).__name__}") from exc


@login_required
@require_POST
def sync(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a sync of a folder (a registered source, or a new one under an allowed root)."""
    matter = matter_for(request.user, slug, Role.EDITOR)
    try:
        folder = checked_folder(matter, request.POST.get("root", ""))
        run = actions.do_start_ingest(matter, folder, f"web:{request.user.get_username()}")
    except DocqaError as exc:
        request.session["sync_root"] = request.POST.get("root", "")[:4096]  # back in the box, to correct
        return redirect_with_error(request, slug, str(exc))
    return redirect("run", slug=slug, run_id=run.id)


@login_required
@require_POST
def upload(request: HttpRequest, slug: str) -> HttpResponse:
    """Save uploaded files (or a zip) into the matter's upload folder, then sync that folder."""
    matter = matter_for(request.user, slug, Role.EDITOR)
    try:
        written, hidden = save_uploads(matter, request.FILES.getlist("files"))
        run = actions.do_start_ingest(matter, upload_folder(matter), f"web:{request.user.get_username()}")
    except DocqaError as exc:
        return redirect_with_error(request, slug, str(exc))
    if hidden:
        messages.info(request, f"{written:,} file{'s' if written != 1 else ''} uploaded; {len(hidden):,} hidden "
                      f"entr{'ies' if len(hidden) != 1 else 'y'} of the zip left out ({hidden_examples(hidden)}): "
                      "they hold no documents, and a sync passes hidden files over.")
    return redirect("run", slug=slug, run_id=run.id)


def hidden_examples(hidden: list[str], shown: int = 3) -> str:
    """A few of the hidden entries left out, as a person knows them: "__MACOSX/, .DS_Store"."""
    names = {"__MACOSX/" if name_parts(h)[:1] == ["__MACOSX"] else name_parts(h)[-1] for h in hidden}
    return ", ".join(sorted(names)[:shown])


def redirect_with_error(request: HttpRequest, slug: str, message: str) -> HttpResponse:
    """Back to the runs page, the message kept in the session for it: never in the address,
    where any link could carry words of its own into the page's error box."""
    messages.error(request, sentence(message))
    return redirect("runs", slug=slug)
