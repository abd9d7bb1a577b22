"""What the docqa management commands share: who is acting, and the embedded-mode set-up."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from docqa import actions, embedded, services
from ingest.errors import StoreLocked


def cli_actor(username: str | None) -> str:
    return f"cli:{username or getpass.getuser()}"


# Commands act with the authority of whoever runs them: without an account named, that is the
# server's operator (who holds the database's credentials anyway), recorded as cli:OSUSER. Naming
# a docqa account (`--user` on ask/ingest/runs, `--actor` on matter/retention) makes the command
# act as that account, with exactly the rights the web UI would give it, and records it.


def tokens_arg(text: str) -> int:
    """A token count as a person writes it: 16384, 16,384 or 16k (16 x 1024, as the tables label it)."""
    cleaned = text.strip().replace(",", "").replace("_", "").lower()
    try:
        return int(cleaned[:-1]) * 1024 if cleaned.endswith("k") else int(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count (write 16384, 16,384 or 16k)") from None


def files(count: int) -> str:
    """ "1 file", "3 files" """
    return f"{count:,} file" if count == 1 else f"{count:,} files"


def acting_as(name: str | None) -> tuple[str, Any]:
    """(audit actor, the docqa account acted as, or None for the operator)."""
    if not name:
        return cli_actor(None), None
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=name, is_active=True).first()
    if user is None:
        raise CommandError(f"no active docqa account {name!r} to act as (leave the option out to act as the operator)")
    return cli_actor(name), user


def matter_as(user: Any, slug: str, role: str = "viewer", *, doing: str = "use") -> Any:
    """The matter, if `user` (None: the operator) holds at least `role` in it; the same refusal otherwise."""
    from django.http import Http404

    from docqa.models import Matter
    from docqa.permissions import matter_for

    if user is None or user.is_superuser:  # they see every matter (bar walls): say when one is missing
        matter = Matter.objects.filter(slug=slug).first()
        if matter is None:
            raise CommandError(f"no matter {slug!r}; `manage.py matter list` lists them")
        if user is None:
            return matter
    try:
        return matter_for(user, slug, role)
    except Http404:
        # Whether the matter exists is not confirmed to someone who may not see it.
        raise CommandError(f"{user.get_username()} may not {doing} matter {slug!r}: no such matter, "
                           f"or not {'an' if role[0] in 'aeiou' else 'a'} {role} there") from None


def require_superuser(user: Any, doing: str) -> None:
    if user is not None and not user.is_superuser:
        raise CommandError(f"{user.get_username()} may not {doing}: only administrators (superusers) may")


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
    """Embedded default: lock var/ and run a Celery worker thread in this process, after closing
    the runs an earlier process left unfinished (its queue went with it)."""
    claim_embedded(purpose)
    if owns_its_queue() and not embedded.running():
        actions.log_interrupted_runs(actions.close_interrupted_runs())
    embedded.ensure_worker()


def shutdown(*, told: bool = False) -> None:
    """Stop this process's worker and close the store. The embedded default's queue dies with
    the worker, so a run it leaves unfinished (Ctrl-C, `--timeout`) is closed now, not left
    "running" with no one to finish it; logged unless the command tells it (`told`)."""
    if embedded.stop_worker() and owns_its_queue():
        closed = actions.close_interrupted_runs()
        if not told:
            actions.log_interrupted_runs(closed)
    services.close_store()


def left_behind(run: Any, why: str) -> str:
    """What became of the run a command stopped waiting for ("interrupted", "did not finish within
    60 s"), told after shutdown(): in the embedded default its unfinished files were recorded as
    cancelled; in services mode the workers go on with it."""
    from docqa.models import RunStatus

    if run is None:
        return f"{why} before the run was recorded; nothing was queued"
    run.refresh_from_db()
    stats = actions.run_stats(run)
    if run.status == RunStatus.RUNNING:
        return (f"{why}: run {run.id} goes on in the workers ({stats.done:,} of {files(stats.work)} done so far); "
                f"`manage.py runs --matter {run.matter.slug}` follows it")
    if run.status == RunStatus.CANCELLED:
        return (f"{why}: run {run.id} stopped with {stats.done:,} of "
                f"{files(stats.work)} done, the rest recorded as cancelled; {how_to_finish(run.id)}")
    return f"{why}, but run {run.id} had finished: " + ", ".join(f"{k} {v}" for k, v in run.counts_in_order.items())


def how_to_finish(run_id: int) -> str:
    return f"the same sync again, or `manage.py runs resume {run_id}`, does them"


def interrupted_waiting(stderr: Any, run: Any) -> CommandError:
    """Ctrl-C while a command waits on a run: the file in hand finishes, the rest is recorded, and
    the error returned (exit 130) says in one line how far the run got."""
    if settings.EMBEDDED_WORKER:  # in services mode the workers go on, as the one line says
        stderr.write("\ninterrupted: stopping (the file in hand finishes first)")
    else:
        stderr.write("")  # off the progress line
    shutdown(told=True)
    return CommandError(left_behind(run, "interrupted"), returncode=130)


def owns_its_queue() -> bool:
    """The embedded default, with var/'s lock held: only this process can work on any run."""
    return settings.EMBEDDED_WORKER and not settings.QDRANT_URL and services.holds_embedded_lock()

