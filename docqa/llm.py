"""The answer path's handles (language model, reranker), built from settings. Kept apart from
`services` so that the ingest tasks, which use the embedder and store, never import them."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from inference.llm import VllmClient
from inference.rerank import Reranker


def get_llm() -> VllmClient | None:
    """The vLLM client, or None when no language model is configured (search-only mode). One per
    configuration and process, so its connections are kept from one question to the next."""
    if not settings.LLM_BASE_URL:
        return None
    return llm_client(settings.LLM_BASE_URL, settings.LLM_MODEL, settings.LLM_API_KEY, settings.LLM_TIMEOUT,
                      settings.LLM_CONNECT_TIMEOUT)


@lru_cache(maxsize=4)
def llm_client(base_url: str, model: str, api_key: str, timeout: float, connect_timeout: float) -> VllmClient:
    return VllmClient(base_url, model=model, api_key=api_key, timeout=timeout, connect_timeout=connect_timeout)


@lru_cache(maxsize=1)
def get_reranker() -> Reranker | None:
    """The cross-encoder named by DOCQA_RERANK_MODEL, or None (the default: no reranking)."""
    if not settings.RERANK_MODEL:
        return None
    return Reranker(settings.RERANK_MODEL, top=settings.RERANK_TOP)
