"""manage.py reindex [--matter SLUG]: make the next ingest parse and embed every file again.

Needed after the vector store was replaced (for example one made by an earlier docqa without
lexical vectors, moved away) or after changing the chunking settings. The matter's points are
removed and its documents marked pending, so the next `ingest` of each folder indexes them all.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from docqa import actions, services
from docqa.management.base import claim_embedded, cli_actor, require_database
from docqa.models import Document, DocumentStatus, IngestRun, Matter, RunStatus
from ingest.errors import StoreError


class Command(BaseCommand):
    help = "Forget what is indexed so that the next ingest parses and embeds every file again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--matter", help="only this matter (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        matters = Matter.objects.all()
        if options["matter"]:
            matters = matters.filter(slug=options["matter"])
            if not matters.exists():
                raise CommandError(f"no matter {options['matter']!r}")
        running = IngestRun.objects.filter(matter__in=matters, status=RunStatus.RUNNING)
        if running.exists():
            raise CommandError(f"ingest run {running.first().id} is still running; wait for it or cancel it first")
        claim_embedded("reindex command")
        documents = Document.objects.filter(matter__in=matters).exclude(status=DocumentStatus.DELETED)
        try:
            store = services.get_store()
            for document_id in documents.values_list("id", flat=True):
                store.delete_document(document_id)
        except StoreError as exc:
            raise CommandError(f"{exc}") from exc
        finally:
            services.close_store()
        with transaction.atomic():
            count = documents.update(status=DocumentStatus.PENDING, sha256="", chunk_count=0)
            for matter in matters:
                actions.record_audit(cli_actor(None), "index.reset", matter, {"documents": count})
        self.stdout.write(f"{count} documents will be parsed and embedded again at the next ingest of their folders")
