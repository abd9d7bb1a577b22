"""Process-wide handles on the external services, built from settings on first use.

Heavy libraries load here lazily, once per process (in Celery: once per worker process). In the
embedded default the vector store's folder is locked to one process; `StoreLocked` says which.
"""

from __future__ import annotations

import fcntl
import os
import threading
from functools import lru_cache
from typing import IO

from django.conf import settings

from ingest.embed import Embedder
from ingest.errors import StoreLocked
from ingest.store import EdgeStore, ServerStore, VectorStore

_lock = threading.Lock()
_store: VectorStore | None = None
_lock_handle: IO[str] | None = None


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    return Embedder(batch_size=settings.EMBED_BATCH_SIZE, device=settings.EMBED_DEVICE)


def get_store() -> VectorStore:
    global _store
    with _lock:
        if _store is None:
            dimension = get_embedder().dimension
            if settings.QDRANT_URL:
                _store = ServerStore(
                    settings.QDRANT_URL, settings.QDRANT_COLLECTION, dimension, api_key=settings.QDRANT_API_KEY
                )
            else:
                claim_embedded_lock("vector store")
                _store = EdgeStore(settings.QDRANT_EDGE_PATH, dimension)
        return _store


def close_store() -> None:
    global _store
    with _lock:
        if _store is not None:
            _store.close()
            _store = None
        release_embedded_lock()


def claim_embedded_lock(purpose: str) -> None:
    """Hold var/'s lock for this process, or raise StoreLocked naming who holds it.

    Never blocks: a second process (a CLI command while the server runs) learns at once.
    """
    global _lock_handle
    if _lock_handle is not None:
        return
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    handle = open(settings.LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreLocked(
            f"the embedded store under {settings.DATA_DIR} is in use by {holder}. "
            "Use the web UI of the running server, stop it first, or configure services mode "
            "(DOCQA_BROKER_URL and DOCQA_QDRANT_URL) so that several processes can share the data."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"docqa {purpose} (pid {os.getpid()})")
    handle.flush()
    _lock_handle = handle


def release_embedded_lock() -> None:
    global _lock_handle
    if _lock_handle is not None:
        fcntl.flock(_lock_handle, fcntl.LOCK_UN)
        _lock_handle.close()
        _lock_handle = None


def broker_epoch() -> str:
    """Which Redis server instance the broker is: its run_id changes at every restart.

    "" when the broker is not Redis (the embedded memory transport dies with its process, and a
    durable broker keeps its queues) or cannot be reached just now.
    """
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return ""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()
    except redis.RedisError:
        return ""
