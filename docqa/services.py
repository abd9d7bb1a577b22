"""Process-wide handles on the external services, built from settings on first use.

Heavy libraries load here lazily, once per process (in Celery: once per worker process). In the
embedded default the vector store's folder is locked to one process; `StoreLocked` says which.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

from django.conf import settings

from ingest.embed import Embedder
from ingest.errors import DocqaError, StoreLocked
from ingest.store import EdgeStore, ServerStore, VectorStore


class BrokerDown(DocqaError):
    """The task broker cannot be reached, so no work can be queued."""


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
        what = ("Use the web UI of the running server, or stop it first" if "web server" in holder else
                "Wait for it to finish, or stop it (Ctrl-C) first")
        raise StoreLocked(
            f"the embedded store under {settings.DATA_DIR} is in use by {holder}. {what}; or configure services "
            "mode (DOCQA_BROKER_URL and DOCQA_QDRANT_URL) so that several processes can share the data."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"docqa {purpose} (pid {os.getpid()})")
    handle.flush()
    _lock_handle = handle


def holds_embedded_lock() -> bool:
    return _lock_handle is not None


def release_embedded_lock() -> None:
    global _lock_handle
    if _lock_handle is not None:
        fcntl.flock(_lock_handle, fcntl.LOCK_UN)
        _lock_handle.close()
        _lock_handle = None


# kombu's Redis transport keeps a queue's messages of priority 0 in a list named after the queue
# and those of other priorities in lists with this separator and the priority appended; delivered
# but unacknowledged messages in one hash for all queues.
_PRIORITY_SEP = "\x06\x16"
_UNACKED_KEY = "unacked"


@dataclass
class BrokerHoldings:
    """What a Redis broker holds just now: whether docqa's queues are empty, and the item ids of
    the tasks delivered to workers and not yet acknowledged."""

    queues_empty: bool
    delivered: set[int]


@contextmanager
def broker_redis(timeout: float) -> Iterator[Any]:
    """A short-lived client of the broker's Redis (its errors are the caller's to catch)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=2)
    try:
        yield client
    finally:
        client.close()


def broker_holdings() -> BrokerHoldings | None:
    """None when the broker is not Redis, cannot be read just now, or names its keys otherwise
    than kombu's defaults (a key prefix, another separator or priorities): a wrong key would read
    as an empty queue, and every waiting file would look lost."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    options = set(settings.CELERY_BROKER_TRANSPORT_OPTIONS) - {
        "visibility_timeout", "unacked_restore_interval", "unacked_restore_throttle"}
    if options or getattr(settings, "CELERY_TASK_ROUTES", None):
        return None
    import redis

    queues = [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")] + ([settings.EMBED_QUEUE] if settings.SPLIT_QUEUES else [])
    lists = [name + suffix for name in queues for suffix in ("", *(f"{_PRIORITY_SEP}{p}" for p in (3, 6, 9)))]
    try:
        with broker_redis(5) as client, client.pipeline(transaction=False) as pipe:
            for name in lists:
                pipe.llen(name)
            pipe.hvals(_UNACKED_KEY)
            *lengths, unacked = pipe.execute()
    except redis.RedisError:
        return None
    delivered = set()
    for raw in unacked:
        item = task_item(raw)
        if item is False:
            return None  # a docqa task it cannot read: better no check than a wrong one
        if item is not None:
            delivered.add(item)
    return BrokerHoldings(queues_empty=not any(lengths), delivered=delivered)


def claim_resend(run_id: int, seconds: int) -> bool:
    """Whether this checker may send a run's lost tasks again now: the first of several (the
    `ingest` waiting on its run, every worker's watch thread) to ask wins, and no one else does
    for `seconds`, so that checks made at the same moment send each task once. False when Redis
    cannot be reached (the next check tries again)."""
    import redis

    try:
        with broker_redis(5) as client:
            return bool(client.set(f"docqa:resend:{run_id}", "1", nx=True, ex=seconds))
    except redis.RedisError:
        return False


def task_item(raw: bytes) -> int | None | bool:
    """The item id (every docqa task's first argument) of an unacknowledged message; None for
    another application's message, False for a docqa task that cannot be read."""
    try:
        message = json.loads(raw)[0]
        if not str(message.get("headers", {}).get("task", "")).startswith("ingest."):
            return None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    try:
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return int(json.loads(body)[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def shown_url(url: str) -> str:
    """A service's address as it may be shown and logged: its password, if any, as ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def require_broker() -> None:
    """Refuse work that could not be queued before anything of it is recorded: in services mode,
    a run recorded as running whose tasks never reached the broker would wait forever."""
    url = settings.CELERY_BROKER_URL
    if settings.EMBEDDED_WORKER or not url.startswith(("redis://", "rediss://", "unix://")):
        return
    import redis

    try:
        with broker_redis(3) as client:
            client.ping()
    except redis.RedisError as exc:
        raise BrokerDown(f"the task broker at {shown_url(url)} cannot be reached ({exc}); nothing was queued "
                         "or recorded: start Redis, or check DOCQA_BROKER_URL") from None


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
        with broker_redis(2) as client:
            return str(client.info("server")["run_id"])
    except redis.RedisError:
        return ""
