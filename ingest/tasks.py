"""Celery adapters: load the item, claim it, run the pipeline, record the outcome.

The only module of `ingest` that knows Django and Celery. Work is idempotent (deterministic point
ids, upsert then delete stale), so tasks are acked late and may run twice harmlessly.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_failure, worker_process_init
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from docqa import services
from docqa.models import Change, Document, DocumentStatus, DocumentText, IngestItem, ItemState
from ingest.attachments import Attachment, extract_attachments
from ingest.detect import Unsupported, detect_kind, read_head
from ingest.errors import DocqaError, StoreError
from ingest.ocr import OcrOptions
from ingest.parse import ParsedDocument, parse_file
from ingest.pipeline import DocumentRef, IndexedFile, index_file, index_parsed

logger = logging.getLogger(__name__)
TASK_OPTIONS = {
    "bind": True,
    "acks_late": True,
    # Only the vector store's failures are transient; a file that cannot be parsed fails at once.
    "autoretry_for": (StoreError,),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 3,
}
IN_PROGRESS = (ItemState.PARSING, ItemState.EMBEDDING)
ATTACHMENT_KINDS = ("email", "msg")


@worker_process_init.connect
def load_models_in_child(**kwargs: object) -> None:
    """Load the embedding model in each worker process, never in the parent before fork.

    The embedded default's solo pool sends this signal too; there the model loads lazily on the
    first file instead, so a re-sync with nothing to do costs no model load.
    """
    if settings.EMBEDDED_WORKER:
        return
    import torch

    torch.set_num_threads(settings.WORKER_TORCH_THREADS)
    _ = services.get_embedder().model


def is_repeat(task: Task) -> bool:
    """A retry, or a redelivery after a worker died: it may take over its own in-progress item."""
    delivery = task.request.delivery_info or {}
    return bool(task.request.retries or delivery.get("redelivered"))


def claim(item_id: int, state: str, *, again: bool = False) -> IngestItem | None:
    """Move the item to `state`; None if another worker has it or it is already final.

    An item in progress can be taken over by its own retry or redelivery (`again`), or by anyone
    once it started longer ago than the hard time limit: no live task can still be on it.
    """
    now = timezone.now()
    takeable = Q(state=ItemState.QUEUED) | Q(
        state__in=IN_PROGRESS, started_at__lt=now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    )
    if again:
        takeable |= Q(state__in=IN_PROGRESS)
    claimed = IngestItem.objects.filter(takeable, id=item_id).update(
        state=state, attempts=F("attempts") + 1, started_at=now
    )
    if not claimed:
        return None
    return IngestItem.objects.select_related("document__source", "run").get(id=item_id)


@shared_task(name="ingest.ingest_document", **TASK_OPTIONS)
def ingest_document(self: Task, item_id: int) -> str:
    """Parse one file and, unless the stages run on separate queues, chunk, embed and index it."""
    item = claim(item_id, ItemState.PARSING, again=is_repeat(self))
    if item is None or item.document is None:
        return "not claimed"
    doc = item.document

    def work(checkpoint: Callable[[], None]) -> str:
        root = Path(doc.source.root)
        if doc.parent is not None:
            # An attachment left unfinished (a resumed run): read its message's attachments again.
            index_attachments(item, doc.parent, resolve_inside(root, doc.parent.path), checkpoint)
            return "indexed"
        abspath = resolve_inside(root, doc.path)
        version = _hash(abspath)
        ocr = ocr_options()
        if settings.SPLIT_QUEUES:
            text = save_text(version, parse_file(abspath, doc.kind, ocr))
            # Waiting for embedding: no start time until an embed task claims it.
            waiting = IngestItem.objects.filter(id=item.id, state=ItemState.PARSING)
            if not waiting.update(state=ItemState.EMBEDDING, started_at=None):
                return "taken over"  # finished or re-queued meanwhile
            embed_document.apply_async((item.id, text.id, version), queue=settings.EMBED_QUEUE)
            return "parsed"
        indexed = index_file(
            abspath, doc.kind, DocumentRef(doc.matter_id, doc.id, doc.path, version),
            **pipeline_options(), ocr=ocr, checkpoint=checkpoint,
            on_stage=lambda stage: IngestItem.objects.filter(id=item_id).update(state=stage),
        )
        finish_indexed(item, doc, version, indexed, checkpoint)
        return "indexed"

    return guarded(item, doc, work)


@shared_task(name="ingest.embed_document", **TASK_OPTIONS)
def embed_document(self: Task, item_id: int, text_id: int, version: str) -> str:
    """The embed stage on its own queue (DOCQA_SPLIT_QUEUES): chunk, embed and index parsed text.

    Only ids travel through the broker; the text and its layout are read from the database.
    """
    item = (IngestItem.objects.select_related("document__source", "run")
            .filter(id=item_id, state=ItemState.EMBEDDING).first())
    if item is None or item.document is None:
        return "not claimed"  # finished, cancelled, or taken over by a resumed run
    # One embed task per item: a duplicate (a resend) finds it claimed; a redelivery after its
    # worker died, or anyone after the hard time limit, may take it over.
    stale = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    takeable = Q(started_at__isnull=True) | Q(started_at__lt=stale)
    if is_repeat(self):
        takeable = Q()
    if not IngestItem.objects.filter(takeable, id=item_id, state=ItemState.EMBEDDING).update(
        started_at=timezone.now(), attempts=F("attempts") + 1
    ):
        return "not claimed"
    doc = item.document

    def work(checkpoint: Callable[[], None]) -> str:
        text = DocumentText.objects.get(id=text_id)
        parsed = ParsedDocument.from_layout(text.text, text.parser, text.layout)
        indexed = index_parsed(
            parsed, DocumentRef(doc.matter_id, doc.id, doc.path, version),
            **pipeline_options(), checkpoint=checkpoint,
        )
        # A message's attachments are parsed and embedded here, with it: this worker reads the
        # folder too (the parse stage writes nothing to the vector store).
        finish_indexed(item, doc, version, indexed, checkpoint)
        return "indexed"

    return guarded(item, doc, work)


def pipeline_options() -> dict[str, Any]:
    """What every indexing call takes from this process and its settings."""
    return {"embedder": services.get_embedder(), "store": services.get_store(),
            "chunk_tokens": settings.CHUNK_TOKENS, "overlap": settings.CHUNK_OVERLAP}


def ocr_options() -> OcrOptions:
    return OcrOptions(settings.OCR_MAX_PAGES, settings.OCR_LANGUAGES)


def guarded(item: IngestItem, doc: Document, work: Callable[[Callable[[], None]], str]) -> str:
    """Run a stage of one file under the soft time limit; every way it can end ends the item."""
    limit = settings.CELERY_TASK_SOFT_TIME_LIMIT
    try:
        with thread_time_limit(limit):
            return work(deadline_check(limit))
    except StoreError:
        raise  # retried with backoff; when retries run out, task_failure ends the item
    except DocqaError as exc:
        forget_points(doc.id, with_attachments=True)
        return fail(item.id, str(exc), error_class(exc))
    except SoftTimeLimitExceeded:
        forget_points(doc.id, with_attachments=True)
        return fail(item.id, f"processing took longer than the {limit} s limit per file", "timeout")
    except Exception as exc:  # an unexpected bug must still end the item, with its reason
        logger.exception("ingest of %s failed", doc.path)
        forget_points(doc.id, with_attachments=True)
        return fail(item.id, f"internal error: {type(exc).__name__}: {exc}", "internal")


def finish_indexed(item: IngestItem, doc: Document, version: str, indexed: IndexedFile,
                   checkpoint: Callable[[], None]) -> None:
    # Attachments first: the message's item ends last, so the run cannot finish before its children exist.
    if doc.kind in ATTACHMENT_KINDS:
        index_attachments(item, doc, resolve_inside(Path(doc.source.root), doc.path), checkpoint)
    record_indexed(item.id, doc, version, indexed)


def save_text(version: str, parsed: ParsedDocument) -> DocumentText:
    text, created = DocumentText.objects.get_or_create(
        sha256=version, parser=parsed.parser,
        defaults={"text": parsed.text, "page_count": parsed.page_count, "layout": parsed.layout()},
    )
    if not created and (text.text != parsed.text or not text.layout):
        # Stored by an earlier parser release under the same name: this parse is what the chunks index.
        text.text, text.page_count, text.layout = parsed.text, parsed.page_count, parsed.layout()
        text.save(update_fields=["text", "page_count", "layout"])
    return text


def forget_points(document_id: int, *, with_attachments: bool = False) -> None:
    """A file that failed answers nothing: drop what an earlier version or this attempt wrote.

    The file on disk no longer says what the old version said, and an attempt cut short may
    have written some of its chunks. A failed message takes its attachments with it.
    """
    ids = [document_id]
    if with_attachments:
        children = Document.objects.filter(parent_id=document_id).exclude(status=DocumentStatus.DELETED)
        ids += list(children.values_list("id", flat=True))
        children.update(status=DocumentStatus.FAILED, error="its message failed", chunk_count=0)
    for one in ids:
        try:
            services.get_store().delete_document(one)
        except DocqaError:  # the store is down or held by another process: the next sync cleans up
            logger.warning("could not remove the points of failed document %s", one)


def deadline_check(seconds: float) -> Callable[[], None]:
    """A checkpoint that raises SoftTimeLimitExceeded once `seconds` have passed from now."""
    deadline = time.monotonic() + seconds

    def check() -> None:
        if seconds > 0 and time.monotonic() > deadline:
            raise SoftTimeLimitExceeded()

    return check


@contextmanager
def thread_time_limit(seconds: float) -> Iterator[None]:
    """Celery's soft time limit for a worker thread, where Celery's signal-based one cannot act.

    The prefork pool enforces soft and hard limits with signals in the child process. The
    embedded default runs its worker in a thread of the web server or command, where no signal
    reaches it; there a timer raises SoftTimeLimitExceeded inside the thread instead, once, at its
    next Python instruction (a long C call finishes first). Library code that catches every
    exception may swallow it, so the pipeline also checks the deadline between its stages and
    embedding slices (`deadline_check`).
    """
    if threading.current_thread() is threading.main_thread() or seconds <= 0:
        yield
        return
    target = ctypes.c_ulong(threading.get_ident())
    guard = threading.Lock()
    state = {"done": False}

    def expire() -> None:
        with guard:
            if not state["done"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(SoftTimeLimitExceeded))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        # Stop the timer and withdraw an exception it may have set as the block ended. If that
        # exception arrives during this clean-up, the work itself had finished: try again.
        while True:
            try:
                with guard:
                    state["done"] = True
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)
                break
            except SoftTimeLimitExceeded:
                continue
        timer.cancel()


def resolve_inside(root: Path, relative: str) -> Path:
    """The file's real path, refused if it now leads outside the folder (swapped for a link)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DocqaError("the file now points outside the folder (a link); not indexed")
    return path


