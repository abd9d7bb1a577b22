"""The prompt: fixed instructions first, sources in canonical order, the question last.

That order keeps the leading prefix identical across follow-ups, so vLLM's prefix cache hits.
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
    """Instructions, the conversation so far as plain messages (answers without reasoning, as
    VLLM.md asks), then this question with its sources."""
    messages = [{"role": "system", "content": INSTRUCTIONS}]
    for earlier, answer in history:
        messages.append({"role": "user", "content": f"Question: {earlier}"})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": user_message(format_sources(sources), question)})
    return messages


def history_tokens(history: Sequence[Turn], count_tokens: Callable[[str], int]) -> int:
    """What earlier turns add to the prompt: each user text + 4 and assistant text + 6 (VLLM.md)."""
    return sum(count_tokens(f"Question: {q}") + 4 + count_tokens(a) + 6 for q, a in history)
