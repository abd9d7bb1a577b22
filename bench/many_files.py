"""Back-pressure at 20,000 files: what a huge run puts into Redis and how much memory it takes.

Writes N small text files (default 20,000), then, in services mode (PostgreSQL database
`docqa_bench`, Redis db 14; no worker runs), starts a run on them exactly as `manage.py ingest`
does: walk, hash, diff, one item row per file, one task per file. It prints the time of each
step, the peak memory of this process, the number of messages in the queue, the size of one
message and the memory Redis used for all of them. Then a real Celery worker (prefork, one
child) works through the queue for `--drain` files (default 1,000), and the peak memory of its
parent and child is read from /proc (VmHWM, and RssAnon: the heap without mapped files), every
1,000 files, with Redis's memory as the queue drains. The worker's store is Qdrant's embedded
engine on disk (`--store edge`, the default) or qdrant-client's local mode (`--store local`, which
keeps every point in the worker's memory, so its growth is the store's, not the pipeline's). Last,
a second run on the unchanged tree. The queue and the database are emptied afterwards.
Run:  .venv/bin/python bench/many_files.py [--files N] [--drain N] [--store edge|local]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATABASE = "docqa_bench"
BROKER = "redis://127.0.0.1:6379/14"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A /proc/PID/status figure in KiB: VmHWM (peak RSS so far) or RssAnon (heap now, no mapped files)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def drain(run: object, files: int, broker: object) -> None:
    """Let one real worker process `files` tasks of the queue; report its memory peaks."""
    import signal
    import subprocess

    from docqa.models import IngestItem, ItemState

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "docqa", "worker", "--pool", "prefork", "--concurrency", "1",
         "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    peaks: dict[str, int] = {"parent": 0, "child": 0, "child_anon": 0}
    redis_peak = 0
    started = time.perf_counter()
    done = 0
    report_at = 1_000
    while done < files and worker.poll() is None:
        time.sleep(1)
        peaks["parent"] = max(peaks["parent"], memory_kib(worker.pid))
        for child in children(worker.pid):
            peaks["child"] = max(peaks["child"], memory_kib(child))
            peaks["child_anon"] = max(peaks["child_anon"], memory_kib(child, "RssAnon"))
        if done >= report_at:  # the curve, not only the end: bounded means flat
            print(f"  {done:>6,} files {time.perf_counter() - started:6.0f} s  child peak {peaks['child'] / 1024:.0f} MiB, "
                  f"heap {peaks['child_anon'] / 1024:.0f} MiB; Redis {broker.info('memory')['used_memory'] / 2**20:.1f} MiB",  # type: ignore[attr-defined]
                  flush=True)
            report_at += 1_000
        redis_peak = max(redis_peak, int(broker.info("memory")["used_memory"]))  # type: ignore[attr-defined]
        done = IngestItem.objects.filter(run=run, state=ItemState.INDEXED).count()
    elapsed = time.perf_counter() - started
    for child in children(worker.pid):
        peaks["child"] = max(peaks["child"], memory_kib(child))
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=120)
    print(f"worker drained            {done:,} files in {elapsed:.0f} s ({done / elapsed:.1f} files/s, model load included)")
    print(f"worker peak RSS           parent {peaks['parent'] / 1024:.0f} MiB, child {peaks['child'] / 1024:.0f} MiB "
          f"(heap alone, no mapped files: {peaks['child_anon'] / 1024:.0f} MiB)")
    print(f"Redis peak while draining {redis_peak / 2**20:.1f} MiB; {broker.llen('celery'):,} tasks left")  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--drain", type=int, default=1_000)
    parser.add_argument("--store", choices=["edge", "local"], default="edge",
                        help="the worker's vector store: Qdrant's embedded engine under the data folder (default; "
                             "on disk, as a server would be) or qdrant-client's local mode (keeps every point in memory)")
    args = parser.parse_args()
    count = args.files
    work = Path(tempfile.mkdtemp(prefix="docqa-many-"))
    root = work / "share"
    for i in range(count):
        folder = root / f"matter-{i // 1000:02d}" / f"box-{i // 100 % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"letter-{i:05d}.txt").write_text(f"Letter {i}. The notice period for lease {i} is {i % 90} days.\n")
    fresh_database()
    os.environ.update(DOCQA_DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DATABASE}", DOCQA_BROKER_URL=BROKER,
                      DOCQA_QDRANT_URL=f"path:{work / 'qdrant'}" if args.store == "local" else "",
                      DOCQA_DATA_DIR=str(work / "var"), DJANGO_SETTINGS_MODULE="docqa.settings")
    import django

    django.setup()
    import redis
    from django.core.management import call_command

    from docqa import actions
    from docqa.models import IngestItem

    call_command("migrate", verbosity=0)
    broker = redis.Redis.from_url(BROKER)
    broker.flushdb()
    before = int(broker.info("memory")["used_memory"])
    base = rss_mib()
    matter = actions.get_or_create_matter("bench", "bench")

    started = time.perf_counter()
    run = actions.do_start_ingest(matter, root, "bench")
    first = time.perf_counter() - started
    queued = broker.llen("celery")
    message = broker.lindex("celery", 0) or b""
    used = int(broker.info("memory")["used_memory"]) - before
    peak = rss_mib()
    print(f"files                     {count:,}")
    print(f"first run: walk+hash+diff+{queued:,} tasks   {first:.1f} s ({count / first:,.0f} files/s)")
    print(f"messages in Redis         {queued:,}, {len(message)} bytes each (ids only, no text)")
    print(f"Redis memory for them     {used / 2**20:.1f} MiB ({used / max(queued, 1):.0f} bytes per task)")
    print(f"peak RSS of this process  {peak:.0f} MiB (it was {base:.0f} MiB after Django started)")

    if args.drain:
        drain(run, args.drain, broker)

    # Mark the rest indexed as a worker would, so the second run sees an unchanged tree.
    broker.delete("celery")
    from docqa.models import Document, DocumentStatus, ItemState
    from ingest.discover import hash_file

    for doc in Document.objects.all().iterator():
        doc.sha256 = hash_file(root / doc.path)
        doc.status = DocumentStatus.INDEXED
        doc.save(update_fields=["sha256", "status"])
    IngestItem.objects.filter(run=run).update(state=ItemState.INDEXED)
    actions.do_finish_run(run)
    started = time.perf_counter()
    again = actions.do_start_ingest(matter, root, "bench")
    second = time.perf_counter() - started
    print(f"unchanged re-sync         {second:.1f} s, {broker.llen('celery')} tasks, "
          f"{again.items.filter(state=ItemState.UNCHANGED).count():,} unchanged")
    print(f"peak RSS after both runs  {rss_mib():.0f} MiB")
    broker.flushdb()
    from django.db import connections

    connections.close_all()
    fresh_database()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