def _hash(path: Path) -> str:
    from ingest.discover import hash_file

    try:
        return hash_file(path)
    except OSError as exc:
        raise DocqaError(f"file vanished or unreadable since discovery: {exc.strerror or exc}") from exc


def error_class(exc: Exception) -> str:
    """A short, stable name for what went wrong: parse, unsupported, file, store, ..."""
    names = {"ParseError": "parse", "UnsupportedFile": "unsupported", "StoreError": "store", "DocqaError": "file"}
    return names.get(type(exc).__name__, type(exc).__name__.lower())


def record_indexed(item_id: int, doc: Document, version: str, indexed: IndexedFile) -> None:
    parsed = indexed.parsed
    with transaction.atomic():
        text = save_text(version, parsed)
        Document.objects.filter(id=doc.id).update(
            sha256=version, status=DocumentStatus.INDEXED, error="", text=text, chunk_count=indexed.chunk_count
        )
        IngestItem.objects.filter(id=item_id).update(
            state=ItemState.INDEXED, error="", error_class="", finished_at=timezone.now(),
            pages=parsed.page_count, chunks=indexed.chunk_count,
        )


def index_attachments(item: IngestItem, message: Document, abspath: Path,
                      checkpoint: Callable[[], None] = lambda: None) -> None:
    """Index each attachment of a message as a child document, with an item of its own in the run.

    An attachment whose bytes are unchanged since the last sync is not parsed again; one that
    is gone from the message is removed. A bad attachment fails alone: the message stays indexed.
    """
    found, notes = extract_attachments(abspath, message.kind, settings.MAX_FILE_BYTES)
    previous = {child.path: child for child in message.attachments.exclude(status=DocumentStatus.DELETED)}
    for note in notes:
        name = note.split(":", 1)[0]
        child_item(item.run_id, f"{message.path}/{name}", None, Change.SKIPPED, ItemState.SKIPPED, error=note)
    with tempfile.TemporaryDirectory(prefix="docqa-attachment-") as folder:
        for number, attachment in enumerate(found):
            path = f"{message.path}/{attachment.name}"
            child = previous.pop(path, None)
            # On disk under a generated name: an attachment's own name may be too long for the file system.
            file = Path(folder) / f"{number}{Path(attachment.name).suffix[:16]}"
            index_attachment(item.run_id, message, child, path, attachment, file, checkpoint)
    for path, child in previous.items():
        forget_points(child.id)
        Document.objects.filter(id=child.id).update(status=DocumentStatus.DELETED, chunk_count=0)
        child_item(item.run_id, path, child, Change.DELETED, ItemState.DELETED)


