"""Mode selection: no variable means the embedded default; each DOCQA_*_URL switches one part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PROBE = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "db": s.DATABASES["default"]["ENGINE"], "db_name": str(s.DATABASES["default"]["NAME"]),
    "broker": s.CELERY_BROKER_URL, "embedded_worker": s.EMBEDDED_WORKER,
    "qdrant": s.QDRANT_URL, "edge": str(s.QDRANT_EDGE_PATH), "llm": s.LLM_BASE_URL,
    "model": s.LLM_MODEL, "key": s.LLM_API_KEY, "data": str(s.DATA_DIR),
}))
"""


def probe(tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    clean.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"), **env)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=clean, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_settings_without_variables_are_the_embedded_default(tmp_path: Path) -> None:
    s = probe(tmp_path)

    assert s["db"] == "django.db.backends.sqlite3" and s["db_name"].startswith(str(tmp_path / "var"))
    assert s["broker"].startswith("memory://") and s["embedded_worker"] is True
    assert s["qdrant"] == "" and s["edge"] == str(tmp_path / "var" / "qdrant-edge")
    assert s["llm"] == ""


def test_settings_switch_each_part_to_a_service(tmp_path: Path) -> None:
    s = probe(
        tmp_path,
        DOCQA_DATABASE_URL="postgres://app:pw@db:5432/docqa",
        DOCQA_BROKER_URL="redis://redis:6379/0",
        DOCQA_QDRANT_URL="http://qdrant:6333",
        DOCQA_LLM_BASE_URL="http://vllm:8000/v1/",
        DOCQA_LLM_MODEL="gpt-oss-120b",
    )

    assert s["db"] == "django.db.backends.postgresql" and s["db_name"] == "docqa"
    assert s["broker"] == "redis://redis:6379/0" and s["embedded_worker"] is False
    assert s["qdrant"] == "http://qdrant:6333"
    assert s["llm"] == "http://vllm:8000/v1" and s["model"] == "gpt-oss-120b"


def test_settings_read_secrets_from_file_variants(tmp_path: Path) -> None:
    secret = tmp_path / "llm_key"
    secret.write_text("s3cret\n")

    s = probe(tmp_path, DOCQA_LLM_API_KEY_FILE=str(secret))

    assert s["key"] == "s3cret"


@pytest.mark.parametrize("given, said", [
    ({"DOCQA_DATABASE_URL": "mysql://x/y"}, "DOCQA_DATABASE_URL: unsupported scheme 'mysql': use postgres://"),
    ({"DOCQA_LLM_EFFORT": "max"}, "DOCQA_LLM_EFFORT is one of low, medium, high, not 'max'"),
    ({"DOCQA_RETENTION_DAYS": "100000000"}, "DOCQA_RETENTION_DAYS is 0 (keep forever) to 36,500"),
    # Workers are processes of their own; the embedded engine opens in one: every file failed.
    ({"DOCQA_BROKER_URL": "redis://127.0.0.1:6379/15"}, "DOCQA_BROKER_URL needs DOCQA_QDRANT_URL"),
])
def test_settings_refuse_what_cannot_work_in_one_line(tmp_path: Path, given: dict[str, str], said: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    clean.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"), **given)

    result = subprocess.run([sys.executable, "manage.py", "doctor"], cwd=REPO, env=clean, capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 1 and result.stderr.startswith(said) and "Traceback" not in result.stderr


def test_check_deploy_is_clean_in_services_mode_behind_https(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"), DOCQA_HTTPS="1",
               DOCQA_DATABASE_URL="postgres://postgres@127.0.0.1:5432/docqa_deploy_check",
               DOCQA_BROKER_URL="redis://127.0.0.1:6379/15", DOCQA_QDRANT_URL="http://127.0.0.1:6333",
               DOCQA_SECRET_KEY="k" * 20 + "-deploy-check-" + "x" * 30, DOCQA_ALLOWED_HOSTS="docqa.example.internal")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_https_turns_on_secure_cookies_redirects_and_hsts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DOCQA_DATA_DIR=str(tmp_path / "var"), DOCQA_HTTPS="1")
    probe = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='docqa.settings'; django.setup();"
             "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
             " s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.SECURE_PROXY_SSL_HEADER[0])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "True", "HTTP_X_FORWARDED_PROTO"]
