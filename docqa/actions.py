"""Every state change goes through a do_* function here, and that is where it is audited.

Views, management commands and tasks share these paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import slug_re
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from docqa import services
from docqa.faults import kind_of, recorded_error
from docqa.llm import get_llm, get_reranker
from docqa.models import (
    COUNT_KEYS,
    FINAL_STATES,
    Answer,
    AuditEvent,
    Change,
    Citation,
    Conversation,
    Document,
    DocumentStatus,
    Exclusion,
    IngestItem,
    IngestRun,
    ItemState,
    Matter,
    Membership,
    Question,
    Role,
    RunStatus,
    Source,
    path_starts,
    sha256_text,
    shown_path,
    split_shown,
)
from inference.answer import AnswerResult, Stopped, answer_question, fitting_history, stopped_note
from inference.llm import Cancelled, LlmError, LlmMisconfigured, LlmTimeout, StopSignal, VllmClient
from inference.pack import Packing, best_first
from ingest.discover import plan_sync, walk_folder
from ingest.errors import DocqaError

logger = logging.getLogger(__name__)
GENESIS = "0" * 64
STALL_WARNING_S = 120
BROKER_CHECK_S = 5  # how often a waiting `ingest` checks whether the broker restarted or lost tasks
LOST_QUIET_S = 10  # a waiting item's task is taken for lost only after the run was quiet this long


def record_audit(actor: str, action: str, matter: Matter | None, detail: dict[str, Any]) -> AuditEvent:
    """Append one event to the hash chain (retrying if another writer appended first)."""
    for _ in range(5):
        try:
            with transaction.atomic():
                last = AuditEvent.objects.select_for_update().order_by("-id").first()
                event = AuditEvent(
                    actor=actor, action=action, matter=matter, detail=detail,
                    prev_hash=last.hash if last else GENESIS,
                )
                event.hash = event.compute_hash()
                event.save()
                return event
        except IntegrityError:
            continue
    raise RuntimeError("could not append to the audit chain after 5 attempts")


def verify_audit_chain() -> tuple[int, list[str]]:
    """(events checked, problems): every row's hash and its link to the row before it."""
    from docqa.retention import resealed

    problems: list[str] = []
    previous = GENESIS
    count = 0
    checkpoints = resealed()  # pre-sealing events whose content retention replaced
    for event in AuditEvent.objects.order_by("id").iterator():
        count += 1
        if event.prev_hash != previous:
            problems.append(f"event {event.id}: does not link to the event before it (one removed or reordered)")
        if not event.verifies() and checkpoints.get(event.id) != event.compute_hash():
            problems.append(f"event {event.id}: content does not match its hash (edited)")
        previous = event.hash
    return count, problems


def checked_slug(slug: str) -> str:
    """A new matter's short name, refused unless it can stand in an address (/m/SLUG/)."""
    if not slug_re.match(slug or "") or len(slug) > 100:  # Django's slug, as the URLs' <slug:...>
        raise DocqaError(f"{slug!r} cannot name a matter: use up to 100 letters, digits, hyphens and "
                         "underscores, e.g. acme-v-beta (the display name can be anything: --name)")
    clash = Matter.objects.filter(slug__iexact=slug).exclude(slug=slug).values_list("slug", flat=True).first()
    if clash:  # two addresses a person cannot tell apart
        raise DocqaError(f"{slug!r} cannot name a matter: it differs from the matter {clash!r} only in case")
    return slug


def get_or_create_matter(slug: str, actor: str) -> Matter:
    matter = Matter.objects.filter(slug=slug).first()
    if matter is not None:
        return matter
    matter, created = Matter.objects.get_or_create(slug=checked_slug(slug), defaults={"name": slug})
    if created:
        record_audit(actor, "matter.create", matter, {"slug": slug})
    return matter


# --- Members, roles and ethical walls (every change audited) ------------------------------------


def do_create_matter(slug: str, name: str, actor: str) -> Matter:
    if Matter.objects.filter(slug=slug).exists():
        raise DocqaError(f"matter {slug!r} already exists")
    matter = Matter.objects.create(slug=checked_slug(slug), name=name or slug)
    record_audit(actor, "matter.create", matter, {"slug": slug, "name": matter.name})
    return matter


def do_grant(matter: Matter, principal: Any, role: str, actor: str) -> Membership:
    """Give a user or a group (`principal`) a role in the matter, replacing any role it held."""
    if role not in Role.values:
        raise DocqaError(f"unknown role {role!r}; one of {', '.join(Role.values)}")
    field = "group" if isinstance(principal, Group) else "user"
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(matter=matter, **{field: principal}, defaults={"role": role})
        record_audit(actor, "matter.grant", matter, {field: principal_name(principal), "role": role})
    return membership


def do_revoke(matter: Matter, principal: Any, actor: str) -> bool:
    field = "group" if isinstance(principal, Group) else "user"
    with transaction.atomic():
        removed, _ = Membership.objects.filter(matter=matter, **{field: principal}).delete()
        if removed:
            record_audit(actor, "matter.revoke", matter, {field: principal_name(principal)})
    return bool(removed)


def do_exclude(matter: Matter, user: Any, reason: str, actor: str) -> Exclusion:
    """Wall a user off from the matter: it beats any membership, direct or through a group."""
    with transaction.atomic():
        exclusion, _ = Exclusion.objects.update_or_create(matter=matter, user=user,
                                                          defaults={"reason": reason, "created_by": actor})
        record_audit(actor, "matter.exclude", matter, {"user": user.get_username(), "reason": reason})
    return exclusion


def do_unexclude(matter: Matter, user: Any, actor: str) -> bool:
    with transaction.atomic():
        removed, _ = Exclusion.objects.filter(matter=matter, user=user).delete()
        if removed:
            record_audit(actor, "matter.unexclude", matter, {"user": user.get_username()})
    return bool(removed)


def do_hold(matter: Matter, reason: str, actor: str) -> None:
    """Place the matter under legal hold: retention expires nothing of it until released."""
    if not reason.strip():
        raise DocqaError("a legal hold needs a reason (it is kept in the audit trail)")
    with transaction.atomic():
        Matter.objects.filter(pk=matter.pk).update(legal_hold=True, legal_hold_reason=reason)
        matter.legal_hold, matter.legal_hold_reason = True, reason
        record_audit(actor, "matter.hold", matter, {"reason": reason})


def do_release(matter: Matter, actor: str) -> bool:
    with transaction.atomic():
        released = Matter.objects.filter(pk=matter.pk, legal_hold=True).update(legal_hold=False, legal_hold_reason="")
        if released:
            matter.legal_hold, matter.legal_hold_reason = False, ""
            record_audit(actor, "matter.release", matter, {})
    return bool(released)


def do_set_roots(matter: Matter, roots: list[str], actor: str) -> list[str]:
    """Set the folders this matter's editors may sync from (checked: see docqa/sources.py)."""
    from docqa.sources import check_roots

    checked = check_roots(matter, roots)
    with transaction.atomic():
        Matter.objects.filter(pk=matter.pk).update(source_roots="\n".join(checked))
        matter.source_roots = "\n".join(checked)
        record_audit(actor, "matter.roots", matter, {"roots": checked})
    return checked


def do_expire(actor: str, *, days: int | None = None, dry_run: bool = False) -> Any:
    """Apply retention (docqa/retention.py) and audit what it did."""
    from docqa.retention import expire_content

    try:
        report = expire_content(days=days, dry_run=dry_run)
    except ValueError as exc:
        raise DocqaError(str(exc)) from exc
    if not dry_run:
        record_audit(actor, "retention.expire", None, report.as_dict())
    return report


TOKEN_PREFIX = "dq_"


def do_create_token(user: Any, name: str, actor: str) -> str:
    """A new API token for `user`; the token itself is returned once and only its hash is kept."""
    import secrets

    from docqa.models import ApiToken

    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken.objects.create(user=user, name=name, prefix=token[:10],
                                     key_hash=hashlib.sha256(token.encode()).hexdigest())
    record_audit(actor, "token.create", None, {"user": user.get_username(), "token": record.id, "name": name})
    return token


def do_revoke_token(token_id: int, actor: str) -> bool:
    from docqa.models import ApiToken

    with transaction.atomic():
        record = ApiToken.objects.filter(id=token_id, revoked_at__isnull=True).select_related("user").first()
        if record is None:
            return False
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        record_audit(actor, "token.revoke", None, {"user": record.user.get_username(), "token": record.id})
    return True


