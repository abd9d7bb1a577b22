"""Split extracted text into chunks that fit the embedding model, each with its char span.

llama-index's SentenceSplitter does the sentence-aware splitting, measuring length with the
embedding model's own tokenizer. Every chunk is then checked against the model's hard limit and
split again if needed, so the embedder never cuts a chunk's tail off silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ingest.parse import ParsedDocument

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    page: int | None
    embed_tokens: int
    section: str = ""  # word pieces, without the model's special tokens


def chunk_document(
    parsed: ParsedDocument,
    count_tokens: TokenCounter,
    *,
    max_tokens: int,
    overlap: int,
    hard_limit: int,
) -> list[Chunk]:
    """Chunks of at most `max_tokens` (and never more than `hard_limit`) tokens."""
    tables = [(s, e) for s, e, c in zip(parsed.starts, parsed.ends, parsed.categories, strict=False) if c == "Table"]
    spans = [
        piece
        for start, end in split_spans(parsed.text, count_tokens, max_tokens, overlap)
        for piece in enforce_limit(parsed.text, *whole_rows(parsed.text, start, end, tables), count_tokens, hard_limit)
    ]
    spans = close_gaps(parsed.text, spans)
    return [
        Chunk(
            index=i,
            text=parsed.text[start:end],
            start=start,
            end=end,
            page=parsed.page_at(start),
            section=parsed.section_at(start),
            embed_tokens=tokens,
        )
        for i, (start, end, tokens) in enumerate(spans)
    ]


def close_gaps(text: str, spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Stretch each chunk over the blank space before the next one, so that consecutive chunks
    touch and merge back into one passage: a span across a paragraph break stays in one piece."""
    closed = list(spans)
    for i in range(len(closed) - 1):
        start, end, tokens = closed[i]
        following = closed[i + 1][0]
        if end < following and not text[end:following].strip():
            closed[i] = (start, following, tokens)
    return closed


def split_spans(
    text: str, count_tokens: TokenCounter, max_tokens: int, overlap: int
) -> list[tuple[int, int]]:
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=max_tokens,
        chunk_overlap=overlap,
        tokenizer=lambda s: range(clearly_over(s, max_tokens) or count_tokens(s)),
        include_metadata=False,
        include_prev_next_rel=False,
    )
    spans = []
    cursor = 0
    for node in splitter.get_nodes_from_documents([Document(text=text)]):
        content = node.get_content()
        start = getattr(node, "start_char_idx", None)
        if start is None or text[start : start + len(content)] != content:
            # The splitter could not place the node; find it ourselves after the last one.
            start = text.find(content, max(0, cursor - len(content)))
            if start < 0:
                raise ValueError("chunk text not found in the document text")
        spans.append((start, start + len(content)))
        cursor = start + len(content)
    return spans


def clearly_over(text: str, max_tokens: int) -> int:
    """`max_tokens + 1` when `text` has more words than `max_tokens`, else 0 (count it).

    The splitter measures the whole document first, then each paragraph, then each sentence, and
    only asks whether a long text exceeds the chunk size: every word is at least one word piece,
    so more words than `max_tokens` answers that without running the tokenizer over the whole
    text (bounded work, ~4x fewer characters tokenized). The texts it keeps as splits are small
    and counted exactly, and every final chunk is counted again (enforce_limit).
    """
    return max_tokens + 1 if len(text.split(maxsplit=max_tokens + 1)) > max_tokens + 1 else 0


def whole_rows(text: str, start: int, end: int, tables: list[tuple[int, int]]) -> tuple[int, int]:
    """Widen a span whose ends fall inside a table row to the row's edges: rows stay whole."""
    for table_start, table_end in tables:
        if table_start < start < table_end and text[start - 1] != "\n":
            start = max(table_start, text.rfind("\n", table_start, start) + 1)
        if table_start < end < table_end and text[end] != "\n":
            row_end = text.find("\n", end, table_end)
            end = table_end if row_end < 0 else row_end
    return start, end


def enforce_limit(
    text: str, start: int, end: int, count_tokens: TokenCounter, hard_limit: int
) -> list[tuple[int, int, int]]:
    """(start, end, tokens) pieces of text[start:end], each within `hard_limit` tokens."""
    tokens = count_tokens(text[start:end])
    if tokens <= hard_limit:
        return [(start, end, tokens)]
    # Halve at a line break (a table row's end) or else a space near the middle: rare (one
    # very long "sentence" or a widened table span), so simple is fine.
    middle = start + (end - start) // 2
    cut = text.rfind("\n", start + (end - start) // 4, middle + 1)
    if cut <= start:
        cut = text.rfind(" ", start + 1, middle + 1)
    if cut <= start:
        cut = middle
    return enforce_limit(text, start, cut, count_tokens, hard_limit) + enforce_limit(
        text, cut, end, count_tokens, hard_limit
    )
