"""What the docqa management commands share: who is acting, and the embedded-mode set-up."""

from __future__ import annotations

import getpass

from django.conf import settings
from django.core.management.base import CommandError

from docqa import embedded, services
from ingest.errors import StoreLocked


def cli_actor(username: str | None) -> str:
    return f"cli:{username or getpass.getuser()}"


def claim_embedded(purpose: str) -> None:
    """In the embedded default, take var/'s lock or stop at once with the reason."""
    if settings.QDRANT_URL:
        return
    try:
        services.claim_embedded_lock(purpose)
    except StoreLocked as exc:
        raise CommandError(str(exc)) from exc


def start_local_work(purpose: str) -> None:
    """Embedded default: lock var/ and run a Celery worker thread in this process."""
    claim_embedded(purpose)
    embedded.ensure_worker()


def shutdown() -> None:
    embedded.stop_worker()
    services.close_store()