def user_for_token(token: str) -> Any:
    """The active user holding this (unrevoked) token, or None."""
    from docqa.models import ApiToken

    if not token.startswith(TOKEN_PREFIX):
        return None
    record = (ApiToken.objects.filter(key_hash=hashlib.sha256(token.encode()).hexdigest(), revoked_at__isnull=True,
                                      user__is_active=True).select_related("user").first())
    if record is None:
        return None
    if record.last_used_at is None or timezone.now() - record.last_used_at > timedelta(minutes=5):
        ApiToken.objects.filter(pk=record.pk).update(last_used_at=timezone.now())
    return record.user


def principal_name(principal: Any) -> str:
    return f"group:{principal.name}" if isinstance(principal, Group) else str(principal.get_username())


# --- Ingestion ---------------------------------------------------------------------------------


def do_start_ingest(matter: Matter, root: Path, actor: str, *, allow_empty: bool = False) -> IngestRun:
    """Discover `root`, record a run with one item per file, and queue the work. An empty folder
    whose documents the matter holds is refused unless `allow_empty`: a share that is not mounted
    looks exactly like one whose every file was deleted."""
    root = root.resolve()
    data = settings.DATA_DIR.resolve()
    own_uploads = matter.upload_folder()
    if root.is_relative_to(data / "uploads") and root != own_uploads:
        # Each matter's web uploads land in a folder of their own there: syncing the folder above
        # them, another matter's, or a part of this one's would index them into this matter again.
        raise DocqaError(f"{root} holds web uploads, each matter's in a folder of its own: only "
                         f"{own_uploads} is synced into {matter.slug!r}, and the upload page does it")
    if root.is_relative_to(data) and root != own_uploads:
        raise DocqaError(f"{root} is docqa's own data folder (or inside it), which holds the database and the "
                         "first login's password: it is never synced")
    # (A folder under docqa's data folder, the uploads, is never walked by a sync of a folder above it.)
    around = next((Path(r) for r in matter.sources.exclude(root=str(root)).values_list("root", flat=True)
                   if root.is_relative_to(r) and not root.is_relative_to(data)), None)
    if around is not None:  # its files are in the matter already: a second copy would crowd every answer
        raise DocqaError(f"{root} is inside {around}, which is synced into matter {matter.slug!r} already: its "
                         f"files are there; sync {around} to bring them up to date")
    source, _ = Source.objects.get_or_create(matter=matter, root=str(root))
    refuse_overlapping_run(source)
    inner = sources_inside(matter, root)
    for other in inner:  # their documents are about to change hands
        refuse_overlapping_run(other)
    try:
        found = walk_folder(root, max_bytes=settings.MAX_FILE_BYTES, exclude=data)
    except OSError as exc:  # the folder itself cannot be read: nothing in it is taken for deleted
        raise DocqaError(str(exc)) from exc
    # Attachments follow their message; only the files on disk are diffed against the tree.
    documents = {d.path: d for d in source.documents.filter(parent__isnull=True)}
    handover = take_over(source, inner, documents)
    # Files that failed or never finished have no indexed version, so every sync tries them again.
    # What could not be read this time (a file or folder without permission) is left as it is.
    known = {
        path: (d.sha256 if d.status == DocumentStatus.INDEXED else "")
        for path, d in documents.items()
        if d.status != DocumentStatus.DELETED and not found.unread(path)
    }
    if not found.files and not found.skipped and not allow_empty:
        held = sum(1 for path, d in documents.items() if d.status != DocumentStatus.DELETED)
        if held:
            raise DocqaError(f"{root} is empty, and matter {matter.slug!r} holds {held:,} document"
                             f"{'s' if held != 1 else ''} from it: is a share not mounted? Nothing was changed. "
                             "If the files were really all removed, an administrator's `manage.py ingest "
                             f"{shlex.quote(str(root))} --matter {matter.slug} --allow-empty` removes them")
    plan = plan_sync(found.files, known)
    unlabelled = relabels_left(source)
    services.require_broker()
    with transaction.atomic():
        run = IngestRun.objects.create(matter=matter, source=source, actor=actor, broker_epoch=services.broker_epoch(),
                                       took_over=handover.sources)
        work: list[IngestItem] = []
        handover.carry_out(source)
        # A file that failed before is tried again at every sync, told apart from a file whose
        # content changed: an encrypted PDF is not "changed" sync after sync. One an interrupted
        # run never finished (pending, never indexed: no text kept) is still new; one pending
        # after `reindex` is work to do as a changed file is.
        retried = [f for f in plan.changed if documents[f.path].status == DocumentStatus.FAILED]
        rest = [f for f in plan.changed if documents[f.path].status != DocumentStatus.FAILED]
        never_indexed = {path for path, d in documents.items() if not d.sha256 and d.text_id is None}
        unreached = [f for f in rest if f.path in never_indexed]
        changed = [f for f in rest if f.path not in never_indexed]
        for change, files in ((Change.NEW, plan.new + unreached), (Change.CHANGED, changed), (Change.RETRIED, retried)):
            for f in files:
                doc = documents.get(f.path) or Document(matter=matter, source=source, path=f.path)
                doc.kind, doc.size, doc.status = f.kind, f.size, DocumentStatus.PENDING
                doc.save()
                work.append(IngestItem.objects.create(run=run, document=doc, path=f.path, change=change))
        for f in plan.unchanged:
            # The same file, now under this folder (or so since a run that stopped before relabelling
            # its points): its points are relabelled.
            if f.path in handover.moved or documents[f.path].id in unlabelled:
                work.append(IngestItem.objects.create(run=run, document=documents[f.path], path=f.path,
                                                      change=Change.MOVED))
                continue
            IngestItem.objects.create(
                run=run, document=documents[f.path], path=f.path,
                change=Change.UNCHANGED, state=ItemState.UNCHANGED,
            )
        for doc, path in handover.duplicates:  # a second copy of a file this folder's own document holds
            work.append(IngestItem.objects.create(run=run, document=doc, path=path, change=Change.DELETED,
                                                  error=f"a second copy, synced from {doc.source.root} on its own"))
        # A document taken over that this sync plans nothing for (its file could not be read
        # this time) still changes hands: its points are relabelled all the same.
        planned = {i.path for i in work} | {f.path for f in plan.unchanged}
        for path in sorted(handover.moved - planned):
            if documents[path].status != DocumentStatus.DELETED:
                work.append(IngestItem.objects.create(run=run, document=documents[path], path=path,
                                                      change=Change.MOVED))
        for path in plan.deleted:
            work.append(IngestItem.objects.create(run=run, document=documents[path], path=path, change=Change.DELETED))
        for old_path, f in plan.moved:
            work.append(IngestItem.objects.create(run=run, document=documents[old_path], path=f.path, change=Change.MOVED))
        for skipped in found.skipped:
            IngestItem.objects.create(
                run=run, path=skipped.path, change=Change.SKIPPED, state=ItemState.SKIPPED, error=skipped.reason
            )
        started: dict[str, Any] = {"run": run.id, "root": str(root)}
        if handover.sources:
            started["took_over"] = handover.sources
        record_audit(actor, "ingest.start", matter, started)
        transaction.on_commit(lambda: enqueue_items(work))
    return run


def sources_inside(matter: Matter, root: Path) -> list[Source]:
    """The matter's other folders that lie inside `root` (not its uploads, which a sync never walks)."""
    data = settings.DATA_DIR.resolve()
    return [s for s in matter.sources.exclude(root=str(root)).order_by("root")
            if Path(s.root).is_relative_to(root) and not Path(s.root).is_relative_to(data)]


def synced_sources(matter: Matter) -> list[Source]:
    """The matter's folders, less those a folder around them took over (they hold nothing now,
    and syncing them again is refused: the folder around them brings them up to date).
    Each carries `held`: its documents not deleted (attachments among them)."""
    data = settings.DATA_DIR.resolve()
    sources = list(matter.sources.annotate(
        held=Count("documents", filter=~Q(documents__status=DocumentStatus.DELETED))).order_by("root"))
    return [s for s in sources if s.held or not any(
        o is not s and Path(s.root).is_relative_to(o.root) and not Path(s.root).is_relative_to(data) for o in sources)]


