"""Fill a token budget with retrieved passages, and say what did not fit.

Hits are taken best-first while they fit; overlapping or touching chunks of one document merge
into a single passage; passages are then labelled in canonical order (document path, position)
so the serialized sources are identical whenever the same passages are chosen.

Counting costs no tokenization of the passages: each chunk stores its o200k count, and the counts
up to "safe cuts" inside its overlaps with its neighbours (ingest.tokens), so a merged passage's
exact count is a sum, and the serialized block's exact count is that sum plus the counts of the
short strings between safe cuts (labels, separators, the ends of each passage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from inference.prompt import SOURCE_SEPARATOR, label_line_rest, source_header
from ingest.store import Hit
from ingest.tokens import count_tokens as default_count
from ingest.tokens import document_tokens, last_safe_cut, safe_join


@dataclass
class PackedSource:
    label: str
    document_id: int
    path: str
    page: int | None
    start: int
    end: int
    text: str
    score: float
    section: str = ""
    tokens: int = 0
    chunks: list[int] = field(default_factory=list)
    version: str = ""
    parts: list[dict[str, Any]] = field(default_factory=list, repr=False)  # payloads joined, in order
    hit_ids: list[str] = field(default_factory=list, repr=False)
    segment_counts: dict[bool, int] = field(default_factory=dict, repr=False)  # block_tokens' cache

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "document": self.document_id,
            "version": self.version,
            "path": self.path,
            "page": self.page,
            "section": self.section,
            "start": self.start,
            "end": self.end,
            "tokens": self.tokens,
            "score": round(self.score, 4),
            "text": self.text,
        }


@dataclass
class Packing:
    sources: list[PackedSource]
    dropped: list[dict[str, Any]]
    tokens: int  # exact o200k count of the serialized sources block
    budget: int


def pack_sources(hits: list[Hit], budget: int, count_tokens: Callable[[str], int]) -> Packing:
    """Passages from `hits` (best first) whose serialized block fits `budget` tokens, exactly."""
    rank = {hit.id: position for position, hit in enumerate(hits)}
    count_tokens = memoized(count_tokens)  # label lines and passage ends recur between rounds
    taken: set[tuple[int, str, int]] = set()
    chosen, left = fill(hits, budget, taken)
    sources = merge_passages(chosen, count_tokens)
    tokens = block_tokens(sources, count_tokens)
    # Over (the estimates were low): give up the weakest passages, enough to cover the excess.
    while sources and tokens > budget:
        freed, excess = 0, tokens - budget
        for weakest in sorted(sources, key=lambda s: s.score):
            sources.remove(weakest)
            gone = set(weakest.hit_ids)
            left += [h for h in chosen if h.id in gone]
            chosen = [h for h in chosen if h.id not in gone]
            taken -= {chunk_key(h) for h in left if h.id in gone}
            freed += weakest.tokens + count_tokens(source_header(weakest)) + 1
            if freed >= excess:
                break
        label(sources)
        tokens = block_tokens(sources, count_tokens)
    # Under (merged neighbours share their overlap, labels cost less than guessed): fill the
    # room left with the best hits that did not fit, while the exact count allows.
    for _ in range(REFILL_ROUNDS):
        left.sort(key=lambda h: rank[h.id])
        before = set(taken)
        extra, _ = fill(left, budget - tokens, taken)
        while extra:
            # Only the documents the extra hits belong to are merged again.
            touched = {chunk_key(h)[:2] for h in extra}
            trial = [s for s in sources if (s.document_id, s.version) not in touched]
            trial += merge_passages([h for h in chosen + extra if chunk_key(h)[:2] in touched], count_tokens)
            label(trial)
            trial_tokens = block_tokens(trial, count_tokens)
            if trial_tokens <= budget:
                break
            extra = extra[: len(extra) // 2]  # the estimates were low here: try the better half
            label(sources)
        taken.clear()
        taken.update(before | {chunk_key(h) for h in extra})
        if not extra:
            break
        added = {h.id for h in extra}
        chosen += extra
        left = [h for h in left if h.id not in added]
        sources, tokens = trial, trial_tokens
    covered: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for source in sources:
        covered.setdefault((source.document_id, source.version), []).append((source.start, source.end))
    left.sort(key=lambda h: rank[h.id])
    dropped = [describe_dropped(h) for h in left if not inside(h, covered)]
    return Packing(sources, dropped, tokens, budget)


REFILL_ROUNDS = 2


def fill(hits: list[Hit], room: int, taken: set[tuple[int, str, int]]) -> tuple[list[Hit], list[Hit]]:
    """The hits (in order) whose estimated costs fit `room`, and the rest. A hit next to a chunk
    already taken costs only what merging adds (its stored count beyond the cut they share)."""
    chosen: list[Hit] = []
    rest: list[Hit] = []
    for hit in hits:
        cost = marginal(hit, taken)
        if cost <= room:
            chosen.append(hit)
            taken.add(chunk_key(hit))
            room -= cost
        else:
            rest.append(hit)
    return chosen, rest


def chunk_key(hit: Hit) -> tuple[int, str, int]:
    p = hit.payload
    return p["document"], p.get("version", ""), p.get("chunk", -1)


def marginal(hit: Hit, taken: set[tuple[int, str, int]]) -> int:
    document, version, index = chunk_key(hit)
    p = hit.payload
    after_previous = (document, version, index - 1) in taken and p.get("cut_before") is not None
    before_next = (document, version, index + 1) in taken and p.get("cut") is not None
    if after_previous and before_next and p.get("body") is not None:
        return int(p["body"])
    if after_previous and p.get("tail") is not None:
        return int(p["tail"])
    if before_next and p.get("head") is not None:
        return int(p["head"])
    return estimate(hit)


def memoized(count_tokens: Callable[[str], int]) -> Callable[[str], int]:
    known: dict[str, int] = {}

    def count(text: str) -> int:
        if text not in known:
            known[text] = count_tokens(text)
        return known[text]

    return count


def estimate(hit: Hit) -> int:
    """A hit's tokens plus its label line ("[S12] path/to/file.pdf (page 3) § section", the
    label about 3 tokens) and the separator before it."""
    p = hit.payload
    return int(p.get("tokens") or 0) + line_tokens(str(p.get("path", "")), p.get("page"), str(p.get("section") or "")) \
        + LABEL_TOKENS + 1


@lru_cache(maxsize=65536)
def line_tokens(path: str, page: int | None, section: str) -> int:
    """The tokens of a label line after its label (kept across questions: paths recur)."""
    return default_count(label_line_rest(path, page, section))


LABEL_TOKENS = 3  # "[S12]"


def inside(hit: Hit, covered: dict[tuple[int, str], list[tuple[int, int]]]) -> bool:
    """Whether a hit's text is already inside a packed passage (then it was not left out)."""
    p = hit.payload
    spans = covered.get((int(p["document"]), str(p.get("version", ""))), [])
    return any(start <= p["start"] and p["end"] <= end for start, end in spans)


