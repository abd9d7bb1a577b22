"""manage.py audit_verify: re-compute the audit trail's hash chain; non-zero naming the first broken row."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa.actions import verify_audit_chain
from docqa.management.base import require_database
from docqa.models import AuditEvent


class Command(BaseCommand):
    help = ("Verify that no audit event was edited, removed or reordered (exit 1 naming the first broken row). "
            "The chain cannot show newest events cut off its end: keep the head it prints somewhere else, "
            "and give it back with --head.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--head", metavar="ID:HASH", help="a head printed by an earlier check: that event must "
                                                              "still be there, unchanged, with the chain through it")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        count, problems = verify_audit_chain()
        if options["head"]:
            event_id, _, digest = options["head"].partition(":")
            if not event_id.isdigit() or not digest:
                raise CommandError(f"--head {options['head']!r}: give it as ID:HASH, as an earlier check printed it")
            kept = AuditEvent.objects.filter(id=int(event_id)).values_list("hash", flat=True).first()
            if kept != digest:
                problems.append(f"event {event_id}: the head recorded earlier is "
                                f"{'gone (the newest events were removed)' if kept is None else 'not as recorded'}")
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            first = problems[0].split(":", 1)[0]
            raise CommandError(f"audit trail BROKEN at {first} (first of {len(problems)} problem(s) in {count} events)")
        head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
        self.stdout.write(f"audit trail intact: {count} events, chain verified"
                          + (f"; head {head[0]}:{head[1]} (keep it elsewhere; `audit_verify --head` checks it later)"
                             if head else ""))