def relabels_left(source: Source) -> set[int]:
    """Documents of `source` whose points may still carry an old path: taken over from a folder
    inside it by a run that ended (cancelled, interrupted, failed) before relabelling them.
    A later relabel or re-index wrote the path they have."""
    unfinished = dict(IngestItem.objects.filter(document__source=source, change=Change.MOVED)
                      .exclude(state=ItemState.MOVED).order_by("id").values_list("document_id", "id"))
    if not unfinished:
        return set()
    done = IngestItem.objects.filter(document_id__in=unfinished, state__in=(ItemState.MOVED, ItemState.INDEXED))
    since = {doc for doc, item in done.values_list("document_id", "id") if item > unfinished[doc]}
    return set(unfinished) - since


@dataclass
class Handover:
    """What a folder takes over from the folders inside it that were synced on their own."""

    sources: list[dict[str, Any]]  # {"root", "documents", "duplicates"} for each folder taken over
    moved: set[str]  # paths (under the new folder) of documents that change hands
    duplicates: list[tuple[Document, str]]  # an inner folder's documents (and their paths from the new
    # folder) of files the new folder holds already: both were indexed, one copy goes
    superseded: list[int]  # the new folder's rows of deleted files that an inner folder's document replaces

    def carry_out(self, source: Source) -> None:
        """Move the documents (and their attachments) to `source` under their paths from it. The
        points keep their old paths until each document's `moved` item relabels them."""
        from django.db.models import F, Value
        from django.db.models.functions import Concat

        Document.objects.filter(id__in=self.superseded).delete()
        kept = [d.id for d, _ in self.duplicates]
        for taken in self.sources:
            inner = Source.objects.get(matter=source.matter, root=taken["root"])
            prefix = Path(taken["root"]).relative_to(source.root).as_posix() + "/"
            (inner.documents.exclude(id__in=kept).exclude(parent_id__in=kept)
             .update(source=source, path=Concat(Value(prefix), F("path"))))


def take_over(source: Source, inner: list[Source], documents: dict[str, Document]) -> Handover:
    """Plan how `source` takes over the documents of the folders inside it (synced before on their
    own), so that no file is indexed twice and none is parsed or embedded again. `documents`
    (source's own, by path) gains them under their new paths; nothing is written yet."""
    handover = Handover([], set(), [], [])
    for other in inner:
        prefix = Path(other.root).relative_to(source.root).as_posix() + "/"
        count = duplicates = 0
        for doc in other.documents.filter(parent__isnull=True).order_by("path"):
            path = prefix + doc.path
            mine = documents.get(path)
            if mine is not None and mine.status != DocumentStatus.DELETED:
                if doc.status != DocumentStatus.DELETED:
                    handover.duplicates.append((doc, path))
                    duplicates += 1
                continue
            if mine is not None:
                if doc.status == DocumentStatus.DELETED:
                    continue
                handover.superseded.append(mine.id)
            doc.source, doc.path = source, path
            documents[path] = doc
            handover.moved.add(path)
            count += doc.status != DocumentStatus.DELETED
        if count or duplicates:  # (one taken over before holds nothing now)
            handover.sources.append({"root": other.root, "documents": count, "duplicates": duplicates})
    return handover


def refuse_overlapping_run(source: Source, besides: IngestRun | None = None) -> None:
    """One run per folder at a time: two runs racing on one file could delete each other's points.

    A cancelled run counts while files it had already begun may still be in a worker's hands
    (they finish; a worker holds one at most the hard time limit)."""
    recent = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    runs = IngestRun.objects.filter(Q(status=RunStatus.RUNNING) | Q(status=RunStatus.CANCELLED, finished_at__gte=recent),
                                    source=source)
    for run in runs.exclude(id=besides.id if besides else None):
        left = run.items.exclude(state__in=FINAL_STATES).count()
        if left:
            raise DocqaError(f"run {run.id} on {source.root} is still in progress ({left} files left); wait for it")
        if run.status == RunStatus.RUNNING:
            do_finish_run(run)  # its waiter went away before closing it


def resend_lost_tasks(run: IngestRun) -> int:
    """Send the run's waiting items' tasks again if the broker restarted since they were sent.

    Redis keeps its queues in memory only; after a restart the run's queued tasks are gone while
    its items still say "queued". The database is the record of the work, so the tasks are sent
    again (a task whose item is already taken does nothing). Items left in progress longer than
    the hard time limit (their worker went down with the broker) are sent again too. The tasks
    are published first and the new epoch recorded after, so a failed publish is retried at the
    next check; of several waiters and workers only one records the epoch, and a duplicate send
    from another is harmless.
    """
    current = services.broker_epoch()
    if not current or current == run.broker_epoch:
        return resend_stranded_tasks(run)
    if settings.SPLIT_QUEUES:
        # Files parsed and waiting on the embed queue lost their task too: parse them again.
        run.items.filter(state=ItemState.EMBEDDING).update(state=ItemState.QUEUED)
    stale = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    in_progress = (ItemState.PARSING, ItemState.EMBEDDING)
    items = list(run.items.filter(Q(state=ItemState.QUEUED) | Q(state__in=in_progress, started_at__lt=stale)))
    enqueue_items(items)
    if IngestRun.objects.filter(id=run.id, broker_epoch=run.broker_epoch).update(broker_epoch=current):
        logger.warning("the broker restarted and lost run %s's queue; sent %d files again", run.id, len(items))
    run.refresh_from_db()
    return len(items)


def resend_stranded_tasks(run: IngestRun) -> int:
    """Send the tasks of the run's waiting items again when the broker holds none of them.

    kombu's Redis transport takes a message off the queue and only then notes it as delivered, so
    a worker killed in between (seen about once in fifteen kills of a worker taking a task every
    55 ms) loses that message and its item would wait forever. When docqa's queues are empty, no
    worker holds the item's task and nothing in the run started or finished for LOST_QUIET_S
    seconds, the task is gone: it is sent again (a duplicate would find its item taken and do
    nothing). Of several checkers finding it so at once, only one sends (services.claim_resend).
    """
    waiting = Q(state=ItemState.QUEUED)
    if settings.SPLIT_QUEUES:
        waiting |= Q(state=ItemState.EMBEDDING, started_at__isnull=True)  # waiting on the embed queue
    if not run.items.filter(waiting).exists():
        return 0
    holdings = services.broker_holdings()
    if holdings is None or not holdings.queues_empty:
        return 0
    quiet_since = timezone.now() - timedelta(seconds=LOST_QUIET_S)
    latest = run.items.aggregate(started=Max("started_at"), finished=Max("finished_at"))
    if run.started_at > quiet_since or any(t is not None and t > quiet_since for t in latest.values()):
        return 0
    items = list(run.items.filter(waiting).exclude(id__in=holdings.delivered))
    if not items or not services.claim_resend(run.id, LOST_QUIET_S):
        return 0  # nothing lost, or another checker is sending them this moment
    # Parsed files waiting on the embed queue are parsed again, as after a broker restart; one an
    # embed worker claimed meanwhile (it has a start time now) is left to it.
    waiting_embed = [i.id for i in items if i.state == ItemState.EMBEDDING]
    reset = {i for i in waiting_embed  # one conditional update each: a claim in between wins
             if run.items.filter(id=i, state=ItemState.EMBEDDING, started_at__isnull=True).update(state=ItemState.QUEUED)}
    items = [i for i in items if i.state == ItemState.QUEUED or i.id in reset]
    if not items:
        return 0
    enqueue_items(items)
    logger.warning("run %s: the broker held no task for %d waiting files (a worker killed as it took them?); "
                   "sent them again", run.id, len(items))
    return len(items)


def resend_all_lost_tasks() -> int:
    finish_completed_runs()
    return sum(resend_lost_tasks(run) for run in IngestRun.objects.filter(status=RunStatus.RUNNING))


NOT_QUEUED = "not queued: the task broker failed ({error}); a new sync, or `runs resume`, does it"


