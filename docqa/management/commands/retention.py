"""manage.py retention [--dry-run] [--days N]: expire old question and answer content (run daily)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import acting_as, require_database, require_superuser
from ingest.errors import DocqaError

MAX_DAYS = 36_500  # past this the cut-off date is before year 1: a traceback, not a retention period


class Command(BaseCommand):
    help = ("Replace question text, answers, reasoning, quotes and sources as sent that are older than "
            "DOCQA_RETENTION_DAYS by their sha256, outside matters under legal hold (audited).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="override DOCQA_RETENTION_DAYS for this run")
        parser.add_argument("--dry-run", action="store_true", help="count what would expire; change nothing")
        parser.add_argument("--actor", default=None, help="act as this docqa account (an administrator)")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        actor, account = acting_as(options["actor"])
        require_superuser(account, "apply retention")
        if options["days"] is not None and not 1 <= options["days"] <= MAX_DAYS:
            raise CommandError(f"--days must be 1 to {MAX_DAYS:,} (a hundred years), not {options['days']:,}")
        if options["days"] is None and settings.RETENTION_DAYS <= 0:  # off: a daily cron job is not an error
            self.stdout.write("retention is off (DOCQA_RETENTION_DAYS is 0): nothing expires")
            return
        try:
            report = actions.do_expire(actor, days=options["days"], dry_run=options["dry_run"])
        except DocqaError as exc:
            raise CommandError(str(exc)) from exc
        verb = "would expire" if options["dry_run"] else "expired"
        self.stdout.write(f"{verb}: {report.questions} question(s) and {report.events} audit event(s) "
                          f"older than {report.cutoff:%Y-%m-%d %H:%M} UTC")
        if report.held:
            self.stdout.write(f"kept under legal hold: {', '.join(report.held)}")
        if report.unverifiable:
            self.stderr.write(f"left alone, their hashes do not verify (run audit_verify): "
                              f"events {', '.join(map(str, report.unverifiable[:20]))}")
