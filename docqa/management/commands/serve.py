"""manage.py serve [ADDR:PORT]: the web UI, with the embedded default's worker in-process."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions, services
from docqa.management.base import require_database, shutdown, start_local_work
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = "Serve the web UI with waitress (embedded default: also runs the task worker in this process)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000",
                            help="HOST:PORT to listen on (default 127.0.0.1:8000); a port alone listens on 127.0.0.1")
        parser.add_argument("--threads", type=int, default=8, help="requests served at once (default 8)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["addrport"].isdigit():  # `serve 8001`, as Django's runserver takes it
            options["addrport"] = f"127.0.0.1:{options['addrport']}"
        host, _, port = options["addrport"].rpartition(":")
        if not host or not port.isdigit():
            raise CommandError("give the address as HOST:PORT, e.g. 127.0.0.1:8000")
        from waitress.server import create_server

        from docqa.wsgi import application

        require_database()
        start_local_work(f"the web server at http://{options['addrport']}/")
        try:
            try:
                services.get_store()  # open (and lock) the store now, so a problem shows at start
                actions.build_vector_index()  # index what web-started runs wrote since (blocks, so before listening)
            except DocqaError as exc:  # the vector store cannot be opened or reached: said in one line
                raise CommandError(f"cannot start: {exc}") from exc
            try:
                server = create_server(application, host=host, port=int(port), threads=options["threads"], ident="docqa")
            except OSError as exc:
                raise CommandError(f"cannot serve on {options['addrport']}: {exc.strerror or exc}") from exc
            self.stdout.write(f"docqa is serving on http://{options['addrport']}/ (Ctrl-C stops it)")
            try:
                server.run()
            except KeyboardInterrupt:
                pass
        finally:
            shutdown()
