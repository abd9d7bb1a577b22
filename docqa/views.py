"""Web views. Every one requires a login and checks the matter role."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Case, Count, F, QuerySet, Value, When
from django.db.models.functions import StrIndex, Substr
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from docqa import actions
from docqa.conversations import own_conversation, page_context, scope_of
from docqa.faults import kind_of, plain, sentence
from docqa.forms import AskForm
from docqa.models import (
    FINAL_STATES,
    Document,
    DocumentStatus,
    IngestRun,
    ItemState,
    Role,
    RunStatus,
    folder_field,
    path_starts,
    shown_path,
    split_shown,
)
from docqa.permissions import matter_for, readable_matters, role_in
from docqa.sources import upload_folder
from docqa.templatetags.docqa_tags import merged, quote_spans
from ingest.errors import DocqaError

logger = logging.getLogger(__name__)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 in the caller's language: JSON under the REST API (ninja's shape) and the OpenAI-
    compatible endpoint (OpenAI's), the site's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not Found"}, status=404)
    if request.path.startswith("/v1/"):
        return JsonResponse({"error": {"message": f"Unknown request URL: {request.method} {request.path}",
                                       "type": "invalid_request_error", "param": None, "code": "unknown_url"}},
                            status=404)
    return render(request, "404.html", status=404)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


@login_required
def home(request: HttpRequest) -> HttpResponse:
    matters = list(readable_matters(request.user).order_by("slug"))
    chosen = request.GET.get("m", "")
    if chosen and any(m.slug == chosen for m in matters):  # the matter switcher without JavaScript
        return redirect("ask", slug=chosen)
    if len(matters) == 1:
        return redirect("ask", slug=matters[0].slug)
    return render(request, "docqa/home.html", {"matters": matters})


@login_required
def ask(request: HttpRequest, slug: str) -> HttpResponse:
    """The ask page (a new conversation). Without JavaScript the form posts here and, answered,
    goes on to the conversation's page at the answer (reloading that shows it, it does not ask
    again); with JavaScript the answer streams from `ask_stream` instead."""
    matter = matter_for(request.user, slug)
    form = AskForm(request.POST or None)
    conversation = None
    error = ""
    if request.method == "POST" and form.is_valid():
        conversation = own_conversation(request, matter, form.cleaned_data.get("conversation"))
        try:
            outcome = actions.do_ask(
                matter, form.cleaned_data["question"], actor=f"web:{request.user.get_username()}", user=request.user,
                budget=form.cleaned_data["budget"], effort=form.cleaned_data["effort"], conversation=conversation,
                scope=scope_of(form),
            )
            conversation = outcome.question.conversation
            if conversation is not None:
                return redirect(reverse("conversation", args=[matter.slug, conversation.id]) + f"#q{outcome.question.id}")
            form = AskForm(initial={"conversation": None})
        except Exception as exc:
            recorded = getattr(exc, "conversation", None)
            if not isinstance(exc, DocqaError):
                if recorded is None:
                    raise
                logger.exception("answering a question failed")  # the page says so in plain words
            if recorded is None:  # the asker's own to act on (docqa.faults)
                error = plain(kind_of(exc), str(exc))
            else:  # recorded: its turn in the thread shows the error (and any passages kept)
                conversation = own_conversation(request, matter, recorded)
                form = AskForm(initial={**form.cleaned_data, "conversation": recorded})
    if request.method == "POST" and form.errors:  # refused before asking: say which field and why
        error = " ".join(f"{'The question' if name == 'question' else name.capitalize()}: {' '.join(errs)}"
                         for name, errs in form.errors.items())
    context = page_context(request, matter, conversation, form)
    context["error"] = error
    return render(request, "docqa/ask.html", context)


LISTED = 200  # documents shown on one page of a folder (or of a state's list); ?page= turns the pages


class Pages:
    """?page=N of a long list, `size` rows a page: the rows to show and the links to the others."""

    def __init__(self, request: HttpRequest, size: int) -> None:
        self.request, self.size = request, size
        page = request.GET.get("page", "1")
        self.page = int(page) if page.isascii() and page.isdigit() and 0 < int(page) <= 1_000_000 else 1
        self.offset = (self.page - 1) * size

    def link(self, page: int) -> str:
        query = self.request.GET.copy()
        query["page"] = str(page)
        return f"?{query.urlencode()}"

    def around(self, total: int, shown: int) -> dict[str, Any]:
        """What the page says under the list: "201–400 of 515", with the previous and next pages."""
        if total <= self.size and self.page == 1:
            return {}
        return {"first": self.offset + 1 if shown else 0, "last": self.offset + shown, "total": total,
                # Past the end (a link kept while files were removed): back to the last page.
                "previous": self.link(min(self.page - 1, -(-total // self.size))) if self.page > 1 else "",
                "next": self.link(self.page + 1) if self.offset + self.size < total else ""}


def by_status(rows: QuerySet[Document], key: str) -> QuerySet[Any]:
    """(key, status, count) for `rows`, counted by the database."""
    return rows.values_list(key, "status").annotate(count=Count("id")).order_by()


@login_required
def documents(request: HttpRequest, slug: str) -> HttpResponse:
    """The matter's folder tree, one level at a time: subfolders with their counts, then the files.
    A matter with several folders opens on one row per folder, each named as its citations name it."""
    matter = matter_for(request.user, slug)
    state = request.GET.get("state", "")
    state = state if state in DocumentStatus.values else ""  # an unknown state (a hand-edited link) is no filter
    names, others = matter.folder_naming()
    # As given: a folder's name may hold spaces, or be its root ("/uploads" beside the web's uploads).
    source, inside = split_shown(names, request.GET.get("folder", ""))
    folder = shown_path(names, source, inside).rstrip("/") if source is not None else inside
    top = matter.documents.filter(parent__isnull=True)
    rows = top.filter(source_id=source) if source is not None else top
    if not state:  # the tree holds the live folders; a folder of deleted documents only is under "deleted"
        rows = rows.exclude(source_id__in=list(others))
    prefix = f"{inside}/" if inside else ""
    rows = rows.filter(path_starts(prefix)) if prefix else rows
    if state:
        rows = rows.filter(status=state)
    subfolders: dict[str, Counter[str]] = {}
    shown = f"{folder}/" if folder else ""  # what the rows' names follow in the page's links
    # Counted by the database, not row by row here: a matter may hold tens of thousands of documents.
    counts: Counter[str] = Counter()  # documents by state at this level (all of it when not filtered)
    in_folder = 0  # documents right in this folder
    pages = Pages(request, LISTED)
    offset = pages.offset
    if names and not folder and not state:  # the top of a matter with several folders: one row each
        # A folder left holding deleted documents only has no name and no row; its documents are
        # under the "deleted" total.
        for source_id, status, count in by_status(rows, "source_id"):
            counts[status] += count
            if source_id in names:
                subfolders.setdefault(names[source_id], Counter())[status] += count
        direct = rows.none()
    elif state:  # every document in that state below the folder, named in full
        direct = rows
        in_folder = rows.count()
    else:  # one query for the subfolders' counts and the files right here (head "")
        rest = Substr("path", len(prefix) + 1)  # 1-based: the path after the folder's own
        inside_rows = rows.annotate(slash=StrIndex(rest, Value("/")))
        head = Case(When(slash__gt=0, then=Substr(rest, 1, F("slash") - 1)), default=Value(""))
        for name, status, count in by_status(inside_rows.annotate(head=head), "head"):
            counts[status] += count
            if name:
                subfolders.setdefault(name, Counter())[status] += count
            else:
                in_folder += count
        direct = inside_rows.filter(slash=0)
    # With several folders the rows of a state go by the name shown: folder first, then path.
    listed_names = {**names, **others}
    order = sorted(listed_names, key=listed_names.__getitem__)
    folder_rank = Case(*(When(source_id=id_, then=Value(rank)) for rank, id_ in enumerate(order)),
                       default=Value(len(order))) if state and order else Value(0)
    direct_ids = list(direct.annotate(folder_rank=folder_rank).order_by("folder_rank", "path", "source_id")
                      .values_list("id", flat=True)[offset:offset + LISTED]) if in_folder else []
    # Never the extracted texts themselves: a matter may hold tens of thousands of them.
    docs = (Document.objects.filter(id__in=direct_ids).select_related("text").defer("text__text", "text__layout")
            .annotate(attached=Count("attachments")))
    place = {id_: position for position, id_ in enumerate(direct_ids)}
    listed = sorted(docs, key=lambda d: place[d.id])
    for doc in listed:
        doc.name = (shown_path(listed_names, doc.source_id, doc.path) if state  # type: ignore[attr-defined]
                    else doc.path[len(prefix):])
    crumbs, walked = [], []
    # A folder's name is one crumb, also when it has parts of its own ("client-a/docs").
    named = [names[source]] if source is not None else []
    for part in named + (inside.split("/") if inside and source is not None else folder.split("/") if folder and
                         source is None else []):
        walked.append(part)
        crumbs.append({"name": part, "folder": "/".join(walked)})
    totals = counts if not folder and not state and not others else Counter(
        dict(top.values_list("status").annotate(count=Count("id")).order_by("status")))
    # The top of a matter with several folders: each row says which folder on the server it is.
    folder_roots = {names[id_]: root for id_, root in matter.sources.values_list("id", "root")
                    if id_ in names} if names and not folder else {}
    return render(request, "docqa/documents.html", {
        "matter": matter, "folder": folder, "crumbs": crumbs, "state": state, "documents": listed,
        "pages": pages.around(in_folder, len(listed)), "totals": dict(totals),
        "subfolders": [{"name": n, "folder": f"{shown}{n}", "count": sum(c.values()), "failed": c.get("failed", 0),
                        "pending": c.get("pending", 0), "root": folder_roots.get(n, "")} for n, c in sorted(subfolders.items())],
    })


def document_for(request: HttpRequest, slug: str, doc_id: int) -> Document:
    """The matter's document if the user may read the matter; 404 otherwise (ids of other matters too)."""
    matter = matter_for(request.user, slug)
    doc = Document.objects.filter(id=doc_id, matter=matter).select_related("matter", "source", "text", "parent").first()
    if doc is None:
        raise Http404("no such document")
    return doc


