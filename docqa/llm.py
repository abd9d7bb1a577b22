"""The answer path's handles (language model, reranker), built from settings. Kept apart from
`services` so that the ingest tasks, which use the embedder and store, never import them."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from inference.llm import VllmClient
from inference.rerank import Reranker


def get_llm() -> VllmClient | None:
    """The vLLM client, or None when no language model is configured (search-only mode)."""
    if not settings.LLM_BASE_URL:
        return None
    return VllmClient(
        settings.LLM_BASE_URL,
        model=settings.LLM_MODEL,
        api_key=settings.LLM_API_KEY,
        timeout=settings.LLM_TIMEOUT,
        connect_timeout=settings.LLM_CONNECT_TIMEOUT,
    )


@lru_cache(maxsize=1)
def get_reranker() -> Reranker | None:
    """The cross-encoder named by DOCQA_RERANK_MODEL, or None (the default: no reranking)."""
    if not settings.RERANK_MODEL:
        return None
    return Reranker(settings.RERANK_MODEL, top=settings.RERANK_TOP)
