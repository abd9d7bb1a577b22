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
from docqa.management.base import cli_actor, require_database, shutdown, start_local_work
from docqa.models import IngestRun


class Command(BaseCommand):
    help = "List ingest runs; cancel, resume or retry one; export its failures as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", nargs="?", choices=["list", "cancel", "resume", "retry", "failures"], default="list")
        parser.add_argument("run", nargs="?", type=int)
        parser.add_argument("--matter", help="only this matter's runs (list)")
        parser.add_argument("--user", help="name recorded in the audit trail (default: OS user)")
        parser.add_argument("--no-wait", action="store_true", help="resume/retry: queue the work and return")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        if options["action"] == "list":
            return self.list_runs(options["matter"])
        run = IngestRun.objects.filter(id=options["run"]).select_related("matter", "source").first()
        if run is None:
            raise CommandError(f"no ingest run {options['run']!r}; `manage.py runs` lists them")
        actor = cli_actor(options["user"])
        if options["action"] == "failures":
            self.stdout.write(actions.failures_csv(run), ending="")
        elif options["action"] == "cancel":
            cancelled = actions.do_cancel_run(run, actor)
            self.stdout.write(f"run {run.id} cancelled: {cancelled} queued files will not be processed")
        else:
            self.requeue(run, actor, options)

    def requeue(self, run: IngestRun, actor: str, options: dict[str, Any]) -> None:
        requeue = actions.do_resume_run if options["action"] == "resume" else actions.do_retry_failed
        start_local_work(f"runs {options['action']} command")
        try:
            queued = requeue(run, actor)
            self.stdout.write(f"run {run.id}: {queued} files queued again")
            if queued and not options["no_wait"]:
                run = actions.wait_for_run(run)
        finally:
            shutdown()
        self.stdout.write(f"run {run.id} {run.status}: " + ", ".join(f"{k} {v}" for k, v in run.counts.items()))

    def list_runs(self, matter: str | None) -> None:
        runs = IngestRun.objects.select_related("matter", "source").order_by("-id")
        if matter:
            runs = runs.filter(matter__slug=matter)
        for run in runs[:50]:
            counts = ", ".join(f"{k} {v}" for k, v in run.counts.items() if v) or "-"
            self.stdout.write(f"{run.id:>5}  {run.status:<9}  {run.matter.slug:<16}  {run.started_at:%Y-%m-%d %H:%M}  "
                              f"{run.source.root}  {counts}")
