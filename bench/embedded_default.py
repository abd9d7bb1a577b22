"""Benchmark the embedded default as a user meets it, and the pipeline stages warm.

Prints: cold `manage.py ingest` / re-sync / `ask` wall times (each a fresh process, model load
included), then warm per-stage figures (parse, chunk, embed, upsert) over the same folder and the
share each stage takes. Run:  .venv/bin/python bench/embedded_default.py [--folder PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def cold(folder: Path, question: str) -> None:
    data = tempfile.mkdtemp(prefix="docqa-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=data)
    manage = [sys.executable, "manage.py"]
    timed(manage + ["migrate", "-v0"], env)
    first = timed(manage + ["ingest", str(folder), "--matter", "bench"], env)
    again = timed(manage + ["ingest", str(folder), "--matter", "bench"], env)
    ask = timed(manage + ["ask", "--matter", "bench", question], env)
    print(f"cold ingest (new process, model load included): {first:7.2f} s")
    print(f"cold re-sync, nothing changed:                  {again:7.2f} s  ({first / again:.1f}x faster)")
    print(f"cold ask, search-only (new process):            {ask:7.2f} s")


def warm(folder: Path) -> None:
    from docqa import offline  # noqa: F401
    from ingest.chunk import chunk_document
    from ingest.discover import walk_folder
    from ingest.embed import Embedder
    from ingest.parse import parse_file
    from ingest.pipeline import DocumentRef, build_point
    from ingest.store import EdgeStore

    embedder = Embedder()
    store = EdgeStore(Path(tempfile.mkdtemp(prefix="docqa-bench-edge-")), embedder.dimension)
    stages = dict.fromkeys(("parse", "chunk", "embed", "upsert"), 0.0)
    files = walk_folder(folder, max_bytes=100 << 20).files
    pages = chunks = 0
    for number, found in enumerate(files):
        t0 = time.perf_counter()
        parsed = parse_file(found.abspath, found.kind)
        t1 = time.perf_counter()
        pieces = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=embedder.token_limit)
        t2 = time.perf_counter()
        vectors = embedder.embed_documents([c.text for c in pieces])
        t3 = time.perf_counter()
        ref = DocumentRef(1, number, found.path, found.sha256)
        store.upsert([build_point(ref, c, v) for c, v in zip(pieces, vectors, strict=True)])
        t4 = time.perf_counter()
        for key, spent in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[key] += spent
        pages += parsed.page_count or 0
        chunks += len(pieces)
    total = sum(stages.values())
    query = embedder.embed_query("termination notice period")
    t0 = time.perf_counter()
    for _ in range(50):
        store.search(query, [1], 100)
    search_ms = (time.perf_counter() - t0) / 50 * 1000
    store.close()
    print(f"warm pipeline: {len(files)} files, {chunks} chunks, {pages} PDF pages, {total:.2f} s "
          f"({len(files) / total:.1f} files/s, {chunks / stages['embed']:.1f} chunks/s embedded)")
    for key, spent in stages.items():
        print(f"  {key:7s} {spent:7.2f} s  {spent / total:6.1%}")
    print(f"embedded Qdrant search, top 100 with matter filter: {search_ms:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=REPO / "sample")
    parser.add_argument("--question", default="How much notice is needed to terminate the supply agreement?")
    args = parser.parse_args()
    print(f"folder: {args.folder}")
    cold(args.folder, args.question)
    warm(args.folder)


if __name__ == "__main__":
    main()
