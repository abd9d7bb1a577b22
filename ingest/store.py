"""The vector-store seam: Qdrant's embedded engine or a Qdrant server, one interface.

Points carry a dense vector (MiniLM), a sparse lexical vector (ingest.sparse; Qdrant applies
IDF) and a payload (matter, document, version, chunk, path, page, char span, tokens, text).
Each document version also has one "card" point (kind "card": its file name and opening text)
so that a question naming a document can find the document first. Hybrid queries run both
vectors as prefetches and fuse them by reciprocal rank inside Qdrant. Point ids are uuid5 of document version + chunk index, so re-running an
ingest upserts the same points; stale versions are deleted after the new one is written.
The matter filter is always part of the vector query itself.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ingest.errors import StoreError, StoreLocked
from ingest.sparse import SparseVector

POINT_NAMESPACE = uuid.UUID("6f1c8f3e-2b4d-4e8a-9c57-0d1e2f3a4b5c")
DENSE = "dense"
SPARSE = "sparse"
CARD = "card"
RRF_K = 60
PREFETCH_FACTOR = 3  # each prefetch fetches this many times the final limit before fusion
TIE_MARGIN = 8  # hits asked for beyond the limit, so that ties at the cut are settled by id
OLD_SCHEMA = (
    "was made by an earlier docqa without lexical (sparse) vectors: move it away, run "
    "`manage.py reindex`, then `ingest` again"
)


def store_errors(method: Callable) -> Callable:
    """Turn any engine or client failure into StoreError, which the ingest tasks retry."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (StoreError, StoreLocked):
            raise
        except Exception as exc:
            raise StoreError(f"the vector store failed: {type(exc).__name__}: {exc}") from exc

    return wrapper


