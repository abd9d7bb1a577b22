"""Find the passages for a question: hybrid search inside Qdrant, documents first.

Chunks are searched with a dense and a sparse vector fused by reciprocal rank inside Qdrant,
always filtered to the allowed matters in the query itself. Documents are ranked too, by their
card (file name and opening text: title, parties, date), so that a question naming "the
Hosting Agreement between IBM and Quantum" finds that document first; the chunks of the best
documents are then ranked within them, and the two rankings are fused. The result is one list
of chunk hits, best first, for packing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.embed import Embedder
from ingest.sparse import query_vector
from ingest.store import Hit, SearchQuery, VectorStore

MODES = ("hybrid", "dense", "sparse")
RRF_K = 60
TOP_DOCUMENTS = 3  # documents whose chunks are ranked within the document too
CARD_LIMIT = 10


@dataclass
class Retrieval:
    hits: list[Hit]  # chunks, best first
    documents: list[int] = field(default_factory=list)  # documents by their card, best first
    mode: str = "hybrid"


def make_query(question: str, embedder: Embedder, mode: str) -> SearchQuery:
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; one of {', '.join(MODES)}")
    dense = embedder.embed_query(question) if mode in ("hybrid", "dense") else None
    sparse = query_vector(question) if mode in ("hybrid", "sparse") else None
    return SearchQuery(dense=dense, sparse=sparse)


def retrieve(question: str, *, matter_ids: list[int], embedder: Embedder, store: VectorStore, limit: int,
             mode: str = "hybrid", documents_first: bool = True) -> Retrieval:
    query = make_query(question, embedder, mode)
    chunks = store.search(query, matter_ids, limit)
    if not documents_first:
        return Retrieval(chunks, [], mode)
    cards = store.search(query, matter_ids, CARD_LIMIT, cards=True)
    ranked_documents = unique(int(c.payload["document"]) for c in cards)
    top = ranked_documents[:TOP_DOCUMENTS]
    within = store.search(query, matter_ids, limit, documents=top) if top else []
    return Retrieval(fuse(chunks, within, ranked_documents), ranked_documents, mode)


def fuse(chunks: list[Hit], within: list[Hit], documents: list[int]) -> list[Hit]:
    """Reciprocal-rank fusion of the global chunk ranking, the ranking within the best
    documents, and each chunk's document rank by card."""
    scores: dict[str, float] = {}
    by_id: dict[str, Hit] = {}
    document_rank = {document: rank for rank, document in enumerate(documents)}
    for ranking in (chunks, within):
        for rank, hit in enumerate(ranking):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1 / (RRF_K + rank + 1)
            by_id.setdefault(hit.id, hit)
    for hit_id, hit in by_id.items():
        card = document_rank.get(int(hit.payload["document"]))
        if card is not None:
            scores[hit_id] += 1 / (RRF_K + card + 1)
    ordered = sorted(by_id, key=lambda i: -scores[i])
    return [Hit(i, scores[i], by_id[i].payload) for i in ordered]


def unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))
