"""The JSON API at /api/v1/: matters, sources, runs, documents, questions, answers and the audit trail.

Every call needs `Authorization: Bearer <token>` (`manage.py token create --user NAME`) and is
checked exactly as the web UI checks it: the same `matter_for` role test, the same 404 for a
matter, run, document or question the user may not see, the same audit events. The OpenAPI
schema is generated from these functions (`/api/v1/openapi.json`), so it cannot drift from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, NinjaAPI, Path, Query, Schema
from ninja.security import HttpBearer
from pydantic import field_validator

from docqa import actions
from docqa.conversations import ask_in_background, event_stream, own_conversation, sse, told
from docqa.faults import plain
from docqa.models import (
    Answer,
    Document,
    IngestRun,
    ItemState,
    Question,
    Role,
    RunStatus,
    folder_field,
    path_starts,
    shown_path,
    split_shown,
)
from docqa.permissions import matter_for, readable_matters, role_in
from docqa.views import document_for, run_for
from inference.llm import ContextTooLong, LlmError, LlmMisconfigured, LlmTimeout
from ingest.errors import DocqaError

MAX_PAGE = 500
MAX_BUDGET = 1_000_000
MAX_ID = 2**62  # past the database's integer range a request is invalid (422), never a server error
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = actions.user_for_token(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(title="docqa API", version="1", urls_namespace="api", auth=TokenAuth(), docs_url=None,
               description=__doc__)


@api.exception_handler(DocqaError)
def docqa_error(request: HttpRequest, exc: DocqaError) -> HttpResponse:
    status = 504 if isinstance(exc, LlmTimeout) else 502 if isinstance(exc, LlmError) and not isinstance(
        exc, (ContextTooLong, LlmMisconfigured)) else 400
    # When the question was recorded, its id: GET /questions/{id} has the error and, when the model
    # failed, the passages found without it.
    recorded = {"question": exc.question, "conversation": exc.conversation} if exc.question else {}
    # `detail` is the operator's message; `plain` says it in words for the asker (docqa.faults).
    return api.create_response(request, {"detail": str(exc), **recorded, "kind": exc.kind,
                                         "plain": plain(exc.kind, str(exc))}, status=status)


def actor(request: HttpRequest) -> str:
    return f"api:{request.user.get_username()}"


# --- Shapes ---------------------------------------------------------------------------------------

class AskFailure(Schema):
    detail: str  # for the operator
    question: int | None = None  # a failed question's id, when it was recorded
    conversation: int | None = None  # ... and its conversation
    kind: str = ""  # its kind of fault (docqa.faults), "" when `detail` is the asker's own to act on
    plain: str = ""  # ... and what the asker is told, in plain words


class Message(Schema):
    detail: str
    question: int | None = None  # a failed question's id, when it was recorded
    conversation: int | None = None  # ... and its conversation


class MatterOut(Schema):
    slug: str
    name: str
    role: str
    legal_hold: bool


class SourceOut(Schema):
    id: int
    root: str
    documents: int


class SourceIn(Schema):
    root: str


class Progress(Schema):
    work: int
    done: int
    failed: int
    pages: int
    chunks: int
    files_per_second: float
    eta_seconds: float | None
    cancelled: int = 0  # files this run will not do (cancelled or interrupted); `done` leaves them out


class TakenOver(Schema):
    root: str
    documents: int
    duplicates: int


class RunOut(Schema):
    id: int
    status: str
    root: str
    actor: str
    started_at: datetime
    finished_at: datetime | None
    resumed_at: datetime | None = None  # last resumed or retried: the pace counts from then
    counts: dict[str, int]
    progress: Progress
    took_over: list[TakenOver]


class Failure(Schema):
    path: str
    state: str
    error_class: str
    error: str
    attempts: int


class Count(Schema):
    count: int


class DocumentOut(Schema):
    id: int
    path: str = Field(description="relative to the folder it was synced from")
    source: str = Field(description="that folder on the server")
    shown: str = Field(description="as citations name it: the path, after its folder's name when the matter "
                                   "has several folders (two may hold the same path)")
    kind: str
    status: str
    size: int
    version: str
    pages: int | None
    chunks: int
    error: str
    updated_at: datetime
    parent: int | None


class DocumentPage(Schema):
    count: int
    items: list[DocumentOut]


class DocumentText(DocumentOut):
    text: str


class AskIn(Schema):
    question: str = Field(min_length=1, max_length=4000)
    effort: str | None = Field(None, description="low, medium or high; default DOCQA_LLM_EFFORT")
    budget: int | None = Field(None, ge=512, le=MAX_BUDGET, description="prompt tokens; default: the model's window")
    conversation: int | None = Field(None, ge=1, le=2**53)
    scope: list[str] = Field([], max_length=100, description="folders or document paths to search only "
                             "(a list; one path alone may be given as a string)")

    @field_validator("scope", mode="before")
    @classmethod
    def one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class CitationOut(Schema):
    label: str
    quote: str
    status: str
    verified: bool
    reason: str
    document: int | None
    version: str
    path: str
    page: int | None
    section: str = Field("", description="the section heading in force where the quote starts")
    start: int | None
    end: int | None


class SourceSent(Schema):
    label: str
    document: int
    version: str = ""
    path: str
    page: int | None = None
    section: str | None = None
    start: int
    end: int
    tokens: int | None = None
    text: str


class AnswerOut(Schema):
    question: int
    conversation: int | None
    text: str
    effort: str
    scope: list[str] = Field([], description="the folders or documents the search was limited to; [] for all")
    asked_at: datetime
    mode: str
    answer: str
    error: str = Field("", description="why the question failed, written for the operator")
    error_kind: str = Field("", description="its kind of fault: unavailable, setup, timeout, too_long, reasoning, "
                                            "failed, store, internal; \"\" when `error` is the asker's own to act on")
    error_plain: str = Field("", description="what the asker is told, in plain words (as the web page says it)")
    model: str
    citations: list[CitationOut]
    sources: list[SourceSent]
    left_out: list[dict[str, Any]]
    notes: list[str] = Field([], description="what the user is told beside the answer (a retry at low effort, "
                                                 "a cut-off answer, a budget cut to the model's window)")
    usage: dict[str, Any]
    latency_ms: int


class QuestionOut(Schema):
    question: int
    conversation: int | None
    text: str
    effort: str
    scope: list[str] = Field([], description="the folders or documents the search was limited to; [] for all")
    asked_at: datetime
    mode: str = Field(description="llm, search, error, stopped, or pending: no answer recorded yet (being "
                                  "answered, or its process ended first)")
    stop_requested: bool = Field(description="a stop was asked for (it may not have been in time)")
    error_kind: str = ""


class QuestionPage(Schema):
    count: int
    items: list[QuestionOut]


class AuditOut(Schema):
    id: int
    created_at: datetime
    actor: str
    matter: str | None
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(Schema):
    count: int
    items: list[AuditOut]


# --- Helpers --------------------------------------------------------------------------------------

def run_out(run: IngestRun) -> dict[str, Any]:
    stats = actions.run_stats(run)
    return {"id": run.id, "status": run.status, "root": run.source.root, "actor": run.actor,
            "started_at": run.started_at, "finished_at": run.finished_at, "resumed_at": run.resumed_at,
            "counts": run.counts_in_order,
            "progress": {"work": stats.work, "done": stats.done, "failed": stats.failed, "cancelled": stats.cancelled,
                         "pages": stats.pages,
                         "chunks": stats.chunks, "files_per_second": round(stats.rate, 3),
                         "eta_seconds": round(stats.eta, 1) if stats.eta is not None else None},
            "took_over": run.took_over}


def document_out(doc: Document, names: dict[int, str]) -> dict[str, Any]:
    return {"id": doc.id, "path": doc.path, "source": doc.source.root, "shown": shown_path(names, doc.source_id, doc.path),
            "kind": doc.kind, "status": doc.status, "size": doc.size,
            "version": doc.sha256, "pages": doc.text.page_count if doc.text else None, "chunks": doc.chunk_count,
            "error": doc.error, "updated_at": doc.updated_at, "parent": doc.parent_id}


def answer_out(question: Question) -> dict[str, Any]:
    answer: Answer | None = getattr(question, "answer", None)
    return {
        "question": question.id, "conversation": question.conversation_id, "text": question.text,
        "effort": question.effort, "scope": question.scope, "asked_at": question.created_at,
        "mode": answer.mode if answer else "pending", "answer": answer.text if answer else "",
        "error": answer.error if answer else "", "model": answer.model if answer else "",
        "error_kind": answer.error_kind if answer else "", "error_plain": told(answer) if answer else "",
        "citations": [{"label": c.label, "quote": c.quote, "status": c.status, "verified": c.verified,
                       "reason": c.reason, "document": c.document_id, "version": c.version, "path": c.path,
                       "page": c.page, "section": c.section, "start": c.start, "end": c.end}
                      for c in (answer.citations.all() if answer else [])],
        "sources": answer.sources if answer else [], "left_out": answer.dropped if answer else [],
        "notes": answer.notes if answer else [],
        "usage": answer.usage if answer else {}, "latency_ms": answer.latency_ms if answer else 0,
    }


def auditor(request: HttpRequest) -> None:
    if not request.user.has_perm("docqa.view_auditevent"):
        raise PermissionDenied403()


class PermissionDenied403(Exception):
    pass


@api.exception_handler(PermissionDenied403)
def forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": "auditors only (the docqa.view_auditevent permission)"}, status=403)


# --- Matters, sources, runs -------------------------------------------------------------------------

@api.get("/matters", response=list[MatterOut], tags=["matters"])
def matters(request: HttpRequest) -> list[dict[str, Any]]:
    """The matters you may read, with your role in each."""
    return [{"slug": m.slug, "name": m.name, "role": str(role_in(request.user, m)), "legal_hold": m.legal_hold}
            for m in readable_matters(request.user).order_by("slug")]


@api.get("/matters/{slug}/sources", response=list[SourceOut], tags=["sources"])
def sources(request: HttpRequest, slug: str) -> list[dict[str, Any]]:
    matter = matter_for(request.user, slug)
    return [{"id": s.id, "root": s.root, "documents": s.held} for s in actions.synced_sources(matter)]


@api.post("/matters/{slug}/sources", response={201: RunOut, 400: Message}, tags=["sources"])
def sync_source(request: HttpRequest, slug: str, body: SourceIn) -> tuple[int, dict[str, Any]]:
    """Sync a folder (registered, or under DOCQA_SOURCE_ROOTS): editors. Returns the run it started."""
    from docqa.sources import checked_folder

    matter = matter_for(request.user, slug, Role.EDITOR)
    run = actions.do_start_ingest(matter, checked_folder(matter, body.root), actor(request))
    return 201, run_out(IngestRun.objects.select_related("source").get(id=run.id))


@api.get("/matters/{slug}/runs", response=list[RunOut], tags=["runs"])
def runs(request: HttpRequest, slug: str, limit: int = Query(50, ge=1, le=MAX_PAGE)) -> list[dict[str, Any]]:
    matter = matter_for(request.user, slug)
    actions.finish_completed_runs(matter.runs.filter(status__in=(RunStatus.RUNNING, RunStatus.CANCELLED))
                                  .select_related("matter").order_by("-id")[:limit])
    return [run_out(r) for r in matter.runs.select_related("source").order_by("-id")[:limit]]


@api.get("/matters/{slug}/runs/{run_id}", response=RunOut, tags=["runs"])
def run(request: HttpRequest, slug: str, run_id: Id) -> dict[str, Any]:
    """A run with its live progress: files, pages, chunks, rate and ETA."""
    found = run_for(request, slug, run_id)
    actions.finish_completed_runs([found])
    return run_out(found)


@api.post("/matters/{slug}/runs/{run_id}/cancel", response=Count, tags=["runs"])
def cancel_run(request: HttpRequest, slug: str, run_id: Id) -> dict[str, int]:
    """Cancel the run's queued files (editors); the count of files that will not be processed."""
    return {"count": actions.do_cancel_run(run_for(request, slug, run_id, Role.EDITOR), actor(request))}