def point_id(document_id: int, version: str, chunk_index: int | str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{version}:{chunk_index}"))


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    vector: list[float]
    payload: dict[str, Any]
    sparse: SparseVector | None = None


@dataclass(frozen=True)
class SearchQuery:
    """What to search with: a dense vector, a sparse one, or both (hybrid, fused by RRF)."""

    dense: list[float] | None = None
    sparse: SparseVector | None = None

    @property
    def mode(self) -> str:
        return "hybrid" if self.dense is not None and self.sparse is not None else (
            "dense" if self.dense is not None else "sparse"
        )


def settled(hits: list[Hit], limit: int) -> list[Hit]:
    """Best first, equal scores in the order of their ids, cut to `limit`. Fused scores tie often
    (ranks 3 and 5 score as 5 and 3), and the engines return tied points in no fixed order: the
    same question could be sent different sources, which an audit cannot reproduce."""
    return sorted(hits, key=lambda h: (-h.score, h.id))[:limit]


def as_query(query: SearchQuery | list[float]) -> SearchQuery:
    return query if isinstance(query, SearchQuery) else SearchQuery(dense=list(query))


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    def upsert(self, points: list[ChunkPoint]) -> None: ...

    def delete_document(self, document_id: int, keep_version: str | None = None) -> None: ...

    def rename_document(self, document_id: int, path: str) -> None: ...

    def search(self, query: SearchQuery | list[float], matter_ids: list[int], limit: int, *,
               documents: list[int] | None = None, cards: bool = False) -> list[Hit]: ...

    def count(self, matter_ids: list[int] | None = None) -> int: ...

    def fetch(self, ids: list[str]) -> list[Hit]: ...

    def optimize(self) -> None: ...

    def close(self) -> None: ...


class EdgeStore:
    """Qdrant's embedded engine (qdrant-edge-py) in a folder, shared by the process's threads."""

    def __init__(self, path: Path, dimension: int):
        import qdrant_edge as qe

        self._qe = qe
        self._lock = threading.Lock()  # serialises writers; queries run concurrently
        path.mkdir(parents=True, exist_ok=True)
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        saved = path / "edge_config.json"
        if saved.exists() and f'"{SPARSE}"' not in saved.read_text(encoding="utf-8", errors="replace"):
            raise StoreError(f"the embedded vector store at {path} {OLD_SCHEMA}")
        try:
            if saved.exists():
                self._shard = qe.EdgeShard.load(str(path))
            else:
                self._shard = qe.EdgeShard.create(str(path), config)
                for field in ("matter", "document"):
                    self._shard.update(
                        qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer)
                    )
                self._shard.update(qe.UpdateOperation.create_field_index("kind", qe.PayloadSchemaType.Keyword))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLocked(
                    f"the embedded vector store at {path} is in use by another docqa process"
                ) from exc
            raise StoreError(f"cannot open the embedded vector store at {path}: {exc}") from exc

    def _match(self, key: str, value: Any) -> Any:
        qe = self._qe
        match = qe.MatchAny(value) if isinstance(value, list) else qe.MatchValue(value)
        return qe.FieldCondition(key=key, match=match)

    def _vectors(self, point: ChunkPoint) -> dict[str, Any]:
        vectors: dict[str, Any] = {DENSE: point.vector}
        if point.sparse is not None and point.sparse.indices:
            vectors[SPARSE] = self._qe.SparseVector(indices=point.sparse.indices, values=point.sparse.values)
        return vectors

    def _filter(self, matter_ids: list[int], documents: list[int] | None, cards: bool) -> Any:
        qe = self._qe
        must = [self._match("matter", list(matter_ids))]
        if documents is not None:
            must.append(self._match("document", list(documents)))
        if cards:
            return qe.Filter(must=[*must, self._match("kind", CARD)])
        return qe.Filter(must=must, must_not=[self._match("kind", CARD)])

    @store_errors
    def upsert(self, points: list[ChunkPoint]) -> None:
        qe = self._qe
        edge_points = [qe.Point(p.id, self._vectors(p), p.payload) for p in points]
        with self._lock:
            self._shard.update(qe.UpdateOperation.upsert_points(edge_points))
            self._shard.flush()

    @store_errors
    def delete_document(self, document_id: int, keep_version: str | None = None) -> None:
        qe = self._qe
        must_not = [self._match("version", keep_version)] if keep_version else None
        where = qe.Filter(must=[self._match("document", document_id)], must_not=must_not)
        with self._lock:
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(where))
            self._shard.flush()

    @store_errors
    def rename_document(self, document_id: int, path: str) -> None:
        qe = self._qe
        where = qe.Filter(must=[self._match("document", document_id)])
        with self._lock:
            self._shard.update(qe.UpdateOperation.set_payload_by_filter(where, {"path": path}))
            self._shard.flush()

    @store_errors
    def search(self, query: SearchQuery | list[float], matter_ids: list[int], limit: int, *,
               documents: list[int] | None = None, cards: bool = False) -> list[Hit]:
        qe = self._qe
        query = as_query(query)
        if not matter_ids or documents == []:
            return []
        where = self._filter(matter_ids, documents, cards)
        nearest = []
        if query.dense is not None:
            nearest.append(qe.Query.Nearest(query.dense, using=DENSE))
        if query.sparse is not None and query.sparse.indices:
            nearest.append(qe.Query.Nearest(qe.SparseVector(indices=query.sparse.indices, values=query.sparse.values),
                                            using=SPARSE))
        if not nearest:
            return []
        wanted = limit + TIE_MARGIN
        if len(nearest) == 1:
            request = qe.QueryRequest(limit=wanted, query=nearest[0], filter=where, with_payload=True)
        else:
            # The filter sits in each prefetch: every candidate is already inside the matters.
            prefetches = [qe.Prefetch(limit=limit * PREFETCH_FACTOR, query=q, filter=where) for q in nearest]
            request = qe.QueryRequest(limit=wanted, prefetches=prefetches, query=qe.Fusion.Rrf(k=RRF_K, weights=None),
                                      filter=where, with_payload=True)
        # Each read of `.payload` builds a new dict, so it is ours to keep without a copy (at
        # 1,000 hits the copies cost ~2 ms).
        return settled([Hit(str(p.id), float(p.score), p.payload or {}) for p in self._shard.query(request)], limit)

    @store_errors
    def fetch(self, ids: list[str]) -> list[Hit]:
        """Points by id (neighbouring chunks of a hit: their ids follow from document, version, index)."""
        if not ids:
            return []
        point_ids: list[Any] = list(ids)
        return [Hit(str(r.id), 0.0, r.payload or {}) for r in self._shard.retrieve(point_ids, True, False)]

    @store_errors
    def count(self, matter_ids: list[int] | None = None) -> int:
        """Chunk points (cards not counted), in the given matters or in all."""
        qe = self._qe
        must = [self._match("matter", list(matter_ids))] if matter_ids else None
        where = qe.Filter(must=must, must_not=[self._match("kind", CARD)])
        return int(self._shard.count(qe.CountRequest(exact=True, filter=where)))

    @store_errors
    def optimize(self) -> None:
        """Build the vector indexes (HNSW, sparse) over points written since the last build.

        The embedded engine runs no optimizer in the background: until this runs, new points sit
        in an appendable segment that every query scans whole (exact, but ~3x slower at 100,000
        points). Below Qdrant's indexing threshold (~6,500 new points) it does nothing. It holds
        the GIL while it builds (~0.5 ms per point on 2 cores), so callers run it where nothing
        else waits: after `ingest`, and before `serve` listens.
        """
        with self._lock:
            self._shard.optimize()
            self._shard.flush()

    def close(self) -> None:
        with self._lock:
            self._shard.flush()
            self._shard.close()


