"""Bulk-ingest throughput on ../shared/corpus/ingest (TXT and PDF), end to end against pure embedding.

Copies the first N files (default 100; --limit 0 for all 1,008) into a temporary folder, then:
1. cold `manage.py ingest` in a fresh process on the embedded default (end to end);
2. the same command again on the unchanged tree (re-sync), and its share of the first run;
3. in this process: parse, chunk and embed the same files stage by stage, and the pure embedding
   time of the same chunks, so the ratio end-to-end / embedding shows how close ingestion runs to
   the physical limit of this CPU (the target is 1.25x).
Peak memory (max RSS) is reported for the ingest process and for this one.
Run:  .venv/bin/python bench/ingest_throughput.py [--limit N] [--embed-sample N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "ingest"
sys.path.insert(0, str(REPO))


def pick_files(limit: int) -> list[Path]:
    rows = [json.loads(line) for line in (CORPUS / "manifest.jsonl").open()]
    paths = [CORPUS / row["path"] for row in rows]
    if not limit:
        return paths
    # Interleave kinds so a small sample has TXT and PDF in the corpus's proportions.
    pdfs = [p for p in paths if p.suffix.lower() == ".pdf"]
    texts = [p for p in paths if p.suffix.lower() != ".pdf"]
    share = max(1, round(limit * len(pdfs) / len(paths)))
    return pdfs[:share] + texts[: limit - share]


def run_manage(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True,
                          capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--embed-sample", type=int, default=0,
                        help="time pure embedding on this many random chunks and scale (default: all)")
    args = parser.parse_args()
    limit = args.limit
    work = Path(tempfile.mkdtemp(prefix="docqa-bulk-"))
    folder = work / "docs"
    for path in pick_files(limit):
        target = folder / path.relative_to(CORPUS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(work / "var"))
    run_manage(["migrate", "-v0"], env)
    first, out = run_manage(["ingest", str(folder), "--matter", "bulk", "--json"], env)
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    again, _ = run_manage(["ingest", str(folder), "--matter", "bulk", "--json"], env)
    counts = json.loads(out)["counts"]
    files = counts["indexed"] + counts["failed"]
    print(f"files: {files} ({counts['indexed']} indexed, {counts['failed']} failed) from {CORPUS}")
    print(f"end to end, cold `ingest`:   {first:8.1f} s   {files / first:6.2f} files/s")
    print(f"re-sync, nothing changed:    {again:8.1f} s   {again / first:6.1%} of the first run (target <= 2%)")
    print(f"peak RSS of the ingest process: {child_rss:,.0f} MiB")
    stages(folder, first, args.embed_sample)


def stages(folder: Path, end_to_end: float, embed_sample: int = 0) -> None:
    """Per-stage times in this process. With `embed_sample`, pure embedding is timed on that many
    chunks drawn at random from all of them and scaled to the total (for the full corpus, where
    embedding everything twice would take hours)."""
    from docqa import offline  # noqa: F401
    from ingest.chunk import chunk_document
    from ingest.discover import walk_folder
    from ingest.embed import Embedder
    from ingest.errors import ParseError
    from ingest.parse import parse_file

    embedder = Embedder()
    embedder.embed_query("warm up")
    spent = dict.fromkeys(("parse", "chunk", "embed"), 0.0)
    pages = chunks = 0
    pdf_pages, pdf_parse = 0, 0.0
    texts: list[str] = []
    for found in walk_folder(folder, max_bytes=100 << 20).files:
        t0 = time.perf_counter()
        try:
            parsed = parse_file(found.abspath, found.kind)
        except ParseError:
            continue
        t1 = time.perf_counter()
        pieces = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=embedder.token_limit)
        t2 = time.perf_counter()
        spent["parse"] += t1 - t0
        spent["chunk"] += t2 - t1
        if found.kind == "pdf":
            pdf_pages += parsed.page_count or 0
            pdf_parse += t1 - t0
        pages += parsed.page_count or 0
        chunks += len(pieces)
        texts += [c.text for c in pieces]
    sample = texts
    if embed_sample and embed_sample < len(texts):
        import random

        sample = random.Random(7).sample(texts, embed_sample)
    t0 = time.perf_counter()
    embedder.embed_documents(sample)
    spent["embed"] = (time.perf_counter() - t0) * len(texts) / len(sample)
    if sample is not texts:
        print(f"  (pure embedding timed on a random sample of {len(sample):,} of the {len(texts):,} chunks and scaled)")
    total = sum(spent.values())
    print(f"stages in one process: {chunks:,} chunks, {pages:,} pages")
    for key, seconds in spent.items():
        print(f"  {key:6s} {seconds:8.1f} s  {seconds / total:6.1%}")
    if pdf_parse:
        print(f"  PDF parse rate: {pdf_pages / pdf_parse:,.0f} pages/s ({pdf_pages} pages)")
    print(f"  embedding rate: {chunks / spent['embed']:.1f} chunks/s")
    print(f"end to end / pure embedding of the same chunks: {end_to_end / spent['embed']:.2f}x (target <= 1.25x)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