def merge_passages(hits: list[Hit], count_tokens: Callable[[str], int] | None = None) -> list[PackedSource]:
    # Keyed by version too: mid-update, a query may see chunks of two versions of one document,
    # whose offsets index different texts and must never be stitched together.
    by_document: dict[tuple[int, str], list[Hit]] = {}
    for hit in hits:
        p = hit.payload
        key = (p["document"], p.get("version", ""))
        if key in by_document:
            by_document[key].append(hit)
        else:
            by_document[key] = [hit]
    passages: list[PackedSource] = []
    pieces: list[list[str]] = []  # each passage's text in pieces, joined once at the end
    for (document_id, _version), group in by_document.items():
        group.sort(key=lambda h: (h.payload["start"], h.payload["end"]))
        current: PackedSource | None = None
        for hit in group:
            p = hit.payload
            if current is not None and p["start"] <= current.end:
                if p["end"] > current.end:
                    pieces[-1].append(p["text"][current.end - p["start"] :])
                    current.end = p["end"]
                    current.parts.append(p)
                current.score = max(current.score, hit.score)
                current.chunks.append(p["chunk"])
                current.hit_ids.append(hit.id)
                continue
            current = PackedSource(
                label="", document_id=document_id, path=p["path"], page=p.get("page"),
                start=p["start"], end=p["end"], text=p["text"], score=hit.score, chunks=[p["chunk"]],
                section=p.get("section") or "", version=str(p.get("version", "")), parts=[p], hit_ids=[hit.id],
            )
            passages.append(current)
            pieces.append([p["text"]])
    for passage, parts in zip(passages, pieces, strict=True):
        if len(parts) > 1:
            passage.text = "".join(parts)
    if count_tokens is not None:
        for passage in passages:
            passage.tokens = passage_tokens(passage, count_tokens)
    label(passages)
    return passages