@login_required
@require_GET
def document(request: HttpRequest, slug: str, doc_id: int) -> HttpResponse:
    """A document's extracted text (the one citations index), a cited span highlighted."""
    doc = document_for(request, slug, doc_id)
    text = doc.text.text if doc.text else ""
    start, end = span(request, len(text))
    quote = request.GET.get("quote", "")[:2000]
    names = doc.matter.listed_names()
    folder_name = shown_path(names, doc.source_id, "")  # "letters/" with several folders, else ""
    actions.record_audit(f"web:{request.user.get_username()}", "document.view", doc.matter,
                         {"document": doc.id, "path": doc.path, **folder_field(names, doc.source_id),
                          "version": doc.sha256,
                          **({"start": start, "end": end} if end > start else {})})
    return render(request, "docqa/document.html", {
        "matter": doc.matter, "doc": doc, "shown": folder_name + doc.path, "folder_name": folder_name,
        "before": text[:start], "cited": marked(text[start:end], quote),
        "after": text[end:], "page": request.GET.get("page", ""), "on_disk": original_file(doc) is not None,
        "attachments": doc.attachments.order_by("path"), "quote": quote,
        "headers": (doc.text.layout or {}).get("metadata") or {} if doc.text else {},  # a message's From, To, ...
    })


def marked(passage: str, quote: str) -> list[dict[str, object]]:
    """The cited passage in pieces, the quoted words marked: the first mark is the page's #hit."""
    spans = merged(quote_spans(passage, quote)) if quote else []
    if not spans:
        return [{"text": passage, "mark": True, "hit": True}] if passage else []
    pieces: list[dict[str, object]] = []
    at = 0
    for start, end in spans:
        pieces += [{"text": passage[at:start], "mark": False}, {"text": passage[start:end], "mark": True}]
        at = end
    pieces.append({"text": passage[at:], "mark": False})
    next(p for p in pieces if p["mark"])["hit"] = True
    return pieces


