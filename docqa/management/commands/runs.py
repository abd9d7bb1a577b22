"""manage.py runs: list ingest runs, cancel or resume one, retry its failures, export them as CSV.

    runs [--matter SLUG]          the latest runs with their counts
    runs cancel RUN               stop queued work (files in progress finish)
    runs resume RUN               queue again what a cancelled or crashed run left unfinished
    runs retry RUN                queue the failed files again
    runs failures RUN             failures and skipped files as CSV, on standard output
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import (
    acting_as,
    files,
    interrupted_waiting,
    matter_as,
    require_database,
    shutdown,
    start_local_work,
)
from docqa.models import IngestRun, Matter, Role, RunStatus
from docqa.permissions import readable_matters
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = "List ingest runs; cancel, resume or retry one; export its failures as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", nargs="?", choices=["list", "cancel", "resume", "retry", "failures"], default="list")
        parser.add_argument("run", nargs="?", type=int)
        parser.add_argument("--matter", help="only this matter's runs (list)")
        parser.add_argument("--user", help="act as this docqa account (its role in the run's matter is checked)")
        parser.add_argument("--no-wait", action="store_true", help="resume/retry: queue the work and return")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        actor, account = acting_as(options["user"])
        if options["action"] == "list":
            return self.list_runs(options["matter"], account)
        if options["run"] is None:
            raise CommandError(f"runs {options['action']} needs the run's number; `manage.py runs` lists them")
        run = IngestRun.objects.filter(id=options["run"]).select_related("matter", "source").first()
        if run is not None and account is not None:
            try:
                matter_as(account, run.matter.slug, Role.VIEWER)
            except CommandError:
                run = None  # a run of a matter the account may not read: as if it did not exist
            else:  # one it can see (`runs` lists it): the refusal says why, as `ingest`'s does
                role = Role.VIEWER if options["action"] == "failures" else Role.EDITOR
                matter_as(account, run.matter.slug, role, doing=f"{options['action']} runs of")
        if run is None:
            raise CommandError(f"no ingest run {options['run']!r}; `manage.py runs` lists them")
        if options["action"] == "failures":
            self.stdout.write(actions.failures_csv(run), ending="")
        elif options["action"] == "cancel":
            try:
                cancelled = actions.do_cancel_run(run, actor)
            except DocqaError as exc:  # a finished or already cancelled run
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"run {run.id} cancelled: {cancelled:,} queued file{'s' if cancelled != 1 else ''} will "
                              "not be processed (files already being processed finish)")
        else:
            self.requeue(run, actor, options)

    def requeue(self, run: IngestRun, actor: str, options: dict[str, Any]) -> None:
        requeue = actions.do_resume_run if options["action"] == "resume" else actions.do_retry_failed
        start_local_work(f"runs {options['action']} command")
        try:
            queued = requeue(run, actor)
            self.stdout.write(f"run {run.id}: {files(queued)} queued again")
            if queued and not options["no_wait"]:
                run = actions.wait_for_run(run)
                actions.build_vector_index(after=run)
        except DocqaError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:  # as for `ingest`: the file in hand finishes, the rest is recorded
            raise interrupted_waiting(self.stderr, run) from None
        finally:
            shutdown()
        if run.status == RunStatus.RUNNING:  # --no-wait: the workers go on with it
            self.stdout.write(f"run {run.id} running: {live_progress(run)}; `manage.py runs --matter "
                              f"{run.matter.slug}` follows it")
            return
        self.stdout.write(f"run {run.id} {run.status}: " + ", ".join(f"{k} {v}" for k, v in run.counts_in_order.items()))

    def list_runs(self, matter: str | None, account: Any) -> None:
        runs = IngestRun.objects.select_related("matter", "source").order_by("-id")
        if account is not None:
            runs = runs.filter(matter__in=readable_matters(account))
        if matter:
            if account is not None:
                matter_as(account, matter, Role.VIEWER, doing="list runs of")
            elif not Matter.objects.filter(slug=matter).exists():
                raise CommandError(f"no matter {matter!r}; `manage.py matter list` lists them")
            runs = runs.filter(matter__slug=matter)
        latest = list(runs[:50])
        actions.finish_completed_runs([r for r in latest if r.status in (RunStatus.RUNNING, RunStatus.CANCELLED)])
        for run in latest:
            counts = (live_progress(run) if run.status == RunStatus.RUNNING
                      else ", ".join(f"{k} {v}" for k, v in run.counts_in_order.items() if v) or "-")
            self.stdout.write(f"{run.id:>5}  {run.status:<9}  {run.matter.slug:<16}  {run.started_at:%Y-%m-%d %H:%M}  "
                              f"{run.source.root}  {counts}")


def live_progress(run: IngestRun) -> str:
    """A running run's figures so far: "412 of 1,008 files done, 3 failed"."""
    stats = actions.run_stats(run)
    failed = f", {stats.failed:,} failed" if stats.failed else ""
    return f"{stats.done:,} of {files(stats.work)} done{failed}"
