"""Asking in the web UI: conversations, the answer streamed over server-sent events, follow-ups.

The ask form posts to `ask_stream` from a few lines of JavaScript and reads the response as a
stream of server-sent events: `asked` (the recorded question's id: from here on the page's Stop
button can stop it), `status` (retrieving, packed N sources / T tokens, generating),
`reasoning` and `token` (text as the model writes it), then `done` with the question's id (the
page then fetches the answer's rendered block) or `error` with a message for the user. Without
JavaScript the same form posts to the ask page and gets the whole page back.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db import close_old_connections, connection, connections
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from docqa import actions
from docqa.faults import kind_of, plain, recorded_error, says_more, sees_detail
from docqa.forms import AskForm
from docqa.models import Answer, Conversation, Matter, Question, shown_path
from docqa.permissions import matter_for
from ingest.errors import DocqaError

logger = logging.getLogger(__name__)
STREAMED = {"asked": "asked", "status": "status", "reasoning": "reasoning", "content": "token"}
HEARTBEAT_S = 15  # a comment line this often keeps proxies from closing a quiet stream


def own_conversation(request: HttpRequest, matter: Matter, conversation_id: int | None) -> Conversation | None:
    """The user's own conversation in this matter; 404 for anyone else's (ids guessed or swapped)."""
    if not conversation_id:
        return None
    conversation = Conversation.objects.filter(id=conversation_id, matter=matter, user=request.user).first()
    if conversation is None:
        raise Http404("no such conversation")
    return conversation


def scope_of(form: AskForm) -> list[str] | None:
    scope = [p for p in (form.cleaned_data.get("scope") or "").splitlines() if p.strip()]
    return scope or None


def turns(conversation: Conversation | None) -> list[dict[str, Any]]:
    """The conversation's questions with their answers, citations and sources, oldest first."""
    if conversation is None:
        return []
    questions = (Question.objects.filter(conversation=conversation).select_related("answer")
                 .prefetch_related("answer__citations").order_by("id"))
    return [turn(q) for q in questions]


def turn(question: Question) -> dict[str, Any]:
    answer: Answer | None = getattr(question, "answer", None)
    if answer is None:
        return {"question": question, "answer": None}
    citations = list(answer.citations.all())
    cited = {c.label for c in citations}
    by_label: dict[str, list[Any]] = {}
    for c in citations:
        by_label.setdefault(c.label, []).append(c)
    sources = [{**s, "citations": by_label.get(s["label"], [])} for s in answer.sources]
    sent = {s["label"] for s in answer.sources}
    unknown = [c for c in citations if c.label not in sent]  # markers naming no source: shown, never dropped
    said = told(answer)
    return {
        "question": question, "answer": answer, "citations": citations,
        # A failure in plain words, and the operator's own message when it says more (shown to staff).
        "error": said, "detail": answer.error if says_more(answer.error, said) else "",
        "used": [s for s in sources if s["label"] in cited],
        "unused": [s for s in sources if s["label"] not in cited],
        "unknown": unknown,
        "sources": sources,
        "markdown": answer_markdown(question, answer, sources, unknown),
        "plain": answer_plain(question, answer, sources, unknown),
    }


def unknown_line(citation: Any) -> str:
    return f"[{citation.label}] names no source that was sent (unverified)"


def source_line(s: dict[str, Any]) -> str:
    where = s["path"] + (f", page {s['page']}" if s.get("page") else "") + (f", § {s['section']}" if s.get("section") else "")
    checks = "; ".join(f"“{c.quote}” ({c.status})" if c.quote else c.status for c in s.get("citations", []))
    return f"[{s['label']}] {where}" + (f": {checks}" if checks else "")


def stopped_lines(answer: Answer) -> list[str]:
    """A stopped answer's copy says it is incomplete, as the page does."""
    return [*answer.notes, ""] if answer.mode == "stopped" else []


def told(answer: Answer) -> str:
    """A failed answer's copy says what the page says (the operator's message stays out of it)."""
    return plain(answer.error_kind, answer.error) if answer.error else ""


def copied_sources(answer: Answer, sources: list[dict[str, Any]], unknown: list[Any]) -> tuple[str, list[str]]:
    """What a copy lists under the answer: the sources cited, or, for a search-only result (and a
    failed answer whose passages were kept), the passages themselves, which are its content."""
    if answer.mode == "search" or (answer.error and sources and not any(s.get("citations") for s in sources)):
        return "Passages", [f"{source_line(s)}: {excerpt(s.get('text'))}" for s in sources]
    return "Sources", [source_line(s) for s in sources if s.get("citations")] + [unknown_line(c) for c in unknown]