class ServerStore:
    """A Qdrant server through qdrant-client; `path:` URLs use the client's local mode."""

    def __init__(self, url: str, collection: str, dimension: int, *, api_key: str = "", timeout: int = 30):
        from qdrant_client import QdrantClient

        try:
            if url.startswith("path:"):
                self._client = QdrantClient(path=url.removeprefix("path:"))
            elif url == ":memory:":
                self._client = QdrantClient(location=":memory:")
            else:
                self._client = QdrantClient(url=url, api_key=api_key or None, timeout=timeout)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreLocked(f"the local Qdrant folder {url} is in use by another process") from exc
            raise
        self.collection = collection
        self._ensure_collection(dimension)

    @store_errors
    def _ensure_collection(self, dimension: int) -> None:
        from qdrant_client import models

        if self._client.collection_exists(self.collection):
            info = self._client.get_collection(self.collection)
            if SPARSE not in (info.config.params.sparse_vectors or {}):
                raise StoreError(f"the Qdrant collection {self.collection} {OLD_SCHEMA}")
            return
        self._client.create_collection(
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        for field in ("matter", "document"):
            self._client.create_payload_index(
                self.collection, field, field_schema=models.PayloadSchemaType.INTEGER
            )
        self._client.create_payload_index(self.collection, "kind", field_schema=models.PayloadSchemaType.KEYWORD)

    def _match(self, key: str, value: Any) -> Any:
        from qdrant_client import models

        match = models.MatchAny(any=value) if isinstance(value, list) else models.MatchValue(value=value)
        return models.FieldCondition(key=key, match=match)

    @store_errors
    def upsert(self, points: list[ChunkPoint]) -> None:
        from qdrant_client import models

        structs = []
        for p in points:
            vector: dict[str, Any] = {DENSE: p.vector}
            if p.sparse is not None and p.sparse.indices:
                vector[SPARSE] = models.SparseVector(indices=p.sparse.indices, values=p.sparse.values)
            structs.append(models.PointStruct(id=p.id, vector=vector, payload=p.payload))
        self._client.upsert(self.collection, points=structs, wait=True)

    @store_errors
    def delete_document(self, document_id: int, keep_version: str | None = None) -> None:
        from qdrant_client import models

        must_not = [self._match("version", keep_version)] if keep_version else None
        where = models.Filter(must=[self._match("document", document_id)], must_not=must_not)
        self._client.delete(self.collection, points_selector=models.FilterSelector(filter=where), wait=True)

    @store_errors
    def rename_document(self, document_id: int, path: str) -> None:
        from qdrant_client import models

        where = models.Filter(must=[self._match("document", document_id)])
        self._client.set_payload(
            self.collection, payload={"path": path}, points=models.FilterSelector(filter=where), wait=True
        )

    def _filter(self, matter_ids: list[int], documents: list[int] | None, cards: bool) -> Any:
        from qdrant_client import models

        must = [self._match("matter", list(matter_ids))]
        if documents is not None:
            must.append(self._match("document", list(documents)))
        if cards:
            return models.Filter(must=[*must, self._match("kind", CARD)])
        return models.Filter(must=must, must_not=[self._match("kind", CARD)])

    @store_errors
    def search(self, query: SearchQuery | list[float], matter_ids: list[int], limit: int, *,
               documents: list[int] | None = None, cards: bool = False) -> list[Hit]:
        from qdrant_client import models

        query = as_query(query)
        if not matter_ids or documents == []:
            return []
        where = self._filter(matter_ids, documents, cards)
        nearest: list[tuple[Any, str]] = []
        if query.dense is not None:
            nearest.append((query.dense, DENSE))
        if query.sparse is not None and query.sparse.indices:
            nearest.append((models.SparseVector(indices=query.sparse.indices, values=query.sparse.values), SPARSE))
        if not nearest:
            return []
        wanted = limit + TIE_MARGIN
        if len(nearest) == 1:
            response = self._client.query_points(self.collection, query=nearest[0][0], using=nearest[0][1],
                                                 query_filter=where, limit=wanted, with_payload=True)
        else:
            # The filter sits in each prefetch: every candidate is already inside the matters.
            prefetch = [models.Prefetch(query=q, using=name, filter=where, limit=limit * PREFETCH_FACTOR)
                        for q, name in nearest]
            response = self._client.query_points(self.collection, prefetch=prefetch,
                                                 query=models.FusionQuery(fusion=models.Fusion.RRF),
                                                 query_filter=where, limit=wanted, with_payload=True)
        return settled([Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points], limit)

    @store_errors
    def fetch(self, ids: list[str]) -> list[Hit]:
        if not ids:
            return []
        records = self._client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=False)
        return [Hit(str(r.id), 0.0, dict(r.payload or {})) for r in records]

    @store_errors
    def count(self, matter_ids: list[int] | None = None) -> int:
        from qdrant_client import models

        must = [self._match("matter", list(matter_ids))] if matter_ids else None
        where = models.Filter(must=must, must_not=[self._match("kind", CARD)])
        return int(self._client.count(self.collection, count_filter=where, exact=True).count)

    def optimize(self) -> None:
        """Nothing to do: a Qdrant server indexes in the background (local mode never does)."""

    def close(self) -> None:
        self._client.close()
