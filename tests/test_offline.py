"""Not one packet leaves the building: the whole pipeline runs with non-loopback sockets blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO


def test_ingest_and_ask_make_no_network_attempt(docs_folder: Path, tmp_path: Path, standin: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    # The embedded default (SQLite, in-process worker, embedded Qdrant) plus the LLM on loopback.
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"), DOCQA_LLM_BASE_URL=standin.url)

    result = subprocess.run(
        [sys.executable, "-m", "tests.offline_run", str(docs_folder), "What is the maximum pressure of the pump?"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["ingest"]["counts"]["indexed"] == 9
    assert report["ask"]["mode"] == "llm" and all(c["verified"] for c in report["ask"]["citations"])
    assert "generated/notes.md" in {s["path"] for s in report["ask"]["sources"]}


def test_offline_guard_tells_loopback_from_the_network() -> None:
    from tests import offline_run

    assert all(offline_run.is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "localhost"))
    assert not any(offline_run.is_loopback(h) for h in ("10.0.0.1", "192.168.1.1", "huggingface.co", "8.8.8.8"))