def enqueue_items(items: list[IngestItem]) -> None:
    """Send the items' tasks. Should the broker fail on the way (it was up a moment before), the
    items not sent are recorded as cancelled, saying why, so the run ends instead of waiting on
    tasks that do not exist, and the caller is told."""
    from kombu.exceptions import OperationalError

    from ingest import tasks

    by_change = {Change.DELETED: tasks.delete_document, Change.MOVED: tasks.move_document}
    for n, item in enumerate(items):
        try:
            by_change.get(Change(item.change), tasks.ingest_document).delay(item.id)
        except OperationalError as exc:
            left = IngestItem.objects.filter(id__in=[i.id for i in items[n:]], state=ItemState.QUEUED).update(
                state=ItemState.CANCELLED, error_class="broker", error=NOT_QUEUED.format(error=exc),
                finished_at=timezone.now())
            raise services.BrokerDown(
                f"the task broker at {services.shown_url(settings.CELERY_BROKER_URL)} failed while run "
                f"{item.run_id} was being queued ({exc}): {left:,} file{'s' if left != 1 else ''} not queued, "
                "recorded as cancelled; once the broker is back, a new sync or "
                f"`manage.py runs resume {item.run_id}` does the rest") from None


@dataclass
class RunStats:
    """Live figures of a run: the work (new, changed, deleted and moved files) and its pace."""

    work: int
    done: int  # finished: indexed, skipped or failed (not cancelled)
    failed: int
    pages: int
    chunks: int
    elapsed: float  # since the run started, or was last resumed
    cancelled: int = 0  # will not be done by this run (it was cancelled or interrupted)
    paced: int | None = None  # done since it was last resumed (None: never resumed)

    @property
    def rate(self) -> float:
        done = self.done if self.paced is None else self.paced
        return done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.work - self.done - self.cancelled) / self.rate if self.rate else None


WORK_CHANGES = (Change.NEW, Change.CHANGED, Change.RETRIED, Change.DELETED, Change.MOVED)


def run_stats(run: IngestRun) -> RunStats:
    return poll_run(run)[1]


def poll_run(run: IngestRun) -> tuple[tuple[int, ...], RunStats]:
    """One query: the run's live figures, and a signature that changes whenever an item moves
    (files left to finish first: zero when every item is final)."""
    work = Q(change__in=WORK_CHANGES)
    finished = work & Q(state__in=FINAL_STATES) & ~Q(state=ItemState.CANCELLED)
    since = run.resumed_at or run.started_at
    figures = run.items.aggregate(
        pending=Count("id", filter=~Q(state__in=FINAL_STATES)),
        active=Count("id", filter=Q(state__in=(ItemState.PARSING, ItemState.EMBEDDING))),
        work=Count("id", filter=work),
        done=Count("id", filter=finished),
        paced=Count("id", filter=finished & Q(finished_at__gte=since)),
        cancelled=Count("id", filter=work & Q(state=ItemState.CANCELLED)),
        failed=Count("id", filter=work & Q(state=ItemState.FAILED)),
        pages=Sum("pages", filter=work),
        chunks=Sum("chunks", filter=work),
        last=Max("finished_at", filter=work),
    )
    # Until the last file finished, not until now: a run read the next day did not slow down overnight.
    end = figures["last"] if not figures["pending"] and figures["last"] else timezone.now()
    elapsed = (end - since).total_seconds()
    stats = RunStats(figures["work"], figures["done"], figures["failed"], figures["pages"] or 0,
                     figures["chunks"] or 0, elapsed, figures["cancelled"],
                     figures["paced"] if run.resumed_at else None)
    return (figures["pending"], figures["active"], stats.done, stats.pages, stats.chunks), stats


def wait_for_run(run: IngestRun, *, timeout: float | None = None, on_progress: Any = None) -> IngestRun:
    """Block until every item of `run` is final, then finish it.

    Polls the database with one aggregate query, every 0.1 s at first and then less often, up
    to once a second: a long run's waiter must not take the CPU or the GIL from the workers (at
    20,000 items on SQLite the query takes ~30 ms, 3% of a core at once a second; the three
    queries it replaced took ~19 ms four times a second).
    """
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    last_change, warned = started, False
    last_signature: tuple[int, ...] = ()
    last_check = started
    while True:
        signature, stats = poll_run(run)
        if not signature[0]:
            break
        now = time.monotonic()
        if now - last_check > BROKER_CHECK_S:
            try:
                resend_lost_tasks(run)
            except Exception:  # the broker may still be coming back; the next check tries again
                logger.warning("could not resend run %s's tasks yet", run.id, exc_info=True)
            last_check = now
        if deadline is not None and now > deadline:
            raise TimeoutError(f"ingest run {run.id} did not finish within {timeout:.0f} s")
        if signature != last_signature:
            last_change, last_signature = now, signature
        elif not warned and now - last_change > STALL_WARNING_S and not settings.EMBEDDED_WORKER:
            logger.warning("%s", stall_message(run))
            warned = True
        if on_progress:
            on_progress(stats)
        time.sleep(min(1.0, 0.1 + (now - started) / 20))
    return do_finish_run(run)


def stall_message(run: IngestRun) -> str:
    """What a run that has not moved for STALL_WARNING_S is waiting on, and what to do."""
    held = list(run.items.filter(state__in=(ItemState.PARSING, ItemState.EMBEDDING)).values_list("path", flat=True)[:4])
    quiet = f"run {run.id} has not moved for {STALL_WARNING_S} s"
    if held:
        names = ", ".join(held[:3]) + (" and more" if len(held) > 3 else "")
        visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 0)
        return (f"{quiet}: {names} {'is' if len(held) == 1 else 'are'} in a worker's hands: a large file, or a worker "
                f"that died, whose task the broker gives back after its visibility timeout ({visibility:,} s); "
                f"`manage.py runs resume {run.id}` queues it again now")
    queues = f" -Q celery,{settings.EMBED_QUEUE}" if settings.SPLIT_QUEUES else ""
    return f"{quiet} and no worker has taken its files: is one running? (celery -A docqa worker{queues})"


def build_vector_index(after: IngestRun | None = None) -> float:
    """Embedded default: index the vectors that runs wrote (see EdgeStore.optimize); seconds spent.

    Called where nothing else waits on this process: after `ingest`, `runs retry|resume` and
    `eval` have synced (`after`: only when that run indexed a file), and before `serve` listens.
    A Qdrant server indexes by itself.
    """
    if settings.QDRANT_URL or (after is not None and not after.counts.get("indexed")):
        return 0.0
    started = time.monotonic()
    services.get_store().optimize()
    spent = time.monotonic() - started
    if spent > 1:
        logger.info("vector index built in %.1f s", spent, extra={"event": "store.optimize", "seconds": round(spent, 1)})
    return spent


def finish_completed_runs(runs: Any = None) -> int:
    """Close running runs whose every file is done (runs started from the web have no waiter),
    and count a cancelled run again once the files it had in hand when cancelled are done."""
    closed = 0
    for run in (runs if runs is not None else IngestRun.objects.filter(status=RunStatus.RUNNING)):
        if run.status == RunStatus.RUNNING and not run.items.exclude(state__in=FINAL_STATES).exists():
            do_finish_run(run)
            closed += 1
        elif run.status == RunStatus.CANCELLED and sum(run.counts.get(k, 0) for k in OUTCOMES) < run.items.filter(
                state__in=OUTCOMES).count():
            do_finish_run(run)  # counts what the files in hand when it was cancelled came to
    return closed


OUTCOMES = (ItemState.INDEXED, ItemState.SKIPPED, ItemState.FAILED, ItemState.CANCELLED)


def do_finish_run(run: IngestRun) -> IngestRun:
    """Close the run (once) with its counts, and audit it."""
    items = run.items.all()
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for change, state in items.values_list("change", "state"):
        if change in (Change.NEW, Change.CHANGED, Change.RETRIED, Change.UNCHANGED, Change.DELETED, Change.MOVED):
            counts[change] += 1
        if state in OUTCOMES:
            counts[state] += 1
    claimed = IngestRun.objects.filter(id=run.id, status=RunStatus.RUNNING).update(
        status=RunStatus.FINISHED, finished_at=timezone.now(), counts=counts
    )
    IngestRun.objects.filter(id=run.id, status=RunStatus.CANCELLED).update(counts=counts)
    run.refresh_from_db()
    if claimed:
        failures = [{"path": p, "error": e} for p, e in items.filter(state=ItemState.FAILED).values_list("path", "error")]
        record_audit(run.actor, "ingest.finish", run.matter, {"run": run.id, "counts": counts, "failures": failures})
        logger.info("ingest run finished", extra={"event": "ingest.finish", "run": run.id, "matter": run.matter_id,
                                                  **{f"files_{k}": v for k, v in counts.items()}})
    return run


