"""manage.py ingest PATH --matter SLUG [--json]: mirror a folder tree into a matter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import (
    acting_as,
    files,
    how_to_finish,
    interrupted_waiting,
    left_behind,
    matter_as,
    require_database,
    shutdown,
    start_local_work,
)
from docqa.models import Role, RunStatus
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = "Sync a folder tree into a matter (new, changed and deleted files) and wait for the run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--matter", required=True, help="matter slug; created if missing")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--user", help="act as this docqa account (an editor of the matter); default: the operator")
        parser.add_argument("--timeout", type=float, default=None, help="give up waiting after N seconds")
        parser.add_argument("--allow-empty", action="store_true",
                            help="sync an empty folder even though the matter holds documents from it (removes them)")

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["path"]
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder")
        require_database()
        actor, account = acting_as(options["user"])
        if account is not None:  # an account syncs only matters it edits, from their folders; the operator any
            from docqa.sources import checked_folder

            matter = matter_as(account, options["matter"], Role.EDITOR, doing="sync folders into")
            try:
                checked_folder(matter, str(root))
            except DocqaError as exc:
                raise CommandError(str(exc)) from exc
        try:
            matter = actions.get_or_create_matter(options["matter"], actor)
        except DocqaError as exc:  # a name that cannot stand in an address
            raise CommandError(str(exc)) from exc
        start_local_work("ingest command")
        run = None
        try:
            run = actions.do_start_ingest(matter, root, actor, allow_empty=options["allow_empty"])
            run = actions.wait_for_run(run, timeout=options["timeout"], on_progress=self.progress)
            if run.counts.get("indexed") and sys.stderr.isatty():
                sys.stderr.write("\r" + progress_line(actions.run_stats(run)) + "   indexing vectors...")
                sys.stderr.flush()
            actions.build_vector_index(after=run)
        except DocqaError as exc:
            raise CommandError(str(exc)) from exc
        except TimeoutError:
            shutdown(told=True)
            raise CommandError(left_behind(run, f"gave up waiting after {options['timeout']:g} s")) from None
        except KeyboardInterrupt:  # Ctrl-C: the file in hand finishes, the rest is recorded; one line says so
            raise interrupted_waiting(self.stderr, run) from None
        finally:
            shutdown()
        if sys.stderr.isatty():
            sys.stderr.write("\r" + progress_line(actions.run_stats(run)) + " " * 24 + "\n")  # over "indexing vectors..."
        report = actions.run_report(run)
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
        self.stdout.write(f"run {run.id} on matter {matter.slug}: {counts}")
        for line in actions.took_over_text(run):
            self.stdout.write(f"  {line}")
        for failure in report["failures"]:
            self.stdout.write(f"  failed: {failure['path']}: {failure['error']}")
        for skipped in report["skipped"]:
            self.stdout.write(f"  passed over: {skipped['path']}: {skipped['reason']}")
        if run.status == RunStatus.CANCELLED:  # by `runs cancel` or the web page, while this command waited
            self.stdout.write(f"run {run.id} was cancelled before it finished: {files(run.counts.get('cancelled', 0))} "
                              f"not processed; {how_to_finish(run.id)}")
        if report["failures"]:  # the run itself completed (exit 0); what failed is tried again at the next sync
            self.stdout.write(f"{files(len(report['failures']))} failed; `manage.py runs retry {run.id}` or the "
                              f"next sync tries {'it' if len(report['failures']) == 1 else 'them'} again")

    def progress(self, stats: actions.RunStats) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\r" + progress_line(stats) + "   ")
            sys.stderr.flush()


def progress_line(stats: actions.RunStats, width: int = 24) -> str:
    """[#########...............] 45/120 files · 1,234 pages · 5,678 chunks · 3.2 files/s · ETA 0:25"""
    filled = int(width * stats.done / stats.work) if stats.work else width
    eta = "--" if stats.eta is None else f"{int(stats.eta) // 60}:{int(stats.eta) % 60:02d}"
    failed = f" · {stats.failed} failed" if stats.failed else ""
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {stats.done}/{stats.work} files · {stats.pages:,} pages · "
        f"{stats.chunks:,} chunks · {stats.rate:.1f} files/s · ETA {eta}{failed}"
    )