def index_attachment(run_id: int, message: Document, child: Document | None, path: str, attachment: Attachment,
                     file: Path, checkpoint: Callable[[], None]) -> None:
    version = hashlib.sha256(attachment.data).hexdigest()
    if child is not None and child.status == DocumentStatus.INDEXED and child.sha256 == version:
        child_item(run_id, path, child, Change.UNCHANGED, ItemState.UNCHANGED)
        return
    file.write_bytes(attachment.data)
    try:
        kind = detect_kind(file, read_head(file))
    except Unsupported as exc:
        if child is not None:
            forget_points(child.id)
            Document.objects.filter(id=child.id).update(status=DocumentStatus.DELETED, chunk_count=0)
        child_item(run_id, path, None, Change.SKIPPED, ItemState.SKIPPED, error=str(exc))
        return
    # As for a file on disk: an attachment that failed before is tried again, not "changed".
    change = Change.NEW if child is None else Change.RETRIED if child.status == DocumentStatus.FAILED else Change.CHANGED
    child, _ = Document.objects.update_or_create(
        source_id=message.source_id, path=path,
        defaults={"matter_id": message.matter_id, "parent": message, "kind": kind, "size": len(attachment.data),
                  "status": DocumentStatus.PENDING},
    )
    entry = child_item(run_id, path, child, change, ItemState.PARSING)
    try:
        indexed = index_file(
            file, kind, DocumentRef(child.matter_id, child.id, path, version),
            **pipeline_options(), ocr=ocr_options(), checkpoint=checkpoint,
        )
        record_indexed(entry.id, child, version, indexed)
    except SoftTimeLimitExceeded:
        forget_points(child.id)
        fail(entry.id, f"the message's time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s) ran out here", "timeout")
        raise
    except StoreError:
        fail(entry.id, "the vector store failed; retried with its message", "store")
        raise
    except DocqaError as exc:
        forget_points(child.id)
        fail(entry.id, str(exc), error_class(exc))
    except Exception as exc:  # one bad attachment must not stop the others or leave its item open
        logger.exception("attachment %s failed", path)
        forget_points(child.id)
        fail(entry.id, f"internal error: {type(exc).__name__}: {exc}", "internal")


