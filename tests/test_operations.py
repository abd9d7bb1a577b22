"""Operations: `manage.py doctor`, Prometheus metrics at /metrics, JSON-lines logs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


def doctor(*args: str) -> str:
    out = io.StringIO()
    call_command("doctor", *args, stdout=out)
    return out.getvalue()


def test_the_embedded_default_checks_out(data_dir: Path) -> None:
    report = doctor()
    lines = {line.split()[1]: line.split()[0] for line in report.splitlines() if not line.startswith(" ")}
    assert lines == {"database": "ok", "broker": "ok", "workers": "ok", "qdrant": "ok", "embedding": "ok",
                     "tokenizer": "ok", "vllm": "warn", "disk": "ok"}, report
    assert "fix: set DOCQA_LLM_BASE_URL" in report  # search-only mode is a warning with its fix


def test_vllm_is_checked_for_health_and_its_window(data_dir: Path, standin: Any) -> None:
    assert "gpt-oss-120b at" in doctor("--skip", "embedding") and "max_model_len 131,072" in doctor("--skip", "qdrant")
    standin.max_model_len = 32768
    report = doctor("--skip", "embedding", "--skip", "qdrant")
    assert "warn  vllm" in report and "packing is sized for 131,072" in report and "--max-model-len 131072" in report


def test_a_part_that_is_down_fails_with_its_fix(data_dir: Path, settings: Any) -> None:
    settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens there
    settings.EMBEDDED_WORKER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"\d check\(s\) failed"):
        call_command("doctor", "--skip", "embedding", stdout=out)
    report = out.getvalue()
    assert "FAIL  broker" in report and "fix: start Redis, or point DOCQA_BROKER_URL at it" in report
    assert "skip  workers    the broker is down" in report  # never a hang asking a dead broker
    assert "FAIL  vllm" in report and "fix: wait for vLLM to finish starting" in report


def seed_activity() -> None:
    """One answered question and a finished run of three files (one failed)."""
    from datetime import timedelta

    from django.utils import timezone

    from docqa.models import Answer, IngestItem, IngestRun, Matter, Question, Source

    matter = Matter.objects.create(slug="acme", name="Acme")
    question = Question.objects.create(matter=matter, actor="t", text="q?", budget=1000)
    Answer.objects.create(question=question, mode="llm", text="a", latency_ms=1500,
                          usage={"prompt_tokens": 123456789, "completion_tokens": 300, "cached_tokens": 4096})
    run = IngestRun.objects.create(matter=matter, source=Source.objects.create(matter=matter, root="/x"), actor="t")
    now = timezone.now()
    for i, state in enumerate(("indexed", "indexed", "failed")):
        IngestItem.objects.create(run=run, path=f"f{i}", change="new", state=state, pages=4, chunks=10,
                                  started_at=now, finished_at=now + timedelta(seconds=0.3 + i * 3))


EXPECTED = ['docqa_questions_total{mode="llm"} 1', "docqa_prompt_tokens_total 123456789",
            "docqa_cached_prompt_tokens_total 4096", 'docqa_question_latency_seconds_bucket{le="2"} 1',
            'docqa_question_latency_seconds_bucket{le="1"} 0', "docqa_question_latency_seconds_sum 1.5",
            'docqa_ingest_files_total{state="failed"} 1', "docqa_ingest_pages_total 8", "docqa_ingest_chunks_total 20",
            'docqa_ingest_file_seconds_bucket{le="0.5"} 1', 'docqa_ingest_file_seconds_bucket{le="5"} 2',
            "docqa_ingest_file_seconds_count 2", 'docqa_ingest_runs{status="running"} 1']


def test_metrics_need_the_token_and_count_questions_and_files(settings: Any, client: Any) -> None:
    seed_activity()
    assert client.get("/metrics").status_code == 404  # no token configured: no endpoint
    settings.METRICS_TOKEN = "s3cret-scrape"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape")
    body = response.content.decode()
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    for line in EXPECTED:
        assert line in body.splitlines(), line
    assert "acme" not in body  # no matter, user or file names
    assert r"^metrics$" in settings.SECURE_REDIRECT_EXEMPT  # scraped over plain HTTP inside the network


SQLITE_METRICS = """
import os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "docqa.settings"
django.setup()
from tests.test_operations import seed_activity
from docqa.metrics import exposition
seed_activity()
print(exposition())
"""


def test_metrics_read_the_same_from_sqlite(tmp_path: Path) -> None:
    from tests.conftest import embedded_python

    run = embedded_python(tmp_path)
    assert run("manage.py", "migrate", "-v0").returncode == 0
    done = run("-c", SQLITE_METRICS)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in EXPECTED:
        assert line in done.stdout.splitlines(), line


def test_json_logs_carry_the_event_fields_and_no_question_text() -> None:
    import json
    import logging

    from docqa.logs import JsonFormatter

    record = logging.LogRecord("docqa.actions", logging.INFO, __file__, 1, "question answered", None, None)
    record.event, record.latency_ms = "question.answer", 1234
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "question answered" and line["event"] == "question.answer" and line["latency_ms"] == 1234
    assert line["level"] == "info" and line["logger"] == "docqa.actions" and line["time"].endswith("+00:00")


def test_a_refused_or_missing_page_is_one_log_line_without_a_traceback() -> None:
    import logging
    import sys

    from docqa.logs import RefusalsWithoutTraceback

    try:
        raise PermissionError("no")
    except PermissionError:
        caught = sys.exc_info()
    for status, kept in ((403, False), (404, False), (500, True)):
        record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Forbidden: /audit/", None, caught)
        record.status_code = status
        assert RefusalsWithoutTraceback().filter(record) and bool(record.exc_info) is kept


@pytest.mark.parametrize("database, said", [
    ("postgres://docqa@127.0.0.1:1/docqa", "CommandError: cannot reach the database: connection failed"),
    ("sqlite:///{var}/empty.sqlite3", "CommandError: the database is not set up"),
])
def test_commands_say_when_the_database_is_down_or_not_set_up(tmp_path: Path, database: str, said: str) -> None:
    """`reindex`, `bootstrap`, `serve` and `eval` printed a driver's traceback instead."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"),
               DOCQA_DATABASE_URL=database.format(var=tmp_path / "var"))
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Who?", "answers": [{"file": "a.txt", "start": 0, "end": 3}]}\n')
    for args in (["reindex"], ["bootstrap"], ["serve", "127.0.0.1:1"],
                 ["eval", "--questions", str(questions), "--docs", str(tmp_path), "--matter", "m"]):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 1 and result.stderr.startswith(said), (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
