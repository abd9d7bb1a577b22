"""docqa: the Django project and app."""

from docqa.celery import app as celery_app

__all__ = ("celery_app",)
