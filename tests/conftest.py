"""Shared fixtures: the corpus, a fresh embedded data folder per test, the vLLM stand-in."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vllm_standin import VllmStandin

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DEV = SHARED / "corpus" / "dev"

# A small, fast slice of the dev corpus: four CUAD contracts, one COVID-QA article, one PDF of a
# contract whose text is not in the slice.
SUBSET_TXT = [
    "cuad/HOLIDAYRVSUPERSTORESINC_04_15_2002-EX-10.13-ENDORSEMENT AGREEMENT.txt",
    "cuad/UnionDentalHoldingsInc_20050204_8-KA_EX-10_3345577_EX-10_Affiliate Agreement.txt",
    "cuad/PRIMEENERGYRESOURCESCORP_04_02_2007-EX-10.28-COMPLETION AND LIQUIDITY MAINTENANCE AGREEMENT.txt",
    "cuad/NYLIACVARIABLEANNUITYSEPARATEACCOUNTIII_04_10_2020-EX-99.8.KK-SERVICE AGREEMENT.txt",
    "covidqa/PMC6988271.txt",
]
SUBSET_PDF = "cuad/XACCT Technologies, Inc.SUPPORT AND MAINTENANCE AGREEMENT.PDF"


def dev_questions() -> list[dict[str, Any]]:
    with (DEV / "questions.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def subset_questions() -> list[dict[str, Any]]:
    """The first question on each of the two largest contracts of the slice."""
    chosen: dict[str, dict[str, Any]] = {}
    for question in dev_questions():
        gold = question["answers"][0]["file"]
        if gold in SUBSET_TXT[:2] and gold not in chosen:
            chosen[gold] = question
    return list(chosen.values())


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A fresh embedded data folder (vector store and its lock); closed again afterwards."""
    from docqa import embedded, services

    folder = tmp_path / "var"
    folder.mkdir()
    services.close_store()  # a store an earlier test opened elsewhere must not be reused here
    settings.DATA_DIR = folder
    settings.QDRANT_EDGE_PATH = folder / "qdrant-edge"
    settings.LOCK_FILE = folder / "embedded.lock"
    yield folder
    embedded.stop_worker()
    services.close_store()


@pytest.fixture
def standin(settings: Any) -> Iterator[VllmStandin]:
    server = VllmStandin().start()
    settings.LLM_BASE_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def docs_folder(tmp_path: Path) -> Path:
    """The corpus slice plus a DOCX, an HTML and a Markdown file made here."""
    folder = tmp_path / "docs"
    for name in SUBSET_TXT:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEV / "docs" / name, target)
    pdf = folder / "pdf" / Path(SUBSET_PDF).name
    pdf.parent.mkdir(parents=True)
    shutil.copyfile(DEV / "originals_pdf" / SUBSET_PDF, pdf)
    write_generated_docs(folder / "generated")
    return folder


def write_generated_docs(folder: Path) -> None:
    import docx

    folder.mkdir(parents=True, exist_ok=True)
    document = docx.Document()
    document.add_heading("Maintenance Services Agreement", level=1)
    document.add_paragraph(
        "The contractor shall respond to priority one incidents within four hours of notification."
    )
    document.add_paragraph("Invoices are payable within sixty days of receipt by the customer.")
    document.save(str(folder / "maintenance.docx"))
    (folder / "policy.html").write_text(
        "<html><head><title>Retention Policy</title></head><body><h1>Records Retention Policy</h1>"
        "<p>Engineering drawings are retained for twelve years after the product is withdrawn.</p>"
        "</body></html>",
        encoding="utf-8",
    )
    (folder / "notes.md").write_text(
        "# Design notes\n\nThe hydraulic pump is rated for a maximum pressure of 210 bar.\n",
        encoding="utf-8",
    )


def embedded_python(tmp_path: Path) -> Any:
    """A runner of `python ARGS` in the repository against a fresh embedded data folder (SQLite)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    return run
