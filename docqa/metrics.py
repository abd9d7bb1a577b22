"""Prometheus metrics at /metrics, read from the database at scrape time.

Every web and worker process writes to the same database, so the figures are the whole
deployment's, survive restarts and need no shared memory between processes. Nothing here names a
matter, a user or a file: a monitoring system learns volumes and timings, not who the clients
are. The endpoint answers only to `Authorization: Bearer <DOCQA_METRICS_TOKEN>` (404 when unset).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, IntegerField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from docqa.models import FINAL_STATES, Answer, Document, IngestItem, IngestRun

LATENCY_MS = (500, 1000, 2000, 5000, 10_000, 20_000, 60_000, 120_000)
FILE_SECONDS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300)


def number(value: float) -> str:
    """Exact integers (a counter of 123,456,789 tokens must not read 1.23457e+08), floats in full."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def metric(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {number(value)}" for labels, value in samples]
    return lines


def histogram(name: str, help_text: str, buckets: Iterable[tuple[float, int]], count: int, total: float) -> list[str]:
    samples = [(f'_bucket{{le="{le:g}"}}', n) for le, n in buckets] + [('_bucket{le="+Inf"}', count)]
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    lines += [f"{name}{suffix} {number(value)}" for suffix, value in samples]
    return lines + [f"{name}_sum {number(total)}", f"{name}_count {count}"]


def tokens(field: str) -> Sum:
    return Sum(Cast(KT(f"usage__{field}"), IntegerField()))


def exposition() -> str:
    lines: list[str] = []
    answers = Answer.objects.aggregate(
        total=Count("id"), llm=Count("id", filter=Q(mode="llm")), search=Count("id", filter=Q(mode="search")),
        failed=Count("id", filter=Q(mode="error")), stopped=Count("id", filter=Q(mode="stopped")),
        latency=Sum("latency_ms"),
        prompt=tokens("prompt_tokens"), completion=tokens("completion_tokens"), cached=tokens("cached_tokens"),
        **{f"le{ms}": Count("id", filter=Q(latency_ms__lte=ms)) for ms in LATENCY_MS},
    )
    lines += metric("docqa_questions_total", "counter", "Questions answered, by how.",
                    [('{mode="llm"}', answers["llm"]), ('{mode="search"}', answers["search"]),
                     ('{mode="error"}', answers["failed"]), ('{mode="stopped"}', answers["stopped"])])
    lines += metric("docqa_question_failures_total", "counter", "Questions whose answer path failed.",
                    [("", answers["failed"])])
    lines += histogram("docqa_question_latency_seconds", "Time to answer a question, retrieval to last token.",
                       [(ms / 1000, answers[f"le{ms}"]) for ms in LATENCY_MS], answers["total"],
                       (answers["latency"] or 0) / 1000)
    lines += metric("docqa_prompt_tokens_total", "counter", "Prompt tokens sent to the model.",
                    [("", answers["prompt"] or 0)])
    lines += metric("docqa_cached_prompt_tokens_total", "counter", "Prompt tokens vLLM served from its prefix cache.",
                    [("", answers["cached"] or 0)])
    lines += metric("docqa_completion_tokens_total", "counter", "Completion tokens (reasoning and answer).",
                    [("", answers["completion"] or 0)])

    states = dict(IngestItem.objects.values_list("state").annotate(n=Count("id")).order_by())
    lines += metric("docqa_ingest_files_total", "counter", "Files seen by ingest runs, by final or current state.",
                    [(f'{{state="{s}"}}', n) for s, n in sorted(states.items())])
    pages = IngestItem.objects.filter(state="indexed").aggregate(pages=Sum("pages"), chunks=Sum("chunks"))
    lines += metric("docqa_ingest_pages_total", "counter", "Pages parsed.", [("", pages["pages"] or 0)])
    lines += metric("docqa_ingest_chunks_total", "counter", "Chunks embedded and indexed.", [("", pages["chunks"] or 0)])
    timed = IngestItem.objects.filter(state="indexed", started_at__isnull=False, finished_at__isnull=False).annotate(
        took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
    files = timed.aggregate(n=Count("id"), took_sum=Sum("took"),
                            **{f"le{s}": Count("id", filter=Q(took__lte=timedelta(seconds=s))) for s in FILE_SECONDS})
    took = files["took_sum"]
    total_seconds = took.total_seconds() if isinstance(took, timedelta) else float(took or 0) / 1e6
    lines += histogram("docqa_ingest_file_seconds", "Time to parse, embed and index one file.",
                       [(s, files[f"le{s}"]) for s in FILE_SECONDS], files["n"], total_seconds)
    lines += metric("docqa_ingest_queued_files", "gauge", "Files waiting or in progress.",
                    [("", IngestItem.objects.exclude(state__in=FINAL_STATES).count())])
    runs = dict(IngestRun.objects.values_list("status").annotate(n=Count("id")).order_by())
    lines += metric("docqa_ingest_runs", "gauge", "Ingest runs by status.",
                    [(f'{{status="{s}"}}', n) for s, n in sorted(runs.items())])
    documents = dict(Document.objects.values_list("status").annotate(n=Count("id")).order_by())
    lines += metric("docqa_documents", "gauge", "Documents by status.",
                    [(f'{{status="{s}"}}', n) for s, n in sorted(documents.items())])
    return "\n".join(lines) + "\n"


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise Http404("no metrics here")
    return HttpResponse(exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")
