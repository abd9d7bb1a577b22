"""Test settings: the real settings module, fed the environment the suite runs in.

The database is PostgreSQL (pytest-django creates test_<name>); data, the embedded vector store
and its lock live in a temporary folder. Everything else is the embedded default unless a test
switches a part to a service.
"""

import os
import tempfile

os.environ.setdefault("DOCQA_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/docqa")
os.environ.setdefault("DOCQA_DATA_DIR", tempfile.mkdtemp(prefix="docqa-test-"))
os.environ.setdefault("DOCQA_REDIS_TEST_URL", "redis://127.0.0.1:6379/15")

from docqa.settings import *  # noqa: E402,F403

# Tests create many users: a fast hasher keeps that cheap (production keeps Django's PBKDF2).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