def child_item(run_id: int, path: str, document: Document | None, change: str, state: str,
               error: str = "") -> IngestItem:
    """The run's item for an attachment; a task that runs twice updates it rather than adding one."""
    final = state in (ItemState.UNCHANGED, ItemState.DELETED, ItemState.SKIPPED)
    entry, _ = IngestItem.objects.update_or_create(
        run_id=run_id, path=path,
        defaults={"document": document, "change": change, "state": state, "error": error,
                  "attempts": 1, "started_at": timezone.now(), "finished_at": timezone.now() if final else None},
    )
    return entry


def fail(item_id: int, reason: str, kind: str = "file") -> str:
    with transaction.atomic():
        item = IngestItem.objects.filter(id=item_id).first()
        if item is None:
            return "gone"
        if item.document_id:
            Document.objects.filter(id=item.document_id).update(status=DocumentStatus.FAILED, error=reason)
        IngestItem.objects.filter(id=item_id).update(
            state=ItemState.FAILED, error=reason, error_class=kind, finished_at=timezone.now()
        )
    return "failed"


@shared_task(name="ingest.delete_document", **TASK_OPTIONS)
def delete_document(self: Task, item_id: int) -> str:
    item = claim(item_id, ItemState.PARSING, again=is_repeat(self))
    if item is None or item.document_id is None:
        return "not claimed"
    gone = [item.document_id, *Document.objects.filter(parent_id=item.document_id).values_list("id", flat=True)]
    for document_id in gone:
        services.get_store().delete_document(document_id)
    with transaction.atomic():
        Document.objects.filter(id__in=gone).update(status=DocumentStatus.DELETED, chunk_count=0)
        IngestItem.objects.filter(id=item.id).update(state=ItemState.DELETED, finished_at=timezone.now())
    return "deleted"


