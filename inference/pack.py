"""Fill a token budget with retrieved passages, and say what did not fit.

Hits are taken best-first while they fit; overlapping or touching chunks of one document merge
into a single passage; passages are then labelled in canonical order (document path, position)
so the serialized sources are identical whenever the same passages are chosen. Token counts
come from the chunks' stored o200k counts, and the final block is counted exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference.prompt import format_sources
from ingest.store import Hit


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
    """Passages from `hits` (best first) whose serialized block fits `budget` tokens."""
    chosen: list[Hit] = []
    dropped: list[Hit] = []
    used = 0
    for hit in hits:
        cost = int(hit.payload.get("tokens", 0)) + header_cost(hit)
        if used + cost <= budget:
            chosen.append(hit)
            used += cost
        else:
            dropped.append(hit)
    sources = merge_passages(chosen)
    tokens = count_tokens(format_sources(sources)) if sources else 0
    while sources and tokens > budget:
        # The estimate was off (merges and headers); give up the weakest passage and recount.
        weakest = min(sources, key=lambda s: s.score)
        kept = [h for h in chosen if h.payload["document"] != weakest.document_id or h.payload["chunk"] not in weakest.chunks]
        dropped += [h for h in chosen if h not in kept]
        chosen = kept
        sources = merge_passages(chosen)
        tokens = count_tokens(format_sources(sources)) if sources else 0
    for source in sources:
        source.tokens = count_tokens(source.text)
    return Packing(sources, [describe_dropped(h) for h in dropped], tokens, budget)


def header_cost(hit: Hit) -> int:
    # "[S12] path/to/file.pdf (page 3)\n" plus the blank line between sources, roughly.
    return len(str(hit.payload.get("path", ""))) // 3 + 12


def merge_passages(hits: list[Hit]) -> list[PackedSource]:
    # Keyed by version too: mid-update, a query may see chunks of two versions of one document,
    # whose offsets index different texts and must never be stitched together.
    by_document: dict[tuple[int, str], list[Hit]] = {}
    for hit in hits:
        by_document.setdefault((int(hit.payload["document"]), str(hit.payload.get("version", ""))), []).append(hit)
    passages: list[PackedSource] = []
    for (document_id, _version), group in by_document.items():
        group.sort(key=lambda h: h.payload["start"])
        current: PackedSource | None = None
        for hit in group:
            p = hit.payload
            if current is not None and p["start"] <= current.end:
                if p["end"] > current.end:
                    current.text += p["text"][current.end - p["start"] :]
                    current.end = p["end"]
                current.score = max(current.score, hit.score)
                current.chunks.append(p["chunk"])
                continue
            current = PackedSource(
                label="", document_id=document_id, path=p["path"], page=p.get("page"),
                start=p["start"], end=p["end"], text=p["text"], score=hit.score, chunks=[p["chunk"]],
                section=p.get("section") or "", version=str(p.get("version", "")),
            )
            passages.append(current)
    passages.sort(key=lambda s: (s.path, s.start))
    for number, passage in enumerate(passages, start=1):
        passage.label = f"S{number}"
    return passages


def describe_dropped(hit: Hit) -> dict[str, Any]:
    p = hit.payload
    return {
        "path": p.get("path"),
        "page": p.get("page"),
        "start": p.get("start"),
        "end": p.get("end"),
        "tokens": p.get("tokens"),
        "score": round(hit.score, 4),
        "reason": "no room in the token budget",
    }