def label(passages: list[PackedSource]) -> None:
    """Canonical order (path, position) and labels S1..Sn, so that the same passages always
    serialize the same way and vLLM's prefix cache serves follow-up questions."""
    passages.sort(key=lambda s: (s.path, s.start))
    _number(passages)


def best_first(passages: list[PackedSource]) -> None:
    """Best score first (ties in canonical order), labelled S1..Sn again: for a person reading
    search results. The block's token count is that of the canonical order, as it would be sent."""
    passages.sort(key=lambda s: (-s.score, s.path, s.start))
    _number(passages)


def _number(passages: list[PackedSource]) -> None:
    for number, passage in enumerate(passages, start=1):
        passage.label = f"S{number}"


def passage_tokens(passage: PackedSource, count_tokens: Callable[[str], int]) -> int:
    """The passage's exact o200k count: from the chunks' stored counts when its chunks are a
    run of neighbours joined at their stored cuts, otherwise by counting its text."""
    known = chained_tokens(passage.parts)
    return known if known is not None else count_tokens(passage.text)


def chained_tokens(parts: list[dict[str, Any]]) -> int | None:
    """The exact count of neighbouring chunks' payloads (in order) joined into one text, or None
    when they are not a run joined at their stored cuts (older indexes store no cuts)."""
    if not parts:
        return 0
    for a, b in zip(parts, parts[1:], strict=False):
        if b.get("chunk") != a.get("chunk", -2) + 1 or a.get("cut") is None or b.get("cut_before") != a.get("cut"):
            return None
        if not (a["start"] <= a["cut"] <= b["end"] and b["start"] <= a["end"] < b["end"]):
            return None
    return document_tokens(parts)


def block_tokens(sources: list[PackedSource], count_tokens: Callable[[str], int]) -> int:
    """The exact o200k count of format_sources(sources), from each passage's known count.

    The block is a row of segments, one per source: its label line, its passage and, but for the
    last, the separator. Every segment after the first starts with "[" after a line break, which
    is a safe cut (ingest.tokens.safe_join), so the block's count is the sum of the segments'
    counts. Inside a segment, where two pieces meet at a safe join their counts add up too; a
    label line's count is known ("]" before a space is safe), the passage's is stored, and only
    the short strings around an unsafe join (cut back to the passage's nearest safe cut) are
    tokenized: once per passage, kept on it for the refill rounds.
    """
    last = len(sources) - 1
    return sum(segment_tokens(source, position == last, count_tokens) for position, source in enumerate(sources))


def segment_tokens(source: PackedSource, last: bool, count_tokens: Callable[[str], int]) -> int:
    """The exact count of one source's segment: label line + passage (+ separator unless last)."""
    text = source.text
    if not text or not safe_join("\n", text[0]):
        # The label line runs into the passage (an empty passage, or one that opens with a
        # space or "/"): rare, so the segment is counted whole.
        return count_tokens(source_header(source) + text + ("" if last else SOURCE_SEPARATOR))
    line = label_tokens(source.label) + line_tokens(source.path, source.page, source.section)
    return line + passage_and_separator(source, last, count_tokens)


def passage_and_separator(source: PackedSource, last: bool, count_tokens: Callable[[str], int]) -> int:
    """The passage's count plus the separator after it (unless last), kept on the source."""
    known = source.segment_counts.get(last)
    if known is not None:
        return known
    text = source.text
    if last:
        total = source.tokens
    elif safe_join(text[-1], SOURCE_SEPARATOR[0]):
        total = source.tokens + count_tokens(SOURCE_SEPARATOR)
    else:
        # The separator joins the passage's last piece ("." + "\n\n" is one token): count that
        # piece, from the passage's last safe cut, with the separator.
        cut = last_safe_cut(text)
        if cut is None:
            total = count_tokens(text + SOURCE_SEPARATOR)
        else:
            tail = text[cut:]
            total = source.tokens - count_tokens(tail) + count_tokens(tail + SOURCE_SEPARATOR)
    source.segment_counts[last] = total
    return total


@lru_cache(maxsize=4096)
def label_tokens(label: str) -> int:
    return default_count(f"[{label}]")


def describe_dropped(hit: Hit) -> dict[str, Any]:
    p = hit.payload
    return {
        "document": p.get("document"),
        "path": p.get("path"),
        "page": p.get("page"),
        "section": p.get("section") or "",
        "start": p.get("start"),
        "end": p.get("end"),
        "tokens": p.get("tokens"),
        "score": round(hit.score, 4),
        "reason": "no room in the token budget",
    }
