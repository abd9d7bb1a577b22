"""Answer one question: retrieve within the allowed matters, pack, generate, verify.

Without a language model the result is search-only, and its sources are exactly what would
have been sent to the model at the same budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference.citations import CheckedCitation, check_citations
from inference.llm import Cancelled, GenerationFailed, StopSignal, VllmClient
from inference.pack import Packing, best_first, pack_sources
from inference.prompt import (
    HARMONY_OVERHEAD,
    INSTRUCTIONS,
    SAFETY_MARGIN,
    Turn,
    build_messages,
    history_tokens,
    user_message,
)
from inference.rerank import Reranker
from inference.retrieve import retrieve
from ingest.embed import Embedder
from ingest.errors import DocqaError
from ingest.store import Hit, VectorStore
from ingest.tokens import count_tokens


class ReasoningExhausted(GenerationFailed):
    """finish_reason "length" with no content: reasoning used the whole output budget."""

    kind = "reasoning"


class Stopped(DocqaError):
    """The asker stopped the answer (the Stop button, the API's stop call, or a client that left).

    Raised by the caller's event sink; when it comes while the model writes, the request to the
    model is closed (vLLM then aborts it and frees the GPU) and `result` holds what was written."""

    def __init__(self, message: str = "Stopped by the asker") -> None:
        super().__init__(message)
        self.result: AnswerResult | None = None


SEARCH_ONLY_NOTE = (
    "No language model is connected, so this is a search-only result: the passages listed with it, best "
    "first, are those a model would be sent at this question's token budget (a model's own window may "
    "hold more). An administrator can connect one."
)
EventSink = Callable[[str, Any], None]


def stopped_note(reason: str, written: bool) -> str:
    """What a stopped answer says of itself, once the model was sent the passages (`written`:
    it had begun the answer)."""
    if written:
        return f"{reason} before the model finished: the answer is incomplete."
    return f"{reason} before the model wrote any of its answer: the passages it was sent are kept."


@dataclass
class AnswerResult:
    mode: str  # "llm", "search", or "stopped" (the asker stopped the model mid-answer)
    answer: str
    packing: Packing
    citations: list[CheckedCitation] = field(default_factory=list)
    reasoning: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    finish_reason: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "answer": self.answer,
            "sources": [s.as_dict() for s in self.packing.sources],
            "citations": [c.as_dict() for c in self.citations],
            "dropped": self.packing.dropped,
            "usage": self.usage,
            "notes": self.notes,
        }

    def with_reasoning(self) -> dict[str, Any]:
        """The result plus the model's reasoning: only on request, never in exports or citations."""
        return {**self.as_dict(), "reasoning": self.reasoning}


def source_budget(budget: int, question: str) -> int:
    """Tokens left for the sources block once instructions, question and wrapping are counted."""
    fixed = count_tokens(INSTRUCTIONS) + count_tokens(user_message("", question))
    return max(0, budget - fixed - HARMONY_OVERHEAD - SAFETY_MARGIN)


def fitting_history(history: Sequence[Turn], budget: int, question: str) -> list[Turn]:
    """The earlier turns sent with `question`: they may take at most half the room for sources,
    and the oldest go first."""
    kept = list(history)
    while kept and history_tokens(kept, count_tokens) > source_budget(budget, question) // 2:
        kept.pop(0)
    return kept


def retrieval_limit(tokens: int) -> int:
    # Chunks average ~170 o200k tokens: fetch enough candidates to fill the budget, and a few more.
    return max(20, min(2000, tokens // 120 + 10))


def answer_question(
    question: str,
    *,
    matter_ids: list[int],
    embedder: Embedder,
    store: VectorStore,
    llm: VllmClient | None,
    budget: int,
    effort: str = "medium",
    max_completion_tokens: int = 8192,
    cache_salt: str | None = None,
    on_event: EventSink = lambda kind, data: None,
    retrieval: str = "hybrid",
    history: Sequence[Turn] = (),
    previous: str | None = None,
    reranker: Reranker | None = None,
    documents: list[int] | None = None,
    on_packed: Callable[[Packing], None] = lambda packing: None,
    stop: StopSignal | None = None,
    shown_paths: Callable[[list[Hit]], None] = lambda hits: None,
) -> AnswerResult:
    """Retrieve, pack and (with `llm`) generate and check citations. `history` holds the earlier
    turns sent to the model; `previous`, the question asked just before (the last of `history`'s
    when not given), which a follow-up is searched together with. `on_packed` is given the
    packing before the model is asked (what it was sent, should it then fail). Setting `stop`
    hangs up on the model (see Stopped). `shown_paths` renames the hits found before they are
    packed: a matter with several folders names each document after its folder too, in the
    sources' label lines (and so in their counts), the citations and the list of what was left out."""
    on_event("status", "retrieving")
    history = fitting_history(history, budget, question)
    room = max(0, source_budget(budget, question) - history_tokens(history, count_tokens))
    # A follow-up ("and the notice period?") is searched together with the question before it.
    previous = previous if previous is not None else (history[-1][0] if history else None)
    search_text = f"{previous}\n{question}" if previous else question
    found = retrieve(search_text, matter_ids=matter_ids, embedder=embedder, store=store,
                     limit=retrieval_limit(room), mode=retrieval, room=room, reranker=reranker, documents=documents)
    shown_paths(found.hits)
    packing = pack_sources(found.hits, room, count_tokens)
    if not packing.sources:
        # Asking the model with no sources would come back "the sources do not say", which is
        # not true: none was read.
        if not found.hits:
            if documents is not None:
                raise DocqaError("nothing to answer from: none of the chosen documents is indexed yet")
            if not store.count(matter_ids):
                raise DocqaError("nothing to answer from: no document is indexed in this matter yet")
            raise DocqaError(f"nothing matched: the question has no words to search for in {retrieval} retrieval")
        smallest = min(int(d.get("tokens") or 0) for d in packing.dropped) if packing.dropped else 0
        raise DocqaError(f"no passage fits a budget of {budget:,} tokens: the instructions and the question leave "
                         f"{room:,} tokens for sources, and the smallest passage found needs about {smallest:,}; "
                         "give a larger budget")
    on_packed(packing)
    on_event("status", f"packed {len(packing.sources)} sources / {packing.tokens} tokens")
    usage: dict[str, Any] = {"budget": budget, "source_tokens": packing.tokens}
    if llm is None:
        # Read by a person, not a model: best first (the model gets them in the canonical order).
        best_first(packing.sources)
        return AnswerResult("search", SEARCH_ONLY_NOTE, packing, usage=usage)
    on_event("status", "generating")
    retried = f"At {effort} effort the model spent its whole output budget reasoning, so it was asked again at low effort."
    notes: list[str] = []
    try:
        try:
            result = generate(question, packing, llm, effort, max_completion_tokens, on_event, cache_salt, history,
                              stop)
        except ReasoningExhausted as exc:
            if effort == "low":
                raise out_of_room(exc, "at low effort already") from exc
            # VLLM.md: reasoning can eat the whole output budget; retry once with less of it.
            on_event("status", "reasoning used the whole output budget; retrying with low effort")
            notes.append(retried)
            try:
                result = generate(question, packing, llm, "low", max_completion_tokens, on_event, cache_salt, history,
                                  stop)
            except ReasoningExhausted as again:
                raise out_of_room(again, f"at {effort} effort and again at low effort") from again
            result.notes.append(retried)
    except Stopped as stopped:  # what was written is kept with the figures known so far
        if stopped.result is not None:
            stopped.result.usage = {**usage, **stopped.result.usage}
            stopped.result.notes[:0] = notes
        raise
    if result.finish_reason == "length":
        result.notes.append("The answer was cut off: the model reached its output limit before finishing.")
    result.usage = {**usage, **result.usage}
    return result


def out_of_room(exc: ReasoningExhausted, tried: str) -> ReasoningExhausted:
    return ReasoningExhausted(f"{exc} {tried}; give it more room to write (DOCQA_LLM_RESERVED_OUTPUT) "
                              "or ask a narrower question")


def finish(result: AnswerResult, content: list[str], reasoning: list[str], first_token_ms: int | None,
           started: float) -> None:
    result.answer = "".join(content).strip()
    result.reasoning = "".join(reasoning)
    details = result.usage.get("prompt_tokens_details") or {}
    # vLLM's prefix cache: prompt tokens served from cache (with --enable-prompt-tokens-details).
    result.usage["cached_tokens"] = int(details.get("cached_tokens") or 0)
    result.usage["first_token_ms"] = first_token_ms
    result.usage["latency_ms"] = int((time.monotonic() - started) * 1000)


def generate(
    question: str,
    packing: Packing,
    llm: VllmClient,
    effort: str,
    max_completion_tokens: int,
    on_event: EventSink,
    cache_salt: str | None = None,
    history: Sequence[Turn] = (),
    stop: StopSignal | None = None,
) -> AnswerResult:
    started = time.monotonic()
    content: list[str] = []
    reasoning: list[str] = []
    result = AnswerResult("llm", "", packing, model=llm.model)
    messages = build_messages(packing.sources, question, history)
    stream = llm.stream_chat(
        messages, max_completion_tokens=max_completion_tokens, effort=effort, cache_salt=cache_salt, stop=stop
    )
    first_token_ms = None
    try:
        try:
            for event in stream:
                if event.kind in ("content", "reasoning") and first_token_ms is None:
                    first_token_ms = int((time.monotonic() - started) * 1000)
                # Handed on first: on a stop the answer kept is what the asker was shown, no more.
                on_event(event.kind, event.text or event.data)
                if event.kind == "content":
                    content.append(event.text)
                elif event.kind == "reasoning":
                    reasoning.append(event.text)
                elif event.kind == "finish":
                    result.finish_reason = event.text
                elif event.kind == "usage":
                    result.usage = dict(event.data)
        finally:
            stream.close()  # hangs up on the model server whatever happened (vLLM aborts the request)
    except (Stopped, Cancelled) as exc:  # seen at an event, or hung up on by the signal while none came
        if isinstance(exc, Cancelled) and not exc.delivered:
            # Stopped before this request was sent: the model was not asked by it (the caller
            # knows whether an earlier attempt was).
            raise Stopped(str(exc)) from exc
        stopped = exc if isinstance(exc, Stopped) else Stopped(str(exc))
        result.mode, result.finish_reason = "stopped", "stopped"
        finish(result, content, reasoning, first_token_ms, started)
        # What was written is kept and checked like any answer: a quote cut off by the stop fails.
        result.citations = check_citations(result.answer, {s.label: s.text for s in packing.sources})
        result.notes.append(stopped_note(str(stopped), bool(result.answer)))
        stopped.result = result
        if stopped is exc:
            raise
        raise stopped from exc
    finish(result, content, reasoning, first_token_ms, started)
    if not result.answer:
        if result.finish_reason == "length":
            raise ReasoningExhausted("the model used its whole output budget on reasoning and wrote no answer")
        raise GenerationFailed("the model returned no answer text")
    result.citations = check_citations(result.answer, {s.label: s.text for s in packing.sources})
    return result
