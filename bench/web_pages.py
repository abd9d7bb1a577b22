"""Server time of each web page with 10,000 documents in a matter (no LLM: a search-free page set).

On PostgreSQL (database `docqa_pages_bench`, created and dropped here) and on the embedded
default's SQLite, side by side: a matter with `--documents` documents in nested folders (each
with a stored text of ~20 KB), one ingest run holding one item per document, a user's 50
conversations, and 20,000 audit events. Each page is fetched `--repeat` times through Django's
test client (the whole request: middleware, sessions, queries, templates); p50 and p95 in ms,
after a first request per page (shown apart: it compiles the page's templates).
Run:  .venv/bin/python bench/web_pages.py [--documents N] [--repeat N] [--only postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATABASE = "docqa_pages_bench"
TARGET_MS = 200


def seed(documents: int) -> dict[str, int]:
    from django.contrib.auth.models import User
    from django.db import transaction

    from docqa.actions import record_audit
    from docqa.models import (
        Answer,
        Conversation,
        Document,
        DocumentText,
        IngestItem,
        IngestRun,
        Matter,
        Membership,
        Question,
        Role,
        RunStatus,
        Source,
    )

    user = User.objects.create_superuser("bench", password="x")
    matter = Matter.objects.create(slug="big", name="Big matter")
    Membership.objects.create(matter=matter, user=user, role=Role.EDITOR)
    source = Source.objects.create(matter=matter, root="/srv/big")
    body = ("The supplier shall deliver the goods within thirty days of each purchase order. " * 250)[:20_000]
    with transaction.atomic():
        texts = DocumentText.objects.bulk_create(
            (DocumentText(sha256=f"{i:064x}", text=body, parser="text", page_count=12) for i in range(documents)),
            batch_size=2000)  # one statement of 50,000 texts (1 GB) is over PostgreSQL's limit
        docs = Document.objects.bulk_create((
            Document(matter=matter, source=source, path=f"clients/c{i % 40:02d}/matters/m{i % 7}/doc-{i:05d}.pdf",
                     kind="pdf", size=200_000, sha256=texts[i].sha256, status="failed" if i % 97 == 0 else "indexed",
                     error="parse: the PDF is encrypted" if i % 97 == 0 else "", text=texts[i], chunk_count=40)
            for i in range(documents)), batch_size=2000)
        run = IngestRun.objects.create(matter=matter, source=source, actor="bench", status=RunStatus.FINISHED)
        IngestItem.objects.bulk_create((
            IngestItem(run=run, document=d, path=d.path, change="new", state=d.status, pages=12, chunks=40,
                       error=d.error, error_class="parse" if d.error else "")
            for d in docs), batch_size=2000)
        conversation = None
        for i in range(50):
            conversation = Conversation.objects.create(matter=matter, user=user, actor="web:bench")
            question = Question.objects.create(matter=matter, conversation=conversation, user=user, actor="web:bench",
                                               text=f"Question {i}: when must the goods be delivered?", budget=16384)
            Answer.objects.create(question=question, mode="llm", text="Within thirty days [S1].", sources=[
                {"label": "S1", "document": docs[i].id, "path": docs[i].path, "page": 2, "section": "", "start": 0,
                 "end": 800, "tokens": 170, "score": 1.0, "text": body[:800], "version": docs[i].sha256}])
    for i in range(20_000):
        record_audit("web:bench", "document.view", matter, {"document": docs[i % documents].id, "path": "x"})
    assert conversation is not None
    return {"run": run.id, "document": docs[documents // 2].id, "conversation": conversation.id}


def child(documents: int, repeat: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    started = time.monotonic()
    ids = seed(documents)
    print(f"  seeded {documents:,} documents, one run of {documents:,} items, 20,000 audit events "
          f"in {time.monotonic() - started:.0f} s")
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.get(username="bench"))
    pages = {
        "ask (new conversation)": "/m/big/",
        "conversation": f"/m/big/c/{ids['conversation']}/",
        "documents (top folder)": "/m/big/documents/",
        "documents (a folder)": "/m/big/documents/?folder=clients/c07/matters/m3",
        "documents (failed only)": "/m/big/documents/?state=failed",
        "document (20 KB text)": f"/m/big/documents/{ids['document']}/?start=100&end=900",
        "runs": "/m/big/runs/",
        f"run ({documents:,} items)": f"/m/big/runs/{ids['run']}/",
        "audit review": "/audit/",
    }
    for name, url in pages.items():
        # The first request of a page compiles its templates (and, for the first page, imports
        # the views): shown apart, not counted in p50 and p95.
        t0 = time.perf_counter()
        assert client.get(url).status_code == 200, url
        first = (time.perf_counter() - t0) * 1000
        timings = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
        print(f"  {name:<26} p50 {statistics.median(timings):6.1f} ms   p95 {p95:6.1f} ms   "
              f"(first {first:6.1f} ms)   {'ok' if p95 < TARGET_MS else 'OVER'} (target {TARGET_MS} ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", choices=["postgresql", "sqlite"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        return child(options.documents, options.repeat)
    args = [sys.executable, __file__, "--child", "--documents", str(options.documents), "--repeat", str(options.repeat)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    base.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=tempfile.mkdtemp(prefix="docqa-pages-"))
    if options.only != "sqlite":
        import psycopg

        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            conn.execute(f"CREATE DATABASE {DATABASE}")
        print("PostgreSQL")
        env = {**base, "DOCQA_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}"}
        subprocess.run(args, cwd=REPO, env=env, check=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    if options.only != "postgresql":
        print("SQLite (embedded default)")
        subprocess.run(args, cwd=REPO, env=base, check=True)


if __name__ == "__main__":
    main()
