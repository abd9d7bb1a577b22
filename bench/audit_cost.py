"""What the audit trail costs: appending one answer's event, and exporting the trail.

On PostgreSQL (database `docqa_audit_bench`, created and dropped here) and on the embedded
default's SQLite (a temporary folder), side by side:
1. `record_audit` of a realistic `question.answer` event (30 packed sources with hashes,
   citations, usage, a 1,500-character answer): p50 and p95 in ms, the cost the audit adds to
   one question;
2. streaming the whole trail (`--rows`, default 20,000 such events) as CSV and as JSON Lines
   through the same generators as the review page's export: rows/s and peak memory growth.
Run:  .venv/bin/python bench/audit_cost.py [--rows N] [--only postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATABASE = "docqa_audit_bench"


def detail(i: int) -> dict:
    sources = [{"label": f"S{n}", "document": 1000 + n, "version": hashlib.sha256(str(n).encode()).hexdigest(),
                "path": f"contracts/2019/master-services-agreement-{n:03d}.pdf", "start": n * 900,
                "end": n * 900 + 850, "tokens": 190, "sha256": hashlib.sha256(f"{i}-{n}".encode()).hexdigest()}
               for n in range(1, 31)]
    return {"question": i, "conversation": i, "text": f"Question {i}: can either party terminate for convenience?",
            "mode": "llm", "error": "", "notes": [], "model": "openai/gpt-oss-120b", "effort": "medium",
            "budget": 122880, "retrieval": "hybrid", "latency_ms": 5400,
            "usage": {"prompt_tokens": 9100, "completion_tokens": 640, "cached_tokens": 4096, "first_token_ms": 900},
            "answer": "Either party may terminate on ninety days' written notice [S3]. " * 24, "sources": sources,
            "citations": [{"label": "S3", "quote": "may terminate on ninety days' written notice", "status":
                           "quote verified", "verified": True, "reason": "found in S3"}] * 3}


def child(rows: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from docqa.actions import record_audit
    from docqa.audit_views import csv_lines, export_rows, json_lines
    from docqa.models import AuditEvent, Matter

    call_command("migrate", verbosity=0)
    matter = Matter.objects.create(slug="bench", name="bench")
    timings = []
    for i in range(rows):
        started = time.perf_counter()
        record_audit("web:ann", "question.answer", matter, detail(i))
        timings.append((time.perf_counter() - started) * 1000)
    ordered = sorted(timings)
    print(f"  append one question.answer event ({connection.vendor}): p50 {statistics.median(ordered):.2f} ms, "
          f"p95 {ordered[int(0.95 * len(ordered))]:.2f} ms over {rows:,} events")
    for name, generator in (("CSV", csv_lines), ("JSON Lines", json_lines)):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows_qs = export_rows(AuditEvent.objects.order_by("-id"))
        started = time.perf_counter()
        size = sum(len(piece) for piece in generator(rows_qs))
        seconds = time.perf_counter() - started
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(f"  export {name}: {rows / seconds:,.0f} rows/s ({size / 2**20:.1f} MiB in {seconds:.1f} s), "
              f"peak memory +{grown:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--only", choices=["postgresql", "sqlite"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        return child(options.rows)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    base.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=tempfile.mkdtemp(prefix="docqa-audit-"))
    if options.only != "sqlite":
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            conn.execute(f"CREATE DATABASE {DATABASE}")
        print("PostgreSQL")
        env = {**base, "DOCQA_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}"}
        subprocess.run([sys.executable, __file__, "--child", "--rows", str(options.rows)], cwd=REPO, env=env, check=True)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    if options.only != "postgresql":
        print("SQLite (embedded default)")
        subprocess.run([sys.executable, __file__, "--child", "--rows", str(options.rows)], cwd=REPO, env=base, check=True)


if __name__ == "__main__":
    main()
