"""The prompt: fixed instructions first, sources in canonical order, the question last.

That order keeps the leading prefix identical across follow-ups over the same sources, so
vLLM's prefix cache serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

INSTRUCTIONS = """You answer questions for lawyers and engineers using only the numbered sources provided.
Rules:
- Use only the sources. If they do not contain the answer, say so plainly.
- Cite every claim with its source label in square brackets, e.g. [S2].
- Quote the decisive words verbatim in double quotes, immediately followed by the label, e.g. "either party may terminate on 30 days' notice" [S2].
- Never cite a label that is not in the sources. Be concise."""

# Harmony wraps the prompt in a system message, a developer message (the instructions), the
# user message and the generation prompt: about 75 tokens beyond the texts, plus a margin.
HARMONY_OVERHEAD = 75
SAFETY_MARGIN = 16


class SourceLike(Protocol):
    label: str
    path: str
    page: int | None
    section: str
    text: str


def source_header(source: SourceLike) -> str:
    """The label line: "[S2] contracts/lease.pdf (page 3) § 7 Termination > 7.2 Notice"."""
    return f"[{source.label}]" + label_line_rest(source.path, source.page, source.section)


def label_line_rest(path: str, page: int | None, section: str) -> str:
    where = f" (page {page})" if page else ""
    section = f" § {section}" if section else ""
    return f" {path}{where}{section}\n"


def format_source(source: SourceLike) -> str:
    return source_header(source) + source.text


SOURCE_SEPARATOR = "\n\n"


def format_sources(sources: Sequence[SourceLike]) -> str:
    return SOURCE_SEPARATOR.join(format_source(s) for s in sources)


def user_message(sources_block: str, question: str) -> str:
    return f"Sources:\n\n{sources_block}\n\nQuestion: {question}"


Turn = tuple[str, str]  # an earlier (question, answer) of the conversation


def build_messages(sources: Sequence[SourceLike], question: str, history: Sequence[Turn] = ()) -> list[dict[str, str]]:
    """Instructions, the sources, the conversation so far as plain messages (answers without
    reasoning, as VLLM.md asks), this question last.

    The sources ride with the first question, as they did when it was asked alone: a follow-up
    over the same sources then repeats that request's whole prompt as its prefix, and vLLM's
    prefix cache serves the sources instead of reading them again. The token count is the same
    either way: the same texts, cut at safe places, in as many messages.
    """
    block = format_sources(sources)
    if not history:
        return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user_message(block, question)}]
    (first, answer), *later = history
    messages = [{"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": user_message(block, first)},
                {"role": "assistant", "content": answer}]
    for earlier, reply in later:
        messages += [{"role": "user", "content": f"Question: {earlier}"}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": f"Question: {question}"})
    return messages


def history_tokens(history: Sequence[Turn], count_tokens: Callable[[str], int]) -> int:
    """What earlier turns add to the prompt: each user text + 4 and assistant text + 6 (VLLM.md)."""
    return sum(count_tokens(f"Question: {q}") + 4 + count_tokens(a) + 6 for q, a in history)
