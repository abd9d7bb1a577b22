"""manage.py serve [ADDR:PORT]: the web UI, with the embedded default's worker in-process."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from docqa import services
from docqa.management.base import shutdown, start_local_work


class Command(BaseCommand):
    help = "Serve the web UI (embedded default: also runs the task worker in this process)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        start_local_work(f"the web server at http://{options['addrport']}/")
        services.get_store()  # open (and lock) the store now, so a problem shows at start
        try:
            call_command("runserver", options["addrport"], use_reloader=False, use_threading=True)
        finally:
            shutdown()
