"""manage.py verify_audit: check the audit trail's hash chain from the first event to the last."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from docqa.actions import verify_audit_chain


class Command(BaseCommand):
    help = "Verify that no audit event was edited, removed or reordered."

    def handle(self, *args: Any, **options: Any) -> None:
        count, problems = verify_audit_chain()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"audit trail BROKEN: {len(problems)} problem(s) in {count} events")
        self.stdout.write(f"audit trail intact: {count} events, chain verified")
