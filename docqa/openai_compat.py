"""An OpenAI-compatible endpoint, so that existing chat clients can ask docqa.

    GET  /v1/models              one model per matter the token's user may read: "docqa/<slug>"
    POST /v1/chat/completions    the model names the matter; the last user message is the question,
                                 earlier user/assistant turns go along as the conversation so far

Answers come back as chat completions (streamed with `"stream": true`) whose text ends with the
sources it cites, each with its quote and verification; the same figures are in a `citations`
field beside `choices` for clients that read it. Authorization and audit are the web UI's: a
bearer token (`manage.py token create`), the matter's viewer role, `question.ask`/`question.answer`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from docqa import actions
from docqa.actions import LATE_STOP_NOTE
from docqa.conversations import Answering, ask_in_background, event_stream
from docqa.models import Matter, Question
from docqa.permissions import readable_matters, role_in
from inference.llm import LlmError, LlmMisconfigured
from ingest.errors import DocqaError

PREFIX = "docqa/"


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
          failed: Exception | None = None) -> JsonResponse:
    """OpenAI's error envelope; for a question that was recorded before it `failed`, docqa's own
    field names it (its stored answer holds the error and any passages kept)."""
    return JsonResponse({"error": {"message": message, "type": kind, "param": None, "code": code},
                         **recorded(failed)}, status=status)


def recorded(failed: Any) -> dict[str, Any]:
    return named(getattr(failed, "question", None), getattr(failed, "conversation", None), "error")


def named(question: int | None, conversation: int | None, mode: str) -> dict[str, Any]:
    """docqa's own field: the recorded question (to find it in the REST API and the audit), its
    conversation and mode; nothing when no question was recorded."""
    return {"docqa": {"question": question, "conversation": conversation, "mode": mode}} if question else {}


def stopped_notes(answer: Any) -> str:
    """A stopped answer's notes, or the note of a stop that came as it was finished, to follow its
    text: an OpenAI client has no field that would say so."""
    notes = answer.notes if answer.mode == "stopped" else [n for n in answer.notes if n == LATE_STOP_NOTE]
    return "".join(f"\n\n{note}" for note in notes)


def token_user(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    return actions.user_for_token(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None


@csrf_exempt
@require_GET
def models(request: HttpRequest) -> JsonResponse:
    user = token_user(request)
    if user is None:
        return error(401, "a docqa API token is required (Authorization: Bearer ...)", code="invalid_api_key")
    return JsonResponse({"object": "list", "data": [
        {"id": PREFIX + m.slug, "object": "model", "created": int(m.created_at.timestamp()), "owned_by": "docqa"}
        for m in readable_matters(user).order_by("slug")]})


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


QUESTION_LIMIT = 4000  # the web form's and the API's limit


def parse(body: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]], str]:
    """(matter slug, question, earlier (question, answer) turns, effort) from a chat request."""
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not isinstance(messages, list) or not messages:
        raise ValueError("`model` (docqa/<matter>) and a non-empty `messages` list are required")
    turns = [(m.get("role"), text_of(m.get("content"))) for m in messages if isinstance(m, dict)]
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise ValueError("the last message must be the user's question")
    if any(role == "user" and len(text) > QUESTION_LIMIT for role, text in turns):
        raise ValueError(f"a question is at most {QUESTION_LIMIT:,} characters, as in the web form and the API")
    history: list[tuple[str, str]] = []
    pending = ""
    for role, text in turns[:-1]:
        if role == "user":
            pending = text
        elif role == "assistant" and pending:
            history.append((pending, text))
            pending = ""
    effort = body.get("reasoning_effort") or settings.LLM_EFFORT
    if effort not in ("low", "medium", "high"):
        raise ValueError("reasoning_effort is one of low, medium, high")
    return model.removeprefix(PREFIX), turns[-1][1], history, effort


def sources_text(question: Question) -> tuple[str, list[dict[str, Any]]]:
    """The text appended to the answer (cited sources with quotes and checks) and the same as data."""
    answer = question.answer
    sent = {s["label"]: s for s in answer.sources}
    citations = [{"label": c.label, "quote": c.quote, "status": c.status, "verified": c.verified,
                  "path": c.path, "page": c.page, "section": c.section, "document": c.document_id,
                  "start": c.start, "end": c.end}
                 for c in answer.citations.all()]
    lines = []
    for label in dict.fromkeys(c["label"] for c in citations):
        s = sent.get(label)
        where = f"{s['path']}{', page ' + str(s['page']) if s and s.get('page') else ''}" if s else "(not a source sent)"
        checks = "; ".join(f"“{c['quote']}” ({c['status']})" if c["quote"] else c["status"]
                           for c in citations if c["label"] == label)
        lines.append(f"[{label}] {where}: {checks}")
    if answer.mode == "search":  # no model: the passages are the result, and a chat client shows only text
        return passages_text(answer.sources), citations
    return ("\n\nSources:\n" + "\n".join(lines)) if lines else "", citations


PASSAGE_CHARS = 500


def passages_text(sources: list[dict[str, Any]]) -> str:
    """A search-only result's passages, best first: where each is, and its opening words."""
    if not sources:
        return ""
    lines = []
    for s in sources:
        where = s["path"] + (f", page {s['page']}" if s.get("page") else "") + (f" § {s['section']}" if s.get("section") else "")
        text = " ".join(str(s.get("text", "")).split())
        lines.append(f"[{s['label']}] {where}\n{text[:PASSAGE_CHARS]}{'…' if len(text) > PASSAGE_CHARS else ''}")
    return "\n\nPassages:\n" + "\n\n".join(lines)