@shared_task(name="ingest.move_document", **TASK_OPTIONS)
def move_document(self: Task, item_id: int) -> str:
    """Same content at a new path: relabel the points and the document, no parsing or embedding."""
    item = claim(item_id, ItemState.PARSING, again=is_repeat(self))
    if item is None or item.document is None:
        return "not claimed"
    doc = item.document
    services.get_store().rename_document(doc.id, item.path)
    children = list(Document.objects.filter(parent_id=doc.id))
    for child in children:
        services.get_store().rename_document(child.id, item.path + child.path[len(doc.path):])
    with transaction.atomic():
        # A document deleted earlier at the new path leaves a row behind; it has no points left.
        Document.objects.filter(source_id=doc.source_id, path=item.path, status=DocumentStatus.DELETED).delete()
        Document.objects.filter(id=doc.id).update(path=item.path)
        for child in children:
            Document.objects.filter(id=child.id).update(path=item.path + child.path[len(doc.path):])
        IngestItem.objects.filter(id=item.id).update(state=ItemState.MOVED, finished_at=timezone.now())
    return "moved"


@task_failure.connect
def end_item_when_celery_gives_up(sender: Task | None = None, exception: BaseException | None = None,
                                  args: tuple | None = None, **kwargs: object) -> None:
    """Retries exhausted or hard time limit: the item still ends, failed, with the reason."""
    if sender is None or not sender.name.startswith("ingest.") or not args:
        return
    kind = "store" if isinstance(exception, StoreError) else "gave-up"
    document_id = IngestItem.objects.filter(id=int(args[0])).values_list("document_id", flat=True).first()
    if document_id is not None:
        forget_points(document_id, with_attachments=True)  # best effort: the store may still be down
    fail(int(args[0]), f"gave up after retries: {type(exception).__name__}: {exception}", kind)