def do_cancel_run(run: IngestRun, actor: str) -> int:
    """Stop a run: queued items are cancelled (their tasks will find nothing to claim); files
    already being processed finish. Returns how many items were cancelled."""
    with transaction.atomic():
        if not IngestRun.objects.filter(id=run.id, status=RunStatus.RUNNING).update(
                status=RunStatus.CANCELLED, finished_at=timezone.now()):
            run.refresh_from_db(fields=["status"])
            raise DocqaError(f"run {run.id} is {run.status}, not running: there is nothing to cancel")
        cancelled = run.items.filter(state=ItemState.QUEUED).update(state=ItemState.CANCELLED)
    record_audit(actor, "ingest.cancel", run.matter, {"run": run.id, "cancelled": cancelled})
    do_finish_run(run)  # its counts so far; files in hand finish and are counted as they end
    return cancelled


INTERRUPTED_FILE = "interrupted: docqa stopped before this file was done; a new sync or `runs resume` does it"


def close_interrupted_runs(actor: str = "docqa") -> list[tuple[IngestRun, int]]:
    """Close the runs that can no longer go on, with (run, files left) for each.

    The embedded default keeps its task queue in the memory of the process that started the
    run, so once that process has stopped (Ctrl-C, `--timeout`, a crash) a run still "running"
    has no worker and never will. Only the process holding var/'s lock calls this, when its own
    worker is not running, so no one else is working on any of them. Unfinished files are
    recorded as cancelled, saying why, and the run as cancelled; one with nothing left is
    finished as usual. A new sync of the folder, or `runs resume`, does the rest.
    """
    closed = []
    for run in IngestRun.objects.filter(status=RunStatus.RUNNING).select_related("matter", "source"):
        with transaction.atomic():
            left = run.items.exclude(state__in=FINAL_STATES).update(
                state=ItemState.CANCELLED, error_class="interrupted", error=INTERRUPTED_FILE,
                finished_at=timezone.now(),
            )
            if left:
                IngestRun.objects.filter(id=run.id).update(status=RunStatus.CANCELLED, finished_at=timezone.now())
                record_audit(actor, "ingest.interrupted", run.matter, {"run": run.id, "cancelled": left})
        closed.append((do_finish_run(run), left))  # its counts; a run with nothing left finishes
    return closed


def log_interrupted_runs(closed: list[tuple[IngestRun, int]]) -> None:
    for run, left in closed:
        if left:
            logger.warning("ingest run %s on %s was interrupted with %s left: recorded as cancelled "
                           "(a new sync or `manage.py runs resume %s` does the rest)",
                           run.id, run.source.root, f"{left:,} file{'s' if left != 1 else ''}", run.id)


NOTHING_TO_REQUEUE = {
    "ingest.resume": "run {run} has nothing left to resume: every file in it was finished",
    "ingest.retry": "run {run} has no failed files to retry",
}


def do_requeue(run: IngestRun, actor: str, states: tuple[str, ...], action: str) -> int:
    """Queue the run's items in `states` again and reopen the run. Work is idempotent, so an item
    that was in fact still being processed is harmlessly done twice. Only the folder's latest run
    can be taken up again: an older one's work (a deletion, say) may undo what a later run did."""
    newer = IngestRun.objects.filter(source=run.source, id__gt=run.id).order_by("id").first()
    if newer is not None:
        raise DocqaError(f"run {newer.id} has synced {run.source.root} since run {run.id}; start a new sync instead")
    refuse_overlapping_run(run.source, besides=run)
    services.require_broker()
    with transaction.atomic():
        items = list(run.items.filter(state__in=states))
        if items:
            run.items.filter(id__in=[i.id for i in items]).update(state=ItemState.QUEUED, error="", error_class="")
            IngestRun.objects.filter(id=run.id).update(
                status=RunStatus.RUNNING, finished_at=None, broker_epoch=services.broker_epoch(),
                resumed_at=timezone.now(),
            )
            record_audit(actor, action, run.matter, {"run": run.id, "items": len(items)})
            transaction.on_commit(lambda: enqueue_items(items))
    if not items:
        if action == "ingest.resume" and run.status == RunStatus.RUNNING:
            do_finish_run(run)  # a crashed run whose files had all finished: closed, not left "running"
        raise DocqaError(NOTHING_TO_REQUEUE[action].format(run=run.id))
    run.refresh_from_db()
    return len(items)


def do_resume_run(run: IngestRun, actor: str) -> int:
    """Pick up a cancelled or crashed run: everything not finished is queued again. A run still
    running whose files moved within STALL_WARNING_S is refused: its workers are at it, and
    queueing its files again would have each done twice."""
    unfinished = (ItemState.QUEUED, ItemState.PARSING, ItemState.EMBEDDING, ItemState.CANCELLED)
    if IngestRun.objects.filter(id=run.id, status=RunStatus.RUNNING).exists():
        times = run.items.aggregate(started=Max("started_at"), finished=Max("finished_at"))  # (Greatest is NULL
        moved = max((t for t in times.values() if t is not None), default=None)  # with a NULL on SQLite)
        quiet = (timezone.now() - moved).total_seconds() if moved else None
        if quiet is not None and quiet < STALL_WARNING_S:
            raise DocqaError(f"run {run.id} is running: a file moved {quiet:.0f} s ago, so its workers are at it. "
                             f"Resume a run that stopped (no progress for {STALL_WARNING_S} s), or cancel it first")
    return do_requeue(run, actor, unfinished, "ingest.resume")


def do_retry_failed(run: IngestRun, actor: str) -> int:
    return do_requeue(run, actor, (ItemState.FAILED,), "ingest.retry")


def failures_csv(run: IngestRun) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "state", "error_class", "error", "attempts", "finished_at"])
    for item in run.items.filter(state__in=(ItemState.FAILED, ItemState.SKIPPED)).order_by("path"):
        writer.writerow([item.path, item.state, item.error_class, item.error, item.attempts,
                         item.finished_at.isoformat() if item.finished_at else ""])
    return out.getvalue()


def run_report(run: IngestRun) -> dict[str, Any]:
    failed = run.items.filter(state=ItemState.FAILED).order_by("path").values_list("path", "error", "error_class")
    skipped = run.items.filter(state=ItemState.SKIPPED).order_by("path").values_list("path", "error")
    return {
        "run": run.id,
        "counts": run.counts_in_order,
        "failures": [{"path": path, "error": error, "error_class": kind} for path, error, kind in failed],
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        "took_over": run.took_over,
    }


def took_over_text(run: IngestRun) -> list[str]:
    """One line per folder this run took over, for people."""
    lines = []
    for t in run.took_over:
        line = f"took over {t['root']}, synced before on its own: its {t['documents']:,} document"
        line += f"{'s are' if t['documents'] != 1 else ' is'} this folder's now, moved, not indexed again"
        if t["duplicates"]:
            line += (f"; {t['duplicates']:,} second cop{'ies' if t['duplicates'] != 1 else 'y'} of files this "
                     "folder held already removed")
        lines.append(line)
    return lines


# --- Questions ---------------------------------------------------------------------------------


@dataclass
class AskOutcome:
    question: Question
    result: AnswerResult | None
    error: str = ""


def reserved_output(effort: str) -> int:
    """Completion tokens kept for reasoning + answer: more reasoning at higher effort."""
    return {"low": settings.LLM_RESERVED_OUTPUT // 2, "high": settings.LLM_RESERVED_OUTPUT * 2}.get(
        effort, settings.LLM_RESERVED_OUTPUT
    )


def default_budget(effort: str = "medium", stop: StopSignal | None = None) -> int:
    """The prompt tokens the served model's window leaves at `effort` (search-only's budget
    without a model). Setting `stop` gives up waiting for the server (Cancelled)."""
    llm = get_llm()
    if llm is None:
        return settings.SEARCH_ONLY_BUDGET
    return llm.max_model_len(stop) - reserved_output(effort)


HISTORY_TURNS = 6  # earlier questions and answers sent with a follow-up
MIN_BUDGET = 512  # below this the instructions and the question leave no room for any source
MAX_BUDGET = 1_000_000  # search-only mode has no model window to cap a budget


NO_ANSWER = "(No answer was given to this question.)"


def conversation_history(conversation: Conversation | None) -> list[tuple[str, str]]:
    """The conversation's earlier turns for the model, oldest first: each question with the
    model's answer, or with NO_ANSWER when it failed, was stopped or was answered by search
    alone, so that a follow-up ("and can it be extended?") still has what "it" refers to."""
    return [(text, answer) for _, text, answer in conversation_turns(conversation)]


