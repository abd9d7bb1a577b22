"""Heavy AI libraries load only where they are used, never by importing the web app."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ["torch", "sentence_transformers", "transformers", "unstructured", "llama_index", "qdrant_edge", "spacy"]


def test_importing_the_web_app_and_tasks_loads_no_heavy_library(tmp_path) -> None:
    code = (
        "import django, json, sys; django.setup();"
        "import docqa.urls, docqa.views, docqa.actions, ingest.tasks;"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "docqa.settings", "DOCQA_DATA_DIR": str(tmp_path)}
    env.pop("DOCQA_DATABASE_URL", None)

    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"
