"""Audit review for auditors: filter and search the trail, replay an answer, export (streamed).

Auditors are users holding Django's `docqa.view_auditevent` permission (give it to an "auditors"
group in the admin). Reviewing the trail does not make them readers of any matter: the replay
page shows what the trail recorded, and the packed sources only to those who may read the
matter. Every export is itself audited.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime, time
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from docqa.actions import answer_as_sent, record_audit
from docqa.faults import plain, says_more
from docqa.models import Answer, AuditEvent, Question, sha256_text
from docqa.permissions import role_in
from docqa.retention import stored_text_sha256
from ingest.errors import DocqaError

AUDITOR = "docqa.view_auditevent"
FILTERS = ("actor", "matter", "action", "question", "since", "until", "q")


class BadFilter(DocqaError):
    """A filter that cannot be applied (a date that is not one): refused, never dropped, since
    dropping it would show an auditor, or export, more of the trail than was asked for."""


def filtered(request: HttpRequest) -> tuple[QuerySet[AuditEvent], dict[str, str]]:
    """The events matching the request's filters, newest first, and the filters as given.
    Raises BadFilter for a filter that cannot be applied."""
    given = {k: request.GET.get(k, "").strip() for k in FILTERS}
    events = AuditEvent.objects.select_related("matter").order_by("-id")
    if given["actor"]:
        events = events.filter(actor__icontains=given["actor"])
    if given["matter"]:
        events = events.filter(matter__slug=given["matter"])
    if given["action"]:
        events = events.filter(action__startswith=given["action"])
    if given["question"]:  # every event of one question: asked, stopped, answered (or failed)
        number = re.search(r"\d+", given["question"])  # "42", "#42", "question 42"
        events = events.filter(detail__question=int(number.group()[:18])) if number else events.none()
    for key, lookup, clock in (("since", "created_at__gte", time.min), ("until", "created_at__lte", time.max)):
        if given[key]:
            try:
                day = datetime.strptime(given[key], "%Y-%m-%d").date()
            except ValueError:
                raise BadFilter(f"{'From' if key == 'since' else 'To'} ({key}): {given[key][:40]!r} is not a date; "
                                "write it as YYYY-MM-DD, e.g. 2026-01-31") from None
            events = events.filter(**{lookup: timezone.make_aware(datetime.combine(day, clock))})
    if given["q"]:  # full text over what was recorded: questions, answers, paths, names
        events = events.annotate(body=Cast("detail", TextField())).filter(body__icontains=given["q"])
    return events, given


@require_GET
@login_required
@permission_required(AUDITOR, raise_exception=True)
def review(request: HttpRequest) -> HttpResponse:
    try:
        events, given = filtered(request)
        error = ""
    except BadFilter as exc:  # shown above an empty list, the filters kept to be corrected
        events, given, error = AuditEvent.objects.none(), {k: request.GET.get(k, "").strip() for k in FILTERS}, str(exc)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    # The filters again for the export and paging links, encoded: "&" or "#" in a search is text.
    query = urlencode({k: v for k, v in given.items() if v})
    return render(request, "docqa/audit.html", {"page": page, "given": given, "query": query, "error": error,
                                                "actions": AuditEvent.objects.values_list("action", flat=True)
                                                .order_by("action").distinct()})


@require_GET
@login_required
@permission_required(AUDITOR, raise_exception=True)
def replay(request: HttpRequest, event_id: int) -> HttpResponse:
    """An answer as the trail recorded it, checked against the stored answer and sources."""
    event = AuditEvent.objects.select_related("matter").filter(id=event_id).first()
    if event is None:
        raise Http404("no such event")
    detail = event.detail
    if event.action != "question.answer":  # any other event: what it recorded, field by field
        record_audit(f"web:{request.user.get_username()}", "audit.replay", event.matter, {"event": event.id})
        # Earlier turns a client sent with a question hold answers: shown, as on the replay page,
        # only to an auditor who is a member of the matter (the hash chain proves them either way).
        member = event.matter is not None and role_in(request.user, event.matter) is not None
        fields = [(k, "[earlier turns: shown to members of the matter only]" if k == "history" and not member
                   else v if isinstance(v, str) else json.dumps(v, indent=2, ensure_ascii=False))
                  for k, v in detail.items()]
        return render(request, "docqa/audit_event.html", {"event": event, "fields": fields,
                                                          "verifies": event.verifies()})
    answer = Answer.objects.select_related("question").filter(question_id=detail.get("question")).first()
    may_read = event.matter is not None and role_in(request.user, event.matter) is not None
    gone = answer is not None and answer.question.expired_at is not None  # retention replaced texts by hashes
    stored = {s["label"]: s for s in (answer.sources if answer else [])}
    sources = []
    for recorded in detail.get("sources", []):
        text = stored.get(recorded["label"], {}).get("text")
        matches = text is not None and stored_text_sha256(text, gone) == recorded.get("sha256")
        sources.append({**recorded, "matches": matches, "text": text if may_read and not gone else None})
    record_audit(f"web:{request.user.get_username()}", "audit.replay", event.matter, {"event": event.id})
    return render(request, "docqa/audit_replay.html", {
        "event": event, "detail": detail, "sources": sources, "may_read": may_read,
        "turns": replayed_turns(detail, event.matter, may_read),
        "answer_matches": answer is not None and recorded_sha256(detail.get("answer")) == stored_text_sha256(answer.text, gone),
        "reasoning": answer.reasoning if answer is not None else "",
        # What the asker was shown for a failure (docqa.faults), beside the operator's message.
        "told": told_asker(detail),
    })


def told_asker(detail: dict[str, Any]) -> str:
    """What the asker was told for a failure (docqa.faults), when it is not the operator's message itself."""
    error = str(detail.get("error") or "")
    said = plain(str(detail.get("error_kind") or ""), error) if error else ""
    return said if says_more(error, said) else ""