def conversation_turns(conversation: Conversation | None) -> list[tuple[int, str, str]]:
    """conversation_history with each turn's question id."""
    if conversation is None:
        return []
    turns = (Question.objects.filter(conversation=conversation, expired_at__isnull=True)
             .order_by("-id").values_list("id", "text", "answer__mode", "answer__text")[:HISTORY_TURNS])
    return [(id_, text, answer_as_sent(mode, answer)) for id_, text, mode, answer in reversed(list(turns))]


def answer_as_sent(mode: str | None, text: str | None) -> str:
    """An earlier answer as a follow-up sends it to the model: the model's own, else NO_ANSWER."""
    return text if mode == "llm" and text else NO_ANSWER


def turns_sent(ids: list[int | None], history: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The earlier turns that went with a question, for its answer's audit record: each one's
    question id (None when the client sent the turn) and the sha256 of its question and of its
    answer as sent, so a replay can prove them against what is stored."""
    return [{"question": id_, "question_sha256": sha256_text(q), "answer_sha256": sha256_text(a)}
            for id_, (q, a) in zip(ids, history, strict=True)]


def previous_question(conversation: Conversation | None, text: str = "") -> str | None:
    """The question asked before in the conversation, whatever became of it (answered by the
    model or by search alone, or failed: "it" in the follow-up still means what it asked about).
    A follow-up is searched together with it. The same question asked again (after a failure,
    say) is passed over, so it is not searched together with itself; "" when none is left."""
    if conversation is None:
        return None
    earlier = (Question.objects.filter(conversation=conversation, expired_at__isnull=True)
               .order_by("-id").values_list("text", flat=True)[:HISTORY_TURNS * 2])
    return next((q for q in earlier if q.strip() != text.strip()), "")


def do_ask(
    matter: Matter,
    text: str,
    *,
    actor: str,
    user: Any = None,
    budget: int | None = None,
    effort: str = "medium",
    on_event: Any = lambda kind, data: None,
    conversation: Conversation | None = None,
    scope: list[str] | None = None,
    history: list[tuple[str, str]] | None = None,
    watch: StopWatch | None = None,
) -> AskOutcome:
    """Answer `text` from `matter` only, and record question, answer, citations and audit.

    With a `conversation` of the same matter, its earlier answers go to the model as context;
    without one a new conversation starts. Every event passes `watch` (by default one that
    looks for `do_stop`), which stops the answer when asked: it is then recorded as it stood.
    """
    watch = watch or StopWatch()

    def emit(kind: str, data: Any) -> None:
        watch.check(kind, data)  # raises Stopped when it is time to stop
        on_event(kind, data)

    if conversation is not None and conversation.matter_id != matter.id:
        raise DocqaError("that conversation belongs to another matter")
    if budget is not None and not MIN_BUDGET <= budget <= MAX_BUDGET:
        raise DocqaError(f"a budget of {budget:,} tokens is out of range: give {MIN_BUDGET:,} to {MAX_BUDGET:,}, "
                         "or none for the model's window")
    asked = budget
    documents = scope_documents(matter, scope) if scope else None
    llm = get_llm()
    # Until the model's window is known: the budget asked for, else search-only's (also what the
    # passages found are packed at when the model fails before it is asked).
    used = asked or settings.SEARCH_ONLY_BUDGET
    # Earlier turns: the conversation's, or as a client sent them (the OpenAI-compatible endpoint);
    # those a client sent go into the trail too, as content (retention expires them with the rest).
    sent_history = history
    # The conversation's own earlier question, when the client did not send the turns itself
    # (a search-only turn has no answer for the model, but the follow-up still needs its words).
    previous = previous_question(conversation, text) if history is None else None
    if history is None:
        turns = conversation_turns(conversation)
        history = [(q, a) for _, q, a in turns]
        ids: list[int | None] = [id_ for id_, _, _ in turns]
    else:
        ids = [None] * len(history)
    earlier = list(history)  # cut below to those that fit beside the sources
    if conversation is None:
        conversation = Conversation.objects.create(matter=matter, user=user, actor=actor)
    # Recorded before the model server is first contacted, so a server that hangs can be stopped
    # (and the question is listed as pending) while it is waited for. The trail holds the budget
    # asked for (None: the model's window); the row holds it too until the window is known, then
    # the budget used, which the answer's record holds (None: stopped before the window was known).
    question = Question.objects.create(matter=matter, user=user, actor=actor, text=text, effort=effort,
                                       budget=used if llm is None else asked, conversation=conversation,
                                       scope=list(scope) if scope and documents else [])
    record_audit(actor, "question.ask", matter, {"question": question.id, "conversation": conversation.id,
                                                 "text": text, "effort": effort, "budget": asked,
                                                 **({"scope": scope, "documents": len(documents)} if documents else {}),
                                                 **({"history": [{"text": q, "answer": a} for q, a in sent_history]}
                                                    if sent_history else {})})
    notes: list[str] = []
    sent_turns: list[dict[str, Any]] = []
    started = time.monotonic()
    sent: list[Packing] = []  # what the model is sent, should it then fail

    def answer(model: VllmClient | None, on_event: Any = emit) -> AnswerResult:
        return answer_question(
            text, matter_ids=[matter.id], embedder=services.get_embedder(), store=services.get_store(),
            llm=model, budget=used, effort=effort,
            max_completion_tokens=reserved_output(effort), on_event=on_event, retrieval=settings.RETRIEVAL,
            history=earlier, previous=previous, reranker=get_reranker(), documents=documents,
            # Prefix-cache entries are kept apart per matter, so one matter's cached
            # sources can never shorten (and so reveal) another's prompt timing.
            cache_salt=f"matter-{matter.id}", on_packed=sent.append, stop=watch.signal,
            shown_paths=lambda hits: name_hits(matter, hits),
        )

    failure: DocqaError | None = None
    try:
        # The first event that names the question: the asker can stop it from here on.
        emit("asked", {"question": question.id, "conversation": conversation.id,
                       "asked_at": DjangoJSONEncoder().default(question.created_at)})  # as the REST API writes it
        if llm is not None:
            emit("status", "contacting the language model")  # a server that hangs is not "sending" for minutes
            watch.listen()  # a stop asked for while the server is waited for is seen at once
        try:
            # Asks the model for its window: the first contact with the server.
            ceiling = default_budget(effort, watch.signal)
        except Cancelled as exc:  # the asker stopped the wait
            raise Stopped(str(exc)) from exc
        except DocqaError as exc:  # down, not ready, or refusing the key or model: recorded below, then raised
            if isinstance(exc, LlmTimeout):  # no answer to the first contact: told as a server not available
                exc.kind = "unavailable"  # (a lower effort or a narrower question cannot help)
            failure = exc
        else:
            if llm and ceiling < MIN_BUDGET:
                window, reserved = ceiling + reserved_output(effort), reserved_output(effort)
                left = (f"leaves only {ceiling:,} tokens for the prompt" if ceiling > 0 else
                        "is used up by it" if ceiling == 0 else f"is {-ceiling:,} tokens too small for it")
                failure = LlmMisconfigured(
                    f"the model's window ({window:,} tokens) {left} once {reserved:,} are reserved for the output at "
                    f"{effort} effort (at least {MIN_BUDGET:,} are needed): lower DOCQA_LLM_RESERVED_OUTPUT or the effort")
            elif llm:
                used = min(asked or ceiling, ceiling)
                set_budget(question, used)
        if failure is not None:
            set_budget(question, used)  # the passages found are shown, packed at this budget
        if asked is not None and used < asked:
            notes.append(f"A budget of {asked:,} tokens is more than the model's window leaves for the prompt at "
                         f"{effort} effort; {used:,} was used.")
        # Those earlier turns that fit beside the sources, exactly as they go to the model (and into the trail).
        earlier = fitting_history(earlier, used, text)
        sent_turns = turns_sent(ids[len(ids) - len(earlier):], earlier)
        if failure is not None:
            raise failure
        result = answer(llm)
    except Stopped as stop:  # the asker's choice, not a failure: recorded as it stood, and returned
        if stop.result is None and watch.generating and watch.delivered and sent and llm is not None:
            # Between the model's attempts (the retry at low effort): it was sent the passages. (Stopped
            # between the "generating" step and the request, nothing was sent: told as stopped early.)
            stop.result = stopped_as_sent(sent[-1], llm.model, used, stopped_note(str(stop), False))
        result = stop.result or stopped_early(stop, sent[-1] if sent else None, question.budget)
        result.notes += notes
        record_answer(question, result, started, was_sent=stop.result is not None, turns=sent_turns)
        return AskOutcome(question, result)
    except Exception as exc:  # recorded and audited, then re-raised for the caller to show
        # The passages were sent unless no connection to the model server was ever made (an
        # auditor must not read "not sent" where they may have left).
        found = None
        # An earlier attempt that was answered (the retry at low effort) was sent them too.
        was_sent = bool(sent) and llm is not None and (getattr(exc, "delivered", True) or watch.delivered)
        if isinstance(exc, LlmError) or exc is failure:
            # The model failed, not the search: the passages are kept and shown without an answer,
            # as sent, or (never sent) best first, as in search-only mode.
            found = kept_passages(sent[-1], used, llm.model if llm and was_sent else "") if sent \
                else search_without_model(answer)
            if found is not None:
                found.notes += notes
        record_answer(question, None, started, error=recorded_error(exc), error_kind=kind_of(exc), found=found,
                      was_sent=was_sent, turns=sent_turns)
        with contextlib.suppress(AttributeError):  # any error: the page then shows the recorded turn
            exc.question, exc.conversation = question.id, conversation.id  # type: ignore[attr-defined]
        raise
    except BaseException:  # Ctrl-C on `ask`, a worker shut down: recorded as stopped, never left pending
        if watch.generating and sent and llm is not None:  # the model may have been sent the passages
            kept = stopped_as_sent(sent[-1], llm.model, used,
                                   f"{INTERRUPTED} while the model was answering: nothing it wrote was kept.")
        else:
            kept = stopped_early(Stopped(INTERRUPTED), sent[-1] if sent else None, question.budget)
        with contextlib.suppress(Exception):  # on the way out: the interruption is what is raised
            record_answer(question, kept, started, was_sent=kept.model != "", turns=sent_turns)
        raise
    finally:
        watch.close()  # its polling thread ends
    result.notes += notes
    record_answer(question, result, started, turns=sent_turns)
    return AskOutcome(question, result)


NOT_REACHED_NOTE = (
    "The model could not be asked, so there is no answer: the passages found for the question are listed "
    "with it, best first; they were not sent to it. No answer or citation was drawn from them."
)
NOT_ANSWERED_NOTE = (
    "The model gave no answer that could be kept, so the passages it was sent are listed with the question, in "
    "the order it was sent them. No answer or citation was drawn from them."
)
LATE_STOP_NOTE = "Stop was pressed as the answer was being finished: it is kept whole."


def stopped_as_sent(packing: Packing, model: str, budget: int, note: str) -> AnswerResult:
    """A question stopped with nothing of its answer kept, once `model` may have been sent the passages."""
    return AnswerResult("stopped", "", packing, model=model, notes=[note],
                        usage={"budget": budget, "source_tokens": packing.tokens})


def set_budget(question: Question, budget: int) -> None:
    if question.budget != budget:
        question.budget = budget
        Question.objects.filter(id=question.id).update(budget=budget)


def stopped_early(stop: Stopped, packing: Packing | None, budget: int | None) -> AnswerResult:
    """A question stopped before the model was sent anything: the passages packed by then, if any,
    best first and marked as not sent. `budget` is None when it was stopped before the model's
    window was known (nothing was packed)."""
    packing = packing or Packing([], [], 0, budget or 0)
    best_first(packing.sources)
    return AnswerResult("stopped", "", packing, notes=[f"{stop} before the model was asked: nothing was sent to it."],
                        usage={"budget": budget, "source_tokens": packing.tokens})


def do_stop(question: Question, actor: str) -> bool:
    """Ask for `question`'s answer to stop (the Stop button, the API's stop call): the thread
    answering it, in whichever web process, sees the request at its next step of the search, or
    within STOP_POLL_S once the model is asked (writing, or still reading the prompt), and hangs
    up on the model. False when it has already been answered or stopped. The question's row is
    locked, as record_answer locks it, so a stop is either asked for before the answer is
    recorded (which then says so) or refused after."""
    with transaction.atomic():
        locked = Question.objects.select_for_update().filter(id=question.id, stop_requested_at__isnull=True).first()
        if locked is None or Answer.objects.filter(question_id=question.id).exists():
            return False
        Question.objects.filter(id=question.id).update(stop_requested_at=timezone.now())
        record_audit(actor, "question.stop", question.matter, {"question": question.id,
                                                               "conversation": question.conversation_id})
    return True


STOP_POLL_S = 0.5  # how often an answering thread looks for a stop request while the model writes
CLIENT_LEFT = "Stopped because the client left (the page was closed or the connection was lost)"
ASKER_STOPPED = "Stopped by the asker"
INTERRUPTED = "Stopped because docqa was interrupted (the command was cancelled, or the process shut down)"


class StopWatch:
    """Tells an answering thread when to stop: its client left (`leave`, the same process), or
    the asker asked for it (`do_stop`, any process). The database is looked at at each step of
    the search and, once the model is asked, every STOP_POLL_S by the process's one watcher
    (STOP_WATCHER), which hangs up on the model through `signal` even while it is still reading
    the prompt."""

    def __init__(self) -> None:
        self.signal = StopSignal()
        self.question: int | None = None
        self.generating = False  # the model has been asked (it may have been sent the passages)
        self.delivered = False  # the model has answered something (so it was sent the prompt)
        self.listening = False  # the process's watcher looks for a stop for this question

    def leave(self) -> None:
        self.signal.set(CLIENT_LEFT)

    def check(self, kind: str, data: Any) -> None:
        """Called with every event of the answer: raises Stopped when it is time to stop."""
        if kind == "asked":  # the question is recorded: from now on it can be stopped
            self.question = data["question"]
        if kind in ("reasoning", "content", "finish", "usage"):
            self.delivered = True
        if kind in ("finish", "usage") or self.question is None:
            return  # the answer is whole by then; before the question is recorded there is nothing to stop
        if kind == "status" and not self.signal.is_set() and stop_requested([self.question]):
            self.signal.set(ASKER_STOPPED)
        if self.signal.is_set():
            raise Stopped(self.signal.reason)
        if kind == "status" and data == "generating" and not self.generating:
            self.generating = True  # from here on the request may reach the model
            self.listen()

    def listen(self) -> None:
        """Have the process's watcher set `signal` when a stop is asked for (while the model
        server is waited for, and no event comes to look)."""
        if not self.listening and self.question is not None:
            self.listening = True
            STOP_WATCHER.watch(self.question, self.signal)

    def close(self) -> None:
        if self.listening and self.question is not None:
            STOP_WATCHER.forget(self.question)


def stop_requested(ids: list[int]) -> set[int]:
    return set(Question.objects.filter(id__in=ids, stop_requested_at__isnull=False).values_list("id", flat=True))


class StopWatcher:
    """One thread per process looks, every STOP_POLL_S and in one query, for stops requested for
    the questions whose model is being asked here, and sets their signals: one database
    connection for all of them, held only while there is something to watch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watched: dict[int, StopSignal] = {}
        self.running = False

    def watch(self, question: int, signal: StopSignal) -> None:
        with self.lock:
            self.watched[question] = signal
            if not self.running:
                self.running = True
                threading.Thread(target=self.run, name="docqa-stop-watcher", daemon=True).start()

    def forget(self, question: int) -> None:
        with self.lock:
            self.watched.pop(question, None)

    def run(self) -> None:
        try:
            while True:
                time.sleep(STOP_POLL_S)
                with self.lock:
                    if not self.watched:
                        self.running = False
                        return
                    watched = dict(self.watched)
                try:
                    for question in stop_requested(list(watched)):
                        watched[question].set(ASKER_STOPPED)
                except DatabaseError:  # a dropped connection or a failover: tried again at the next look
                    logger.warning("could not look for stop requests", exc_info=True)
                    connections.close_all()
        finally:
            connections.close_all()  # this thread's own


