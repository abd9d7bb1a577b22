"""Folder-tree ingestion: discover -> parse -> chunk -> embed -> index.

Plain Python: nothing here imports Django or Celery except `ingest.tasks`, the adapter.
"""