PASSAGE_CHARS = 500  # of each passage a search-only copy carries, as the OpenAI-compatible reply does


def excerpt(text: Any) -> str:
    if not isinstance(text, str):  # retention replaced it by its hash
        return "[expired]"
    flat = " ".join(text.split())
    return flat[:PASSAGE_CHARS] + ("…" if len(flat) > PASSAGE_CHARS else "")


def answer_markdown(question: Question, answer: Answer, sources: list[dict[str, Any]], unknown: list[Any]) -> str:
    heading, listed = copied_sources(answer, sources, unknown)
    lines = [f"**Q:** {question.text}", "", answer.text or told(answer), "", *stopped_lines(answer)]
    if listed:
        lines += [f"**{heading}**", ""] + [f"- {line}" for line in listed]
    return "\n".join(lines).strip() + "\n"


def answer_plain(question: Question, answer: Answer, sources: list[dict[str, Any]], unknown: list[Any]) -> str:
    heading, listed = copied_sources(answer, sources, unknown)
    lines = [f"Q: {question.text}", "", answer.text or told(answer), "", *stopped_lines(answer)]
    if listed:
        lines += [f"{heading}:", *listed]
    return "\n".join(lines).strip() + "\n"


def page_context(request: HttpRequest, matter: Matter, conversation: Conversation | None,
                 form: AskForm | None = None) -> dict[str, Any]:
    history = list(Conversation.objects.filter(matter=matter, user=request.user).order_by("-id")
                   .prefetch_related(Prefetch("questions", Question.objects.order_by("id").select_related("answer").only(
                       "id", "text", "conversation_id", "answer__error", "answer__mode")))[:30])  # not the passages
    for listed in history:  # the list badges a conversation whose last question failed or was stopped
        asked = list(listed.questions.all())
        last = getattr(asked[-1], "answer", None) if asked else None
        listed.ended = last.ended if last else ""  # type: ignore[attr-defined]
    # The scope box offers the folders as citations name them (after their folder's, with several).
    names = matter.folder_names()
    shown = (shown_path(names, source, path) for source, path in matter.documents.filter(status="indexed")
             .values_list("source_id", "path")[:20000])
    folders = sorted({d.rsplit("/", 1)[0] for d in shown if "/" in d} | set(names.values()))
    asked = turns(conversation)
    initial: dict[str, Any] = {"conversation": conversation.id if conversation else None}
    if asked:  # a follow-up is asked at the effort, and in the folder, of the question before it
        last = asked[-1]["question"]
        initial["effort"] = last.effort
        if len(last.scope) == 1:  # the box holds one (the API may have given several)
            initial["scope"] = matter.renamed_scope(last.scope[0], last.created_at)
    return {
        "matter": matter, "conversation": conversation, "turns": asked,
        "form": form or AskForm(initial=initial),
        "history": history, "folders": folders, "operator": sees_detail(request.user),
    }


@login_required
def conversation_page(request: HttpRequest, slug: str, conversation_id: int) -> HttpResponse:
    matter = matter_for(request.user, slug)
    conversation = own_conversation(request, matter, conversation_id)
    return render(request, "docqa/ask.html", page_context(request, matter, conversation))


@login_required
@require_GET
def answer_block(request: HttpRequest, slug: str, question_id: int) -> HttpResponse:
    """One question with its answer, citations and sources panel (what the stream ends with)."""
    matter = matter_for(request.user, slug)
    question = (Question.objects.filter(id=question_id, matter=matter, user=request.user)
                .select_related("answer").first())
    if question is None:
        raise Http404("no such question")
    return render(request, "docqa/_turn.html", {"matter": matter, "t": turn(question),
                                                "operator": sees_detail(request.user)})


@login_required
@require_POST
def stop(request: HttpRequest, slug: str, question_id: int) -> JsonResponse:
    """The Stop button: the question's answering thread hangs up on the model (see do_stop for
    when) and records what was written. Only the asker may stop their own question."""
    matter = matter_for(request.user, slug)
    question = Question.objects.filter(id=question_id, matter=matter, user=request.user).first()
    if question is None:
        raise Http404("no such question")
    if actions.do_stop(question, actor=f"web:{request.user.get_username()}"):
        return JsonResponse({"detail": "stopping"}, status=202)
    return JsonResponse({"detail": "that question has already been answered or stopped"}, status=409)


