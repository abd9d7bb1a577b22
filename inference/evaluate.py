"""Retrieval and packing metrics against gold answer spans (the dev corpus's questions.jsonl).

A gold span is a document and a character range of its extracted text (for plain text, the
file's own offsets). For each question: the rank of the gold document among the documents of
the retrieved chunks (document recall@k), the share of gold characters covered by the top-k
chunks (span recall@k), and whether every gold span lies inside the passages packed at a budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inference.pack import Packing
from ingest.store import Hit


@dataclass(frozen=True)
class GoldSpan:
    document_id: int
    start: int
    end: int


@dataclass
class QuestionScore:
    question_id: str
    source: str
    document_rank: int | None  # 1-based rank of the first gold document, None if not retrieved
    span_recall: dict[int, float] = field(default_factory=dict)  # k -> share of gold characters
    packed: dict[int, bool] = field(default_factory=dict)  # budget -> every gold span inside
    gold_rank: int | None = None  # 1-based rank of the first chunk holding gold characters, None if none ranked

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.question_id, "source": self.source, "document_rank": self.document_rank,
                "gold_rank": self.gold_rank, **{f"span_recall@{k}": v for k, v in self.span_recall.items()},
                **{f"packed@{b}": v for b, v in self.packed.items()}}


def document_order(hits: list[Hit]) -> list[int]:
    return list(dict.fromkeys(int(h.payload["document"]) for h in hits))


def document_rank(hits: list[Hit], gold: list[GoldSpan]) -> int | None:
    wanted = {g.document_id for g in gold}
    for rank, document in enumerate(document_order(hits), start=1):
        if document in wanted:
            return rank
    return None


def gold_rank(hits: list[Hit], gold: list[GoldSpan]) -> int | None:
    """1-based rank of the first chunk that holds characters of a gold span."""
    for rank, hit in enumerate(hits, start=1):
        p = hit.payload
        if any(int(p["document"]) == g.document_id and int(p["start"]) < g.end and g.start < int(p["end"]) for g in gold):
            return rank
    return None


def covered(ranges: list[tuple[int, int]], start: int, end: int) -> int:
    """Characters of [start, end) covered by the union of `ranges`."""
    total, reached = 0, start
    for low, high in sorted(ranges):
        low, high = max(low, reached), min(high, end)
        if high > low:
            total += high - low
            reached = high
    return total


def span_recall(hits: list[Hit], gold: list[GoldSpan], k: int) -> float:
    by_document: dict[int, list[tuple[int, int]]] = {}
    for hit in hits[:k]:
        by_document.setdefault(int(hit.payload["document"]), []).append((int(hit.payload["start"]), int(hit.payload["end"])))
    wanted = sum(g.end - g.start for g in gold)
    found = sum(covered(by_document.get(g.document_id, []), g.start, g.end) for g in gold)
    return found / wanted if wanted else 0.0


def fully_packed(packing: Packing, gold: list[GoldSpan]) -> bool:
    return all(
        any(s.document_id == g.document_id and s.start <= g.start and g.end <= s.end for s in packing.sources)
        for g in gold
    )


def summarize(scores: list[QuestionScore], ks: tuple[int, ...], budgets: tuple[int, ...]) -> dict[str, Any]:
    n = len(scores)
    if not n:
        return {"questions": 0}
    summary: dict[str, Any] = {"questions": n}
    for k in (1, 5, 10):
        summary[f"document_recall@{k}"] = sum(1 for s in scores if s.document_rank and s.document_rank <= k) / n
    for k in ks:
        summary[f"span_recall@{k}"] = sum(s.span_recall[k] for s in scores) / n
    for budget in budgets:
        summary[f"packed@{budget}"] = sum(1 for s in scores if s.packed[budget]) / n
    return summary
