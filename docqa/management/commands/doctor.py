"""manage.py doctor: check each configured part; one line per check, with the fix; exit 1 on a failure.

    ok    database       PostgreSQL 16.6 at db:5432/docqa; all 10 migrations applied
    FAIL  broker         redis://redis:6379/0 refused the connection
          fix: start Redis, or point DOCQA_BROKER_URL at it
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

OK, WARN, FAIL = "ok", "warn", "FAIL"
PACKING_ASSUMES = 131072  # GPT-OSS's window; packing reads the real one, but less means shorter answers
DISK_WARN, DISK_FAIL = 10 * 2**30, 1 * 2**30


@dataclass
class Check:
    status: str
    detail: str
    fix: str = ""


class Command(BaseCommand):
    help = "Check the database, broker, workers, Qdrant, embedding model, tokenizer, vLLM and disk; exit 1 on a failure."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--skip", action="append", default=[], help="skip a check by name (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        checks: list[tuple[str, Callable[[], Check]]] = [
            ("database", check_database), ("broker", check_broker), ("workers", check_workers),
            ("qdrant", check_qdrant), ("embedding", check_embedding), ("tokenizer", check_tokenizer),
            ("vllm", check_vllm), ("disk", check_disk),
        ]
        failed = 0
        broker_down = False
        for name, run in checks:
            if name in options["skip"]:
                continue
            if name == "workers" and broker_down:  # asking workers through a dead broker only hangs
                self.stdout.write(f"{'skip':<5} {name:<10} the broker is down, so no worker can be asked")
                continue
            try:
                result = run()
            except Exception as exc:  # a check that breaks is a failed check, said plainly
                result = Check(FAIL, f"{type(exc).__name__}: {exc}", "see the message above")
            failed += result.status == FAIL
            broker_down = broker_down or (name == "broker" and result.status == FAIL)
            self.stdout.write(f"{result.status:<5} {name:<10} {result.detail}")
            if result.fix and result.status != OK:
                self.stdout.write(f"{'':16}fix: {result.fix}")
        if failed:
            raise CommandError(f"{failed} check(s) failed")


def check_database() -> Check:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
    except Exception as exc:
        return Check(FAIL, f"cannot connect: {exc}".strip(), "start the database, or fix DOCQA_DATABASE_URL")
    where = (f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 100} at "  # type: ignore[attr-defined]
             f"{connection.settings_dict['HOST']}:{connection.settings_dict['PORT'] or 5432}/{connection.settings_dict['NAME']}"
             if connection.vendor == "postgresql" else f"SQLite at {connection.settings_dict['NAME']}")
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        return Check(FAIL, f"{where}; {len(pending)} migration(s) not applied", "python manage.py migrate")
    return Check(OK, f"{where}; all migrations applied")


def check_broker() -> Check:
    if settings.EMBEDDED_WORKER:
        return Check(OK, "embedded default: tasks run in the docqa process (no broker)")
    import redis

    url = settings.CELERY_BROKER_URL
    try:
        info = redis.Redis.from_url(url, socket_connect_timeout=3).info("server")
    except Exception as exc:
        return Check(FAIL, f"{url}: {exc}", "start Redis, or point DOCQA_BROKER_URL at it")
    return Check(OK, f"Redis {info.get('redis_version')} at {url}")


def check_workers() -> Check:
    if settings.EMBEDDED_WORKER:
        return Check(OK, "embedded default: `serve` and `ingest` run the worker in-process")
    from docqa.celery import app

    inspect = app.control.inspect(timeout=3)
    replies = inspect.ping() or {}
    if not replies:
        return Check(FAIL, "no Celery worker answered a ping within 3 s",
                     "start one: celery -A docqa worker (docker compose up -d worker)")
    alive = f"{len(replies)} worker(s) alive: {', '.join(sorted(replies))}"
    # Every queue docqa sends to needs a worker: with split queues a file parsed and never
    # embedded waits as "embedding" for ever.
    wanted = ["celery", settings.EMBED_QUEUE] if settings.SPLIT_QUEUES else ["celery"]
    consumed = {q.get("name") for queues in (inspect.active_queues() or {}).values() for q in queues}
    if missing := [q for q in wanted if q not in consumed]:
        return Check(FAIL, f"{alive}, but none takes tasks from queue {', '.join(missing)}",
                     f"start one: celery -A docqa worker -Q {','.join(missing)}")
    return Check(OK, f"{alive}; queues {', '.join(wanted)} served")


def check_qdrant() -> Check:
    from docqa.services import get_embedder

    dimension = get_embedder().dimension
    if not settings.QDRANT_URL:
        path = settings.QDRANT_EDGE_PATH
        state = "present" if path.exists() else "created on first ingest"
        return Check(OK, f"embedded engine in {path} ({state}); {dimension}-dim dense + sparse vectors")
    from qdrant_client import QdrantClient

    from ingest.store import DENSE, SPARSE

    client = QdrantClient(url=settings.QDRANT_URL, api_key=settings.QDRANT_API_KEY or None, timeout=5) \
        if not settings.QDRANT_URL.startswith("path:") else QdrantClient(path=settings.QDRANT_URL[5:])
    try:
        if not client.collection_exists(settings.QDRANT_COLLECTION):
            return Check(WARN, f"{settings.QDRANT_URL}: no collection {settings.QDRANT_COLLECTION!r} yet",
                         "it is created by the first ingest")
        params = client.get_collection(settings.QDRANT_COLLECTION).config.params
    except Exception as exc:
        return Check(FAIL, f"{settings.QDRANT_URL}: {exc}", "start Qdrant, check DOCQA_QDRANT_URL and DOCQA_QDRANT_API_KEY")
    finally:
        client.close()
    vectors = params.vectors if isinstance(params.vectors, dict) else {}
    size = vectors[DENSE].size if DENSE in vectors else None
    if size != dimension or SPARSE not in (params.sparse_vectors or {}):
        return Check(FAIL, f"collection {settings.QDRANT_COLLECTION!r} has dense size {size} "
                           f"(the model makes {dimension}) or no sparse vectors",
                     "python manage.py reindex (rebuilds the collection for this model)")
    return Check(OK, f"{settings.QDRANT_URL}: collection {settings.QDRANT_COLLECTION!r}, {size}-dim dense + sparse")


def check_embedding() -> Check:
    from docqa.services import get_embedder

    embedder = get_embedder()
    started = time.monotonic()
    vector = embedder.embed_documents(["Either party may terminate this agreement on ninety days' notice."])[0]
    return Check(OK, f"loaded offline from {embedder.model_path}; {len(vector)} dims, "
                     f"a sentence embedded in {(time.monotonic() - started) * 1000:.0f} ms")


def check_tokenizer() -> Check:
    from ingest.tokens import count_tokens

    count = count_tokens("The quick brown fox jumps over the lazy dog.")
    if count != 10:
        return Check(FAIL, f"o200k counted {count} tokens where 10 were expected", "reinstall bpe-openai")
    return Check(OK, "o200k (GPT-OSS's tokenizer) counts offline")


def check_vllm() -> Check:
    from docqa.llm import get_llm

    llm = get_llm()
    if llm is None:
        return Check(WARN, "no language model configured: questions get search-only results",
                     "set DOCQA_LLM_BASE_URL (and DOCQA_LLM_API_KEY_FILE) to the vLLM server")
    import httpx

    try:
        health = httpx.get(llm.root + "/health", timeout=5)
    except httpx.TransportError as exc:
        return Check(FAIL, f"{llm.root}/health: {exc} (still loading weights, or down)",
                     "wait for vLLM to finish starting (docker compose logs vllm), or fix DOCQA_LLM_BASE_URL")
    if health.status_code != 200:
        return Check(FAIL, f"{llm.root}/health answered HTTP {health.status_code}", "see the vLLM server's log")
    try:
        window = llm.max_model_len()
    except Exception as exc:
        return Check(FAIL, f"{llm.root}/v1/models: {exc}", "check DOCQA_LLM_MODEL and DOCQA_LLM_API_KEY")
    if window < PACKING_ASSUMES:
        return Check(WARN, f"{llm.model} at {llm.root} is up, max_model_len {window:,} (packing is sized for "
                           f"{PACKING_ASSUMES:,}: fewer sources fit)", "serve with --max-model-len 131072")
    return Check(OK, f"{llm.model} at {llm.root} is up, max_model_len {window:,}")


def check_disk() -> Check:
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.DATA_DIR).free
    detail = f"{free / 2**30:,.1f} GiB free under {settings.DATA_DIR}"
    if free < DISK_FAIL:
        return Check(FAIL, detail, "free space or move DOCQA_DATA_DIR")
    if free < DISK_WARN:
        return Check(WARN, detail, "the store and extracted texts grow with the corpus: free some space")
    return Check(OK, detail)