def span(request: HttpRequest, length: int) -> tuple[int, int]:
    try:
        start, end = int(request.GET.get("start", 0)), int(request.GET.get("end", 0))
    except ValueError:
        return 0, 0
    start, end = max(0, min(start, length)), max(0, min(end, length))
    return (start, end) if end > start else (0, 0)


def original_file(doc: Document) -> Path | None:
    """The document's file inside its source folder, or None (gone, an attachment, or outside the root)."""
    if doc.parent_id is not None:
        return None
    root = Path(doc.source.root).resolve()
    path = (root / doc.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


@login_required
@require_GET
def document_file(request: HttpRequest, slug: str, doc_id: int) -> HttpResponse:
    """The original file, as it is in the source folder now (inline for PDFs, so #page=N works)."""
    doc = document_for(request, slug, doc_id)
    path = original_file(doc)
    if path is None:
        raise Http404("the original file is not in the source folder any more")
    actions.record_audit(f"web:{request.user.get_username()}", "document.download", doc.matter,
                         {"document": doc.id, "path": doc.path, "version": doc.sha256, "size": path.stat().st_size})
    # PDFs and plain text open in the browser; everything else (HTML included, which could run
    # as a page of this site) downloads. nosniff stops a browser guessing its way to HTML.
    inline = path.suffix.lower() in (".pdf", ".txt")
    response = FileResponse(path.open("rb"), as_attachment=not inline, filename=path.name)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
def runs(request: HttpRequest, slug: str) -> HttpResponse:
    matter = matter_for(request.user, slug)
    actions.finish_completed_runs(matter.runs.filter(status__in=(RunStatus.RUNNING, RunStatus.CANCELLED))
                                  .select_related("matter").order_by("-id")[:50])
    latest = matter.runs.select_related("source").order_by("-id")[:50]
    return render(request, "docqa/runs.html", {
        "matter": matter, "runs": latest, "sources": actions.synced_sources(matter),
        "can_edit": role_in(request.user, matter) in (Role.EDITOR, Role.MANAGER),
        "roots": matter.roots(), "uploads": upload_folder(matter),
        "typed_root": request.session.pop("sync_root", ""),  # a refused folder, kept to be corrected
    })


def run_for(request: HttpRequest, slug: str, run_id: int, role: str = Role.VIEWER) -> IngestRun:
    matter = matter_for(request.user, slug, role)
    run = IngestRun.objects.filter(id=run_id, matter=matter).select_related("matter", "source").first()
    if run is None:
        raise Http404("no such run")
    return run


@login_required
def run_detail(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = run_for(request, slug, run_id)
    live = run.items.exclude(state__in=FINAL_STATES).exists()
    if not live:  # started from the web, nobody waits on it: closed (or, cancelled, counted) now
        actions.finish_completed_runs([run])
    stats = actions.run_stats(run)
    problems = run.items.filter(state__in=(ItemState.FAILED, ItemState.SKIPPED)).order_by("path")[:500]
    context = {
        "matter": run.matter, "run": run, "stats": stats, "live": live, "problems": problems,
        "percent": int(100 * stats.done / stats.work) if stats.work else 100,
        "can_edit": matter_role_at_least(request, run, Role.EDITOR),
        "can_cancel": run.status == RunStatus.RUNNING and live,
        # Only a folder's latest run can be taken up again (actions.do_requeue).
        "newer": IngestRun.objects.filter(source=run.source, id__gt=run.id).exists(),
    }
    return render(request, "docqa/run.html", context)


def matter_role_at_least(request: HttpRequest, run: IngestRun, role: str) -> bool:
    try:
        matter_for(request.user, run.matter.slug, role)
    except Http404:
        return False
    return True


@login_required
def run_failures_csv(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = run_for(request, slug, run_id)
    response = HttpResponse(actions.failures_csv(run), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{run.id}-failures.csv"'
    return response


RUN_ACTIONS = {"cancel": actions.do_cancel_run, "retry": actions.do_retry_failed, "resume": actions.do_resume_run}


@login_required
@require_POST
def run_action(request: HttpRequest, slug: str, run_id: int, action: str) -> HttpResponse:
    """Cancel a run, resume a cancelled one or retry its failed files (editors only)."""
    if action not in RUN_ACTIONS:
        raise Http404("no such action")
    run = run_for(request, slug, run_id, Role.EDITOR)
    try:
        done = RUN_ACTIONS[action](run, f"web:{request.user.get_username()}")
    except DocqaError as exc:  # a newer sync of the folder, or files still in a worker's hands
        messages.error(request, sentence(str(exc)))
    else:
        files = f"{done:,} file{'s' if done != 1 else ''}"
        messages.success(request, f"Cancelled: {files} not yet started will not be indexed; files already being "
                         "indexed finish. Sync the folder again, or resume the run, to do the rest."
                         if action == "cancel" else f"{files} queued again.")
    return redirect("run", slug=slug, run_id=run.id)
