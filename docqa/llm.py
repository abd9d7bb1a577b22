"""The language-model handle, built from settings. Kept apart from `services` so that the
ingest tasks, which use the embedder and store, never import the answer path."""

from __future__ import annotations

from django.conf import settings

from inference.llm import VllmClient


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