@api.post("/matters/{slug}/runs/{run_id}/retry", response=Count, tags=["runs"])
def retry_run(request: HttpRequest, slug: str, run_id: Id) -> dict[str, int]:
    """Queue the run's failed files again (editors); the count queued."""
    return {"count": actions.do_retry_failed(run_for(request, slug, run_id, Role.EDITOR), actor(request))}


@api.post("/matters/{slug}/runs/{run_id}/resume", response=Count, tags=["runs"])
def resume_run(request: HttpRequest, slug: str, run_id: Id) -> dict[str, int]:
    """Queue again what a cancelled or interrupted run left undone (editors; the folder's latest
    run only); the count queued."""
    return {"count": actions.do_resume_run(run_for(request, slug, run_id, Role.EDITOR), actor(request))}


@api.get("/matters/{slug}/runs/{run_id}/failures", response=list[Failure], tags=["runs"])
def run_failures(request: HttpRequest, slug: str, run_id: Id) -> Any:
    found = run_for(request, slug, run_id)
    return found.items.filter(state__in=(ItemState.FAILED, ItemState.SKIPPED)).order_by("path").values(
        "path", "state", "error_class", "error", "attempts")


# --- Documents ------------------------------------------------------------------------------------

@api.get("/matters/{slug}/documents", response=DocumentPage, tags=["documents"])
def documents(request: HttpRequest, slug: str, folder: str = "", state: str = "",
              limit: int = Query(100, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
    """The matter's documents, by path; `folder` keeps those under it (with several folders, it may
    start with a folder's name, as `shown` does), `state` those in that state."""
    matter = matter_for(request.user, slug)
    names = matter.listed_names()  # a folder of deleted documents only by its root
    docs = (matter.documents.select_related("text", "source").defer("text__text", "text__layout")
            .order_by("path", "id"))
    source, inside = split_shown(names, folder)
    if source is not None:
        docs = docs.filter(source_id=source)
    if inside:
        docs = docs.filter(path_starts(inside + "/"))
    if state:
        docs = docs.filter(status=state)
    return {"count": docs.count(), "items": [document_out(d, names) for d in docs[offset:offset + limit]]}


@api.get("/matters/{slug}/documents/{doc_id}", response=DocumentText, tags=["documents"])
def document(request: HttpRequest, slug: str, doc_id: Id) -> dict[str, Any]:
    """A document and its extracted text (the text citations' spans index). Audited."""
    doc = document_for(request, slug, doc_id)
    names = doc.matter.listed_names()
    actions.record_audit(actor(request), "document.view", doc.matter, {"document": doc.id, "path": doc.path,
                                                                        **folder_field(names, doc.source_id),
                                                                        "version": doc.sha256})
    return {**document_out(doc, names), "text": doc.text.text if doc.text else ""}


# --- Questions ------------------------------------------------------------------------------------

def checked_effort(body: AskIn) -> str:
    """The question's reasoning effort, DOCQA_LLM_EFFORT when it names none."""
    effort = body.effort or settings.LLM_EFFORT
    if effort not in ("low", "medium", "high"):
        raise DocqaError("effort is one of low, medium, high")
    return effort


@api.post("/matters/{slug}/questions", response={200: AnswerOut, 400: AskFailure, 502: AskFailure, 504: AskFailure},
          tags=["questions"])
def ask(request: HttpRequest, slug: str, body: AskIn) -> dict[str, Any]:
    """Ask; the answer comes back whole, with its citations checked and the sources as sent."""
    matter = matter_for(request.user, slug)
    effort = checked_effort(body)
    outcome = actions.do_ask(matter, body.question, actor=actor(request), user=request.user, budget=body.budget,
                             effort=effort, conversation=own_conversation(request, matter, body.conversation),
                             scope=[s for s in body.scope if s.strip()] or None)
    question = Question.objects.select_related("answer").get(id=outcome.question.id)
    return answer_out(question)


@api.post("/matters/{slug}/questions/stream", tags=["questions"],
          openapi_extra={"responses": {200: {"description": "server-sent events: asked (the question's id, "
                                             "for the stop call, its conversation and asked_at), status, reasoning, token, then "
                                             "done (with the question's id) or error",
                                             "content": {"text/event-stream": {"schema": {"type": "string"}}}}}})
def ask_stream(request: HttpRequest, slug: str, body: AskIn) -> StreamingHttpResponse:
    """Ask; the answer streams as server-sent events, as in the web UI. Fetch it whole afterwards."""
    matter = matter_for(request.user, slug)
    effort = checked_effort(body)
    events = ask_in_background(matter, body.question, actor=actor(request), user=request.user, budget=body.budget,
                               effort=effort, conversation=own_conversation(request, matter, body.conversation),
                               scope=[s for s in body.scope if s.strip()] or None)
    return event_stream(sse(events))


@api.get("/matters/{slug}/questions", response=QuestionPage, tags=["questions"])
def questions(request: HttpRequest, slug: str, conversation: int = Query(0, ge=0, le=MAX_ID), pending: bool = False,
              limit: int = Query(50, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
    """Your questions in the matter, newest first: `conversation` keeps one conversation's,
    `pending` those still being answered (a whole-answer POST in another request can be found
    here, and stopped). Each in full at GET /questions/{id}."""
    matter = matter_for(request.user, slug)
    asked = Question.objects.filter(matter=matter, user=request.user).select_related("answer").order_by("-id")
    if conversation:
        asked = asked.filter(conversation_id=conversation)
    if pending:
        asked = asked.filter(answer__isnull=True)
    return {"count": asked.count(), "items": [question_out(q) for q in asked[offset:offset + limit]]}


def question_out(question: Question) -> dict[str, Any]:
    answer: Answer | None = getattr(question, "answer", None)
    return {"question": question.id, "conversation": question.conversation_id, "text": question.text,
            "effort": question.effort, "scope": question.scope, "asked_at": question.created_at,
            "mode": answer.mode if answer else "pending", "stop_requested": question.stop_requested_at is not None,
            "error_kind": answer.error_kind if answer else ""}


@api.get("/matters/{slug}/questions/{question_id}", response=AnswerOut, tags=["questions"])
def question(request: HttpRequest, slug: str, question_id: Id) -> dict[str, Any]:
    """One of your questions with its answer, citations and sources."""
    matter = matter_for(request.user, slug)
    found = Question.objects.filter(id=question_id, matter=matter, user=request.user).select_related("answer").first()
    if found is None:
        raise Http404("no such question")
    return answer_out(found)


@api.post("/matters/{slug}/questions/{question_id}/stop", response={202: Message, 409: Message}, tags=["questions"])
def stop_question(request: HttpRequest, slug: str, question_id: Id) -> tuple[int, dict[str, Any]]:
    """Stop one of your questions while it is answered (its id comes first in the stream, as
    `asked`): the model is hung up on at the next step of the search, or within half a second
    once it is asked (writing, or still reading the prompt), and what it wrote is recorded with
    mode `stopped`. 409 when it has already been answered or stopped."""
    matter = matter_for(request.user, slug)
    found = Question.objects.filter(id=question_id, matter=matter, user=request.user).first()
    if found is None:
        raise Http404("no such question")
    if actions.do_stop(found, actor=actor(request)):
        return 202, {"detail": "stopping", "question": found.id, "conversation": found.conversation_id}
    return 409, {"detail": "that question has already been answered or stopped", "question": found.id,
                 "conversation": found.conversation_id}


# --- Audit (auditors) -----------------------------------------------------------------------------

@api.get("/audit/events", response={200: AuditPage, 400: Message, 403: Message}, tags=["audit"])
def audit_events(request: HttpRequest, actor: str = "", matter: str = "", action: str = "", question: str = "",
                 since: str = "", until: str = "", q: str = "", limit: int = Query(100, ge=1, le=MAX_PAGE),
                 offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
    """The audit trail, newest first, filtered as on the review page (auditors). A date that is
    not one (since, until: YYYY-MM-DD) is refused with 400, never ignored."""
    from docqa.audit_views import filtered

    auditor(request)
    events, _ = filtered(request)
    page = events[offset:offset + limit]
    return {"count": events.count(), "items": [
        {"id": e.id, "created_at": e.created_at, "actor": e.actor, "matter": e.matter.slug if e.matter else None,
         "action": e.action, "detail": e.detail, "prev_hash": e.prev_hash, "hash": e.hash} for e in page]}


@api.get("/audit/export.jsonl", tags=["audit"], response={400: Message, 403: Message},
         openapi_extra={"responses": {200: {"description": "the filtered events as JSON Lines, streamed",
                                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}}})
def audit_export(request: HttpRequest, actor: str = "", matter: str = "", action: str = "", question: str = "",
                 since: str = "", until: str = "", q: str = "") -> Any:
    """Export the filtered trail as JSON Lines, streamed (auditors). The export is itself audited."""
    from docqa.audit_views import export_rows, filtered, json_lines

    auditor(request)
    events, given = filtered(request)
    actions.record_audit(f"api:{request.user.get_username()}", "audit.export", None,
                         {"format": "jsonl", "filters": {k: v for k, v in given.items() if v}})
    response = StreamingHttpResponse(json_lines(export_rows(events)), content_type="application/x-ndjson")
    response["Content-Disposition"] = 'attachment; filename="docqa-audit.jsonl"'
    return response