def completion(question: Question, model: str) -> dict[str, Any]:
    answer = question.answer
    extra, citations = sources_text(question)
    usage = answer.usage or {}
    # A stopped answer (its asker stopped it through the REST API, found as pending there) says so.
    said = (answer.text + stopped_notes(answer)).strip()
    return {
        "id": f"chatcmpl-docqa-{question.id}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "citations": citations, **named(question.id, question.conversation_id, answer.mode),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": said + extra},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0),
                  "total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)},
    }


@csrf_exempt
@require_POST
def chat_completions(request: HttpRequest) -> HttpResponse:
    user = token_user(request)
    if user is None:
        return error(401, "a docqa API token is required (Authorization: Bearer ...)", code="invalid_api_key")
    try:
        body = json.loads(request.body or b"{}")
        slug, text, history, effort = parse(body if isinstance(body, dict) else {})
    except (ValueError, json.JSONDecodeError) as exc:
        return error(400, str(exc))
    matter = Matter.objects.filter(slug=slug).first()
    if matter is None or role_in(user, matter) is None:  # the same answer whether it exists or not
        return error(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                     code="model_not_found")
    model = PREFIX + matter.slug
    ask = {"actor": f"api:{user.get_username()}", "user": user, "effort": effort, "history": history}
    if body.get("stream"):
        return stream(matter, text, ask, model)
    try:
        outcome = actions.do_ask(matter, text, **ask)
    except LlmMisconfigured as exc:  # the window is too small for the effort: as the REST API, a 400
        return error(400, str(exc), failed=exc)
    except LlmError as exc:
        return error(502, str(exc), kind="api_error", failed=exc)
    except DocqaError as exc:
        return error(400, str(exc), failed=exc)
    return JsonResponse(completion(Question.objects.select_related("answer").get(id=outcome.question.id), model))


def stream(matter: Matter, text: str, ask: dict[str, Any], model: str) -> StreamingHttpResponse:
    return event_stream(chunks(ask_in_background(matter, text, **ask), model))


def chunks(answering: Answering, model: str) -> Iterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": "chatcmpl-docqa", "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        for item in answering.items():
            if item is None:  # reasoning can run for minutes with no content: keep proxies from closing
                yield ": keep-alive\n\n"
                continue
            kind, data = item
            if kind == "content":
                yield chunk({"content": str(data)})
            elif kind == "error":
                body = {"error": {"message": data["message"], "type": "api_error"},
                        **named(data.get("question"), data.get("conversation"), "error")}
                yield f"data: {json.dumps(body)}\n\n"
            elif kind == "done":
                close_old_connections()
                question = Question.objects.select_related("answer").get(id=data["question"])
                extra, citations = sources_text(question)
                # A stop asked for through the REST API ends the stream with the note, as a whole reply has it.
                yield chunk({"content": stopped_notes(question.answer) + extra}, "stop", citations=citations,
                            **named(question.id, question.conversation_id, question.answer.mode))
        yield "data: [DONE]\n\n"
    finally:
        answering.close()  # a client that hangs up stops the answer (and the model)