STOP_WATCHER = StopWatcher()


def kept_passages(packing: Packing, budget: int, model: str) -> AnswerResult:
    """The passages packed for a request the model failed: as sent when `model` names the model
    they went to, else (never sent) best first."""
    if not model:
        best_first(packing.sources)
    return AnswerResult("error", "", packing, model=model, notes=[NOT_ANSWERED_NOTE if model else NOT_REACHED_NOTE],
                        usage={"budget": budget, "source_tokens": packing.tokens})


def search_without_model(answer: Callable[..., AnswerResult]) -> AnswerResult | None:
    """The passages found for a question whose model failed before the search; None when the
    search fails too."""
    try:
        found = answer(None, on_event=lambda kind, data: None)
    except Exception:  # nothing to show beyond the model's own failure, which is what is reported
        logger.warning("no passages to show for a question the model failed", exc_info=True)
        return None
    found.answer = ""
    found.notes = [NOT_REACHED_NOTE]
    return found


def name_hits(matter: Matter, hits: list[Any]) -> None:
    """Each hit's path as its document is shown (`shown_path`): after its folder's name when the
    matter has several folders, so that two files of the same name are two sources to the model,
    to the citations and to the reader. One query, for the documents found only."""
    names = matter.folder_names()
    if not names:
        return
    sources = dict(Document.objects.filter(matter=matter, id__in={h.payload.get("document") for h in hits})
                   .values_list("id", "source_id"))
    renamed: set[int] = set()  # a payload two hits share is renamed once
    for hit in hits:
        source = sources.get(hit.payload.get("document"))
        if source is not None and id(hit.payload) not in renamed:
            renamed.add(id(hit.payload))
            hit.payload["path"] = shown_path(names, source, str(hit.payload.get("path", "")))


