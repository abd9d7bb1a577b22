"""What the docqa management commands share: who is acting, and the embedded-mode set-up."""

from __future__ import annotations

import getpass

from django.conf import settings
from django.core.management.base import CommandError

from docqa import embedded, services
from ingest.errors import StoreLocked


def cli_actor(username: str | None) -> str:
    return f"cli:{username or getpass.getuser()}"


def require_database() -> None:
    """Stop with the fix, not a stack trace, when the database has not been set up."""
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # an unreachable database says why in its own words
        raise CommandError(f"cannot reach the database: {exc}") from exc
    if pending:
        raise CommandError(
            f"the database is not set up ({len(pending)} migrations pending): run "
            "`python manage.py migrate` first (`make run` does it for you)"
        )


def claim_embedded(purpose: str) -> None:
    """Check the database; in the embedded default, take var/'s lock or stop at once with the reason."""
    require_database()
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
