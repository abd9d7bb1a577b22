"""The Celery application. Configured from Django settings (CELERY_* names)."""

import logging
import os
import threading
import time

from celery import Celery
from celery.signals import worker_ready

from docqa import offline  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docqa.settings")

app = Celery("docqa")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("ingest.tasks",)

logger = logging.getLogger(__name__)
BROKER_WATCH_S = 15


@worker_ready.connect
def watch_broker_restarts(**kwargs: object) -> None:
    """In each worker's main process, resend the tasks of running runs if Redis restarted.

    `ingest` does the same while it waits; this covers runs that nobody waits on (started from
    the web UI). Several workers may watch: only one of them wins each resend.
    """
    from django.conf import settings

    if settings.EMBEDDED_WORKER:
        return

    def watch() -> None:
        from django.db import close_old_connections

        from docqa.actions import resend_all_lost_tasks

        while True:
            time.sleep(BROKER_WATCH_S)
            try:
                resend_all_lost_tasks()
            except Exception:  # the database or broker may be down for a moment; try again later
                logger.warning("could not check the broker for lost tasks", exc_info=True)
            finally:
                close_old_connections()

    threading.Thread(target=watch, name="docqa-broker-watch", daemon=True).start()