def scope_documents(matter: Matter, scope: list[str]) -> list[int]:
    """The matter's indexed documents under the given folders or at the given paths; with several
    folders, a path may start with its folder's name ("uploads/contract.pdf", or "uploads" for all)."""
    names = matter.folder_names()
    wanted = Q()
    # As given, and without spaces around it: a folder's name may start or end with one.
    for shown in dict.fromkeys(given for p in scope for given in (p, p.strip())):
        source, prefix = split_shown(names, shown)
        if source is not None:
            wanted |= Q(source_id=source) & (Q(path=prefix) | path_starts(prefix + "/") if prefix else Q())
        elif prefix:
            wanted |= Q(path=prefix) | path_starts(prefix + "/")
    ids = list(Document.objects.filter(wanted, matter=matter, status=DocumentStatus.INDEXED).values_list("id", flat=True))
    if not ids:
        raise DocqaError(f"no indexed document in {matter.slug} is under {', '.join(scope)}")
    return ids


def cited_source(source: Any, span: tuple[int, int] | None = None) -> dict[str, Any]:
    """Where a citation points: its verified quote's own characters and page in the document's
    text when there is one, else the whole passage that was sent."""
    if source is None:  # a marker naming no source that was sent
        return {}
    start, end, page, section = source.start, source.end, source.page, source.section
    if span is not None and len(source.text) == source.end - source.start:  # the passage is text[start:end]
        start, end = source.start + span[0], source.start + span[1]
        # The page and section of the chunk the quote opens in (chunks keep theirs; a passage,
        # or a document sent whole, knows its first only).
        opening = next((p for p in reversed(source.parts) if int(p["start"]) <= start), None)
        if opening is not None:
            page = opening.get("page") or page
            section = opening.get("section") or section
    return {"document_id": source.document_id, "version": source.version, "path": source.path, "page": page,
            "section": section or "", "start": start, "end": end}


def quote_sections(cited: list[dict[str, Any]], citations: list[Any]) -> None:
    """Give each verified quote the section heading in force where the quote itself starts, read
    from its document's layout: a chunk knows only the heading it opens under, and the quote may
    stand past the next one ("5. Termination" half-way down a chunk that opened in "4. Limitation
    of Liability"). Left as the chunk's when the layout is not that version's."""
    from ingest.parse import ParsedDocument

    wanted = {(w["document_id"], w["version"]) for w, c in zip(cited, citations, strict=True) if c.span and w}
    layouts: dict[tuple[Any, Any], ParsedDocument] = {}
    for doc_id, version, layout in Document.objects.filter(id__in={d for d, _ in wanted}).values_list(
            "id", "text__sha256", "text__layout"):
        if (doc_id, version) in wanted and layout and layout.get("sections"):
            layouts[doc_id, version] = ParsedDocument.from_layout("", "", layout)
    for where, citation in zip(cited, citations, strict=True):
        parsed = layouts.get((where.get("document_id"), where.get("version"))) if citation.span else None
        if parsed is not None:
            where["section"] = parsed.section_at(where["start"])


def record_answer(question: Question, result: AnswerResult | None, started: float, error: str = "",
                  found: AnswerResult | None = None, was_sent: bool = False,
                  turns: list[dict[str, Any]] | None = None, error_kind: str = "") -> None:
    """Store the answer, or the `error` (of `error_kind`, docqa.faults) with the passages `found`
    in its place (`was_sent`: the model was sent them before it failed), and audit it with the
    earlier `turns` sent (turns_sent)."""
    shown = result or found
    with transaction.atomic():
        # Locked as do_stop locks it: a stop asked for now, too late to cut the answer, is told.
        late_stop = Question.objects.select_for_update().filter(id=question.id).values_list(
            "stop_requested_at", flat=True).first()
        if late_stop and shown is not None and shown.mode in ("llm", "search"):
            shown.notes.append(LATE_STOP_NOTE)
        answer = Answer.objects.create(
            question=question,
            mode=result.mode if result else "error",
            text=result.answer if result else "",
            model=shown.model if shown else "",
            sources=[s.as_dict() for s in shown.packing.sources] if shown else [],
            dropped=shown.packing.dropped if shown else [],
            usage=shown.usage if shown else {},
            error=error,
            error_kind=error_kind if error else "",
            latency_ms=int((time.monotonic() - started) * 1000),
            reasoning=result.reasoning if result and settings.STORE_REASONING else "",
            notes=list(shown.notes) if shown else [],
        )
        citations = result.citations if result else []
        sent = {s.label: s for s in result.packing.sources} if result else {}
        cited = [cited_source(sent.get(c.label), c.span) for c in citations]
        quote_sections(cited, citations)
        Citation.objects.bulk_create(
            Citation(answer=answer, label=c.label, quote=c.quote, status=c.status, verified=c.verified, reason=c.reason,
                     **where)
            for c, where in zip(citations, cited, strict=True)
        )
        if error:  # an operator sees why, not only that a request failed
            logger.warning("question %s in %s failed: %s", question.id, question.matter.slug, error,
                           extra={"event": "question.failed", "question": question.id})
        logger.info("question answered", extra={
            "event": "question.answer", "question": question.id, "matter": question.matter_id, "mode": answer.mode,
            "latency_ms": answer.latency_ms, "prompt_tokens": answer.usage.get("prompt_tokens"),
            "cached_tokens": answer.usage.get("cached_tokens"), "sources": len(answer.sources), "failed": bool(error)})
        record_audit(
            question.actor, "question.answer", question.matter,
            {
                "question": question.id,
                "conversation": question.conversation_id,
                "text": question.text,
                "mode": answer.mode,
                "error": error,
                **({"error_kind": answer.error_kind} if error else {}),
                "notes": answer.notes,
                "model": answer.model,
                "effort": question.effort,
                "budget": question.budget,
                "retrieval": settings.RETRIEVAL,
                "usage": answer.usage,
                "latency_ms": answer.latency_ms,
                "answer": answer.text,
                # What the model was shown (when it failed, the passages kept in place of an answer,
                # `sources_sent` saying whether it was sent them): each packed source, its document
                # version and a hash of the exact text, so a replay can prove it against the stored answer.
                "sources": [
                    {"label": s["label"], "document": s["document"], "version": s.get("version", ""), "path": s["path"],
                     "start": s["start"], "end": s["end"], "tokens": s.get("tokens"),
                     "sha256": hashlib.sha256(str(s["text"]).encode("utf-8")).hexdigest()}
                    for s in answer.sources
                ],
                "citations": [{"label": c.label, "quote": c.quote, "status": c.status, "verified": c.verified,
                               "reason": c.reason} for c in citations],
                # The earlier turns of the conversation the model was sent with the question.
                **({"turns_sent": turns} if turns and shown and shown.model else {}),
                # A failed or stopped answer's passages: sent to the model before it failed (or was
                # stopped), or found without it.
                **({"sources_sent": was_sent} if (error or answer.mode == "stopped") and answer.sources else {}),
            },
        )
