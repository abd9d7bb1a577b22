"""Optional cross-encoder reranking of the best chunks (sentence-transformers `CrossEncoder`).

Off unless DOCQA_RERANK_MODEL names a local folder holding a cross-encoder (for example
cross-encoder/ms-marco-MiniLM-L-6-v2 copied onto the machine): nothing is ever downloaded. The
reranker only reorders chunks the filtered vector query already returned, so it can never widen
what a user may read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.errors import DocqaError
from ingest.store import Hit


class RerankerMissing(DocqaError):
    """The configured reranker folder holds no model."""

    kind = "search_setup"


class Reranker:
    def __init__(self, path: Path | str, top: int = 30, batch_size: int = 16) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise RerankerMissing(
                f"DOCQA_RERANK_MODEL is {path}, which holds no model (no config.json): copy a "
                "sentence-transformers cross-encoder there, or unset it to rank without one"
            )
        from sentence_transformers import CrossEncoder

        self.model: Any = CrossEncoder(str(path), device="cpu", local_files_only=True)
        self.path = path
        self.top = top
        self.batch_size = batch_size

    def rerank(self, question: str, hits: list[Hit]) -> list[Hit]:
        """The first `top` hits in the cross-encoder's order, the rest after. The hits keep the
        scores of the places they take, so scores still fall with rank (packing gives up the
        lowest first)."""
        head, tail = hits[: self.top], hits[self.top :]
        if not head:
            return hits
        scores = self.model.predict([(question, str(h.payload.get("text", ""))) for h in head],
                                    batch_size=self.batch_size, show_progress_bar=False)
        order = sorted(range(len(head)), key=lambda i: -float(scores[i]))
        places = sorted((h.score for h in head), reverse=True)
        return [Hit(head[i].id, place, head[i].payload) for i, place in zip(order, places, strict=True)] + tail
