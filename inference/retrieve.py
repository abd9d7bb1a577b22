"""Find the passages for a question: hybrid search inside Qdrant, documents first.

Chunks are searched with a dense and a sparse vector fused by reciprocal rank inside Qdrant,
always filtered to the allowed matters in the query itself. Documents are ranked too, by their
card (file name and opening text: title, parties, date), so that a question naming "the
Hosting Agreement between IBM and Quantum" finds that document first; the chunks of the best
documents are then ranked within them, and the two rankings are fused. When the best documents
fit the token budget whole, all their chunks go first, so packing sends them complete (merged
back into one passage each). The result is one list of chunk hits, best first, for packing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.embed import Embedder
from ingest.sparse import query_vector
from ingest.store import Hit, SearchQuery, VectorStore, point_id

MODES = ("hybrid", "dense", "sparse")
RRF_K = 60
TOP_DOCUMENTS = 3  # documents whose chunks are ranked within the document too
CARD_LIMIT = 10
NEIGHBOUR_HITS = 5  # the best hits bring the chunks on either side of them
WHOLE_CANDIDATES = 5  # documents of the best few chunks may be sent whole
MAX_DOCUMENT_CHUNKS = 2000
HEADER_TOKENS = 12  # a source's label line, roughly (inference.pack.header_cost)


@dataclass
class Retrieval:
    hits: list[Hit]  # chunks, best first
    documents: list[int] = field(default_factory=list)  # documents by their card, best first
    mode: str = "hybrid"
    whole: list[int] = field(default_factory=list)  # documents put first in full
    ranked: list[Hit] = field(default_factory=list)  # the fused ranking, before neighbours and whole documents


def make_query(question: str, embedder: Embedder, mode: str) -> SearchQuery:
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; one of {', '.join(MODES)}")
    dense = embedder.embed_query(question) if mode in ("hybrid", "dense") else None
    sparse = query_vector(question) if mode in ("hybrid", "sparse") else None
    return SearchQuery(dense=dense, sparse=sparse)


def retrieve(question: str, *, matter_ids: list[int], embedder: Embedder, store: VectorStore, limit: int,
             mode: str = "hybrid", documents_first: bool = True, room: int | None = None) -> Retrieval:
    """Chunk hits for `question`, best first. With `room` (the token budget for sources), the
    best documents that fit whole come first, whole, so that packing sends them complete."""
    query = make_query(question, embedder, mode)
    chunks = store.search(query, matter_ids, limit)
    if not documents_first:
        return Retrieval(chunks, [], mode, [], chunks)
    cards = store.search(query, matter_ids, CARD_LIMIT, cards=True)
    ranked_documents = unique(int(c.payload["document"]) for c in cards)
    top = ranked_documents[:TOP_DOCUMENTS]
    within = store.search(query, matter_ids, limit, documents=top) if top else []
    ranked = fuse(chunks, within, ranked_documents)
    hits = with_neighbours(ranked, store, matter_ids)
    whole: list[int] = []
    if room:
        hits, whole = whole_documents_first(hits, query, matter_ids, store, room)
    return Retrieval(hits, ranked_documents, mode, whole, ranked)


def with_neighbours(hits: list[Hit], store: VectorStore, matter_ids: list[int]) -> list[Hit]:
    """Each of the best hits is followed by the chunks just before and after it in its document,
    so that a passage cut at a chunk edge reaches the model whole (packing merges them)."""
    wanted: list[str] = []
    for hit in hits[:NEIGHBOUR_HITS]:
        p = hit.payload
        for index in (int(p["chunk"]) - 1, int(p["chunk"]) + 1):
            if index >= 0:
                wanted.append(point_id(int(p["document"]), str(p["version"]), index))
    present = {h.id for h in hits}
    fetched = {h.id: h for h in store.fetch([i for i in dict.fromkeys(wanted) if i not in present])
               if int(h.payload.get("matter", -1)) in matter_ids}  # same documents; checked all the same
    if not fetched:
        return hits
    result: list[Hit] = []
    for position, hit in enumerate(hits):
        result.append(hit)
        if position < NEIGHBOUR_HITS:
            p = hit.payload
            for index in (int(p["chunk"]) - 1, int(p["chunk"]) + 1):
                neighbour = fetched.pop(point_id(int(p["document"]), str(p["version"]), index), None) if index >= 0 else None
                if neighbour is not None:
                    result.append(Hit(neighbour.id, hit.score, neighbour.payload))
    return result


def whole_documents_first(hits: list[Hit], query: SearchQuery, matter_ids: list[int], store: VectorStore,
                          room: int) -> tuple[list[Hit], list[int]]:
    """Put every chunk of the best documents first while each fits whole in what is left of the
    room, keeping a quarter of the room for the best passages of other documents."""
    candidates = unique(int(h.payload["document"]) for h in hits[:WHOLE_CANDIDATES])
    left = room - room // 4
    first: list[Hit] = []
    whole: list[int] = []
    for document in candidates:
        chunks = store.search(query, matter_ids, MAX_DOCUMENT_CHUNKS, documents=[document])
        cost = sum(int(h.payload.get("tokens", 0)) for h in chunks) + HEADER_TOKENS * len(chunks)
        if not chunks or cost > left or len(chunks) >= MAX_DOCUMENT_CHUNKS:
            break
        first += chunks
        whole.append(document)
        left -= cost
    taken = {h.id for h in first}
    return first + [h for h in hits if h.id not in taken], whole


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
