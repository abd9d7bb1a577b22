"""The Celery application. Configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

from docqa import offline  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docqa.settings")

app = Celery("docqa")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("ingest.tasks",)
