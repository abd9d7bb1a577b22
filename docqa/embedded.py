"""The embedded default's task queue: a Celery worker thread inside this process.

With no broker configured Celery uses the in-memory transport, so only a worker in the same
process can see the tasks. The web server and the management commands start one here; it
shares the process's embedding model and embedded vector store.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.db import connections

_worker: Any = None
_thread: threading.Thread | None = None
_guard = threading.Lock()


def ensure_worker() -> None:
    """Start the in-process worker once (no-op in services mode, where workers are processes)."""
    global _worker, _thread
    if not settings.EMBEDDED_WORKER:
        return
    with _guard:
        if _worker is not None:
            return
        from docqa.celery import app

        ready = threading.Event()
        worker = app.WorkController(
            pool_cls="solo",
            concurrency=1,
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=lambda consumer: ready.set(),
        )

        def run() -> None:
            try:
                worker.start()
            finally:  # its database connection goes with it, not left open after a stop
                connections.close_all()

        thread = threading.Thread(target=run, name="docqa-embedded-worker", daemon=True)
        thread.start()
        if not ready.wait(timeout=60):
            raise RuntimeError("the in-process Celery worker did not start within 60 s")
        _worker, _thread = worker, thread


def running() -> bool:
    return _worker is not None


def stop_worker() -> bool:
    """Stop the in-process worker and wait (a while) for its thread to end and close its
    database connection. Whether there was one to stop."""
    global _worker, _thread
    with _guard:
        if _worker is None:
            return False
        _worker.stop(in_sighandler=False)
        if _thread is not None:
            _thread.join(timeout=30)
        _worker, _thread = None, None
        return True
