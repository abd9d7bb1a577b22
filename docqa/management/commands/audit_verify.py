"""manage.py audit_verify: re-compute the audit trail's hash chain; non-zero naming the first broken row."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from docqa.actions import verify_audit_chain
from docqa.management.base import require_database


class Command(BaseCommand):
    help = "Verify that no audit event was edited, removed or reordered (exit 1 naming the first broken row)."

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        count, problems = verify_audit_chain()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            first = problems[0].split(":", 1)[0]
            raise CommandError(f"audit trail BROKEN at {first} (first of {len(problems)} problem(s) in {count} events)")
        self.stdout.write(f"audit trail intact: {count} events, chain verified")