def replayed_turns(detail: dict[str, Any], matter: Any, may_read: bool) -> list[dict[str, Any]]:
    """The earlier turns the model was sent with the question, each checked against what is
    stored: a turn of the conversation against its question and answer (as a follow-up sends
    it), a turn the client sent against the question's `question.ask` event, which holds it."""
    recorded = detail.get("turns_sent") or []
    ids = [t["question"] for t in recorded if t.get("question")]
    stored = {q.id: q for q in Question.objects.filter(id__in=ids, matter=matter).select_related("answer")}
    events = {e.detail.get("question"): e.id for e in AuditEvent.objects.filter(action="question.answer", matter=matter)
              .filter(detail__question__in=ids).only("id", "detail")} if ids else {}
    asked = AuditEvent.objects.filter(action="question.ask", matter=matter, detail__question=detail.get("question")
                                      ).first() if len(ids) < len(recorded) else None
    client = (asked.detail.get("history") or []) if asked else []
    # The turns a client sent that fitted beside the sources: the latest of them.
    from_client: Iterator[dict[str, Any]] = iter(client[len(client) - (len(recorded) - len(ids)):])
    turns = []
    for turn in recorded:
        question_id = turn.get("question")
        if question_id:
            found = stored.get(question_id)
            answer = getattr(found, "answer", None) if found else None
            gone = found is not None and found.expired_at is not None
            text = found.text if found else None
            # Without an answer (still being answered when the follow-up came, or never finished)
            # it went as NO_ANSWER, as the follow-up sent it.
            said = answer_as_sent(getattr(answer, "mode", None), getattr(answer, "text", None)) if found else None
            hashes = (stored_text_sha256(text, gone) if found else None, stored_text_sha256(said, gone) if said else None)
        else:  # sent by the client (the OpenAI-compatible endpoint), kept with the question
            entry = next(from_client, {})
            text, said, gone = entry.get("text"), entry.get("answer"), isinstance(entry.get("text"), dict)
            hashes = (recorded_sha256(text) if entry else None, recorded_sha256(said) if entry else None)
        turns.append({
            "question": question_id, "event": events.get(question_id),
            "matches": hashes == (turn.get("question_sha256"), turn.get("answer_sha256")),
            "text": text if may_read and not gone else None, "answer": said if may_read and not gone else None,
            "expired": gone, "missing": bool(question_id) and found is None,
        })
    return turns


@require_GET
@login_required
@permission_required(AUDITOR, raise_exception=True)
def export(request: HttpRequest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """The filtered events as CSV or JSON Lines, streamed row by row (never all in memory)."""
    if fmt not in ("csv", "jsonl"):
        raise Http404("csv or jsonl")
    try:
        events, given = filtered(request)
    except BadFilter as exc:
        return HttpResponse(f"{exc}\n", status=400, content_type="text/plain; charset=utf-8")
    record_audit(f"web:{request.user.get_username()}", "audit.export", None,
                 {"format": fmt, "filters": {k: v for k, v in given.items() if v}})
    rows = export_rows(events)
    stream = csv_lines(rows) if fmt == "csv" else json_lines(rows)
    response = StreamingHttpResponse(stream, content_type="text/csv" if fmt == "csv" else "application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="docqa-audit.{fmt}"'
    return response


def recorded_sha256(value: Any) -> str:
    """The sha256 of a content field as the trail holds it (its text, or its expired form)."""
    if isinstance(value, dict) and set(value) == {"sha256"}:
        return str(value["sha256"])
    return sha256_text(str(value or ""))


COLUMNS = ["id", "created_at", "actor", "matter", "action", "detail", "prev_hash", "hash"]
CHUNK = 500  # rows fetched at a time (a server-side cursor on PostgreSQL)


def export_rows(events: QuerySet[AuditEvent]) -> Any:
    """Rows for export with `detail` as the database's own JSON text: never parsed, re-encoded."""
    return events.annotate(detail_text=Cast("detail", TextField())).values_list(
        "id", "created_at", "actor", "matter__slug", "action", "detail_text", "prev_hash", "hash")


def csv_lines(rows: Any) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows.iterator(chunk_size=CHUNK):
        writer.writerow([row[0], row[1].isoformat(), *row[2:]])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_lines(rows: Any) -> Iterator[str]:
    lines = []
    for row in rows.iterator(chunk_size=CHUNK):
        head = json.dumps({"id": row[0], "created_at": row[1].isoformat(), "actor": row[2], "matter": row[3],
                           "action": row[4], "prev_hash": row[6], "hash": row[7]})
        lines.append(f'{head[:-1]}, "detail": {row[5]}}}\n')
        if len(lines) >= 200:
            yield "".join(lines)
            lines = []
    yield "".join(lines)