@login_required
@require_POST
def ask_stream(request: HttpRequest, slug: str) -> HttpResponse:
    matter = matter_for(request.user, slug)
    form = AskForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    conversation = own_conversation(request, matter, form.cleaned_data.get("conversation"))
    events = ask_in_background(
        matter, form.cleaned_data["question"], detail=False, actor=f"web:{request.user.get_username()}",
        user=request.user,
        budget=form.cleaned_data["budget"], effort=form.cleaned_data["effort"], conversation=conversation,
        scope=scope_of(form),
    )
    return event_stream(sse(events))


def event_stream(lines: Iterator[str]) -> StreamingHttpResponse:
    """A server-sent-events response (the web UI's, the API's and the OpenAI-compatible one)."""
    response = StreamingHttpResponse(lines, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def release_connection() -> None:
    """Hand this request thread's database connection back before a long stream: the answer's own
    thread has one, and a web worker should not hold two per question for minutes."""
    if not connection.in_atomic_block:
        connection.close()


class Answering:
    """A question being answered in a thread of its own: its events (then `done` or `error`, then
    None) come through `events`; `watch` stops it when its client leaves or its asker says so."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.watch = actions.StopWatch()
        self.finished = False

    def emit(self, kind: str, data: Any) -> None:
        self.events.put((kind, data))

    def items(self) -> Iterator[tuple[str, Any] | None]:
        """The events as they come, and None after each quiet HEARTBEAT_S."""
        while True:
            try:
                item = self.events.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                yield None
                continue
            if item is None:
                self.finished = True
                return
            yield item

    def close(self) -> None:
        """The response is closed: by the end of the answer, or because its client left (the
        server closes the stream's generator when a write fails), which stops the answer, and so
        the model. Called from the stream's own `finally`."""
        if not self.finished:
            self.watch.leave()


def ask_in_background(matter: Matter, question: str, *, detail: bool = True, **ask: Any) -> Answering:
    """Answer in a thread of its own, streaming its events through the returned `Answering`.

    The web UI, the API and the OpenAI-compatible endpoint stream from here; a failure the answer
    path reports arrives as `error` with its message, never as a stack trace: the operator's
    message with `detail` (the API), else the plain words of docqa.faults, with the operator's
    as `detail` only for staff. It also names the fault's `kind` and its `plain` words. A question
    stopped (by its asker, or because its client left) ends with `done`, its answer recorded as
    it stood.
    """
    answering = Answering()
    events = answering.events
    conversation = ask.get("conversation")
    staff = sees_detail(ask.get("user"))

    def work() -> None:
        close_old_connections()
        try:
            outcome = actions.do_ask(matter, question, on_event=answering.emit, watch=answering.watch, **ask)
            events.put(("done", {"question": outcome.question.id, "conversation": outcome.question.conversation_id,
                                 "mode": outcome.result.mode if outcome.result else ""}))
        except Exception as exc:  # every failure the answer path reports, in its own words
            if not isinstance(exc, DocqaError):
                logger.exception("answering a question failed")
            kind, question_id = kind_of(exc), getattr(exc, "question", None)
            said, operators = plain(kind, str(exc)), recorded_error(exc)
            # An error docqa did not raise on purpose never shows its own words but to staff.
            message = operators if detail and isinstance(exc, DocqaError) else said
            # With the question's id the page shows the recorded turn: the error, and the passages
            # kept when it was the model that failed.
            events.put(("error", {
                "message": message, "kind": kind, "plain": said, "question": question_id,
                "conversation": getattr(exc, "conversation", None) or (conversation.id if conversation else None),
                **({"detail": operators} if staff and message != operators and says_more(operators, said) else {})}))
        finally:
            events.put(None)
            connections.close_all()  # this thread's own database connection

    threading.Thread(target=work, name="docqa-ask", daemon=True).start()
    release_connection()
    return answering


def sse(answering: Answering) -> Iterator[str]:
    try:
        yield ": answering\n\n"
        for item in answering.items():
            if item is None:
                yield ": still working\n\n"
                continue
            kind, data = item
            name = STREAMED.get(kind, kind if kind in ("done", "error") else "")
            if not name:
                continue
            payload = json.dumps(data if isinstance(data, dict) else {"text": str(data)})
            yield f"event: {name}\ndata: {payload}\n\n"
    finally:
        answering.close()
