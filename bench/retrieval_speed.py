"""Answer-path speed with 100,000 chunks in the embedded engine (no GPU, no LLM time).

Builds an embedded Qdrant store of `--chunks` points (default 100,000) across 10 matters: whole
copies of the dev corpus's documents (real text, offsets and stored o200k counts, real MiniLM and
BM25 vectors, a little noise on the dense vectors so that every point is distinct), plus one card
per document. Then, for the dev questions:
0. retrieval + packing at a 16k budget before and after the vector index is built (as `ingest`
   does after a run), side by side; everything below runs with the index;
1. retrieval (query embedding, hybrid search, cards, ranking within the best documents,
   neighbours) + packing at a 16k budget: p50 and p95 (target p95 < 100 ms);
2. packing alone at a 120k-token budget (stored token counts, exact count of the final block):
   p50 and p95 (target < 20 ms);
3. with the vLLM stand-in, the time docqa adds before the request leaves (the model's window
   from /v1/models, retrieval, packing at that window, the prompt, its JSON and the HTTP request,
   timed until the stand-in has the whole body; `ask` also writes the question and its audit
   row, a few ms not counted here): p50 and p95 (target p95 < 150 ms).
With `--store DIR` the store is kept in DIR, and a later run with the same DIR reuses it in a
fresh process (as `serve` opens a store on disk) instead of building it again (~4 min here).
Run:  .venv/bin/python bench/retrieval_speed.py [--chunks N] [--store DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEV = REPO.parent / "shared" / "corpus" / "dev"
MATTERS = 10


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(name: str, seconds: list[float], target_ms: float | None = None) -> None:
    ms = [s * 1000 for s in seconds]
    target = f"   (target p95 < {target_ms:.0f} ms)" if target_ms else ""
    print(f"{name:58s} p50 {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 0.95):7.1f} ms{target}")


def build_store(path: Path, total: int) -> tuple[object, object, list[dict]]:
    import numpy as np

    from docqa import offline  # noqa: F401
    from ingest.chunk import chunk_document
    from ingest.discover import walk_folder
    from ingest.embed import Embedder
    from ingest.parse import parse_file
    from ingest.pipeline import card_text
    from ingest.sparse import document_vector
    from ingest.store import ChunkPoint, EdgeStore, point_id
    from ingest.tokens import chunk_counts, document_tokens

    embedder = Embedder()
    documents = []  # per dev document: its chunks and their stored counts, as ingest makes them
    for found in walk_folder(DEV / "docs", max_bytes=100 << 20).files:
        parsed = parse_file(found.abspath, found.kind)
        chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=embedder.token_limit)
        documents.append((chunks, chunk_counts(parsed.text, [(c.start, c.end) for c in chunks])))
    pieces = [c for chunks, _ in documents for c in chunks]
    started = time.perf_counter()
    vectors = np.array(embedder.embed_documents([p.text for p in pieces]), dtype=np.float32)
    print(f"embedded {len(pieces):,} distinct dev chunks of {len(documents)} documents in {time.perf_counter() - started:.0f} s")
    sparse = [document_vector(p.text) for p in pieces]
    first = [0]
    for chunks, _ in documents:
        first.append(first[-1] + len(chunks))
    store = EdgeStore(path, 384)
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    batch: list = []
    n = document = 0
    while n < total:
        # Copies of the dev documents, whole, with their real offsets and counts.
        chunks, counts = documents[document % len(documents)]
        path_name = f"matter/doc-{document:04d}.txt"
        for chunk, counted in zip(chunks, counts, strict=True):
            source = first[document % len(documents)] + chunk.index
            vector = vectors[source] + rng.normal(0, 0.02, 384).astype(np.float32)
            vector /= np.linalg.norm(vector)
            payload = {"matter": document % MATTERS + 1, "document": document, "version": "v1", "kind": "chunk",
                       "chunk": chunk.index, "path": path_name, "page": chunk.page, "section": chunk.section,
                       "start": chunk.start, "end": chunk.end, "text": chunk.text, **counted}
            batch.append(ChunkPoint(point_id(document, "v1", chunk.index), vector.tolist(), payload, sparse[source]))
            n += 1
        card = card_text(path_name, chunks[0].text)
        batch.append(ChunkPoint(point_id(document, "v1", "card"), vectors[first[document % len(documents)]].tolist(),
                                {"matter": document % MATTERS + 1, "document": document, "version": "v1",
                                 "kind": "card", "path": path_name, "text": card,
                                 "document_tokens": document_tokens(counts), "chunk_count": len(chunks)},
                                document_vector(card)))
        document += 1
        if len(batch) >= 1000:
            store.upsert(batch)
            batch = []
    if batch:
        store.upsert(batch)
    print(f"upserted {n:,} chunk points and {document:,} cards in {time.perf_counter() - started:.0f} s")
    return embedder, store, pieces


def main() -> None:
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--store", type=Path, help="keep the store built in this folder, or reuse the one there "
                        "(a fresh process over a store on disk, as `serve` runs; skips the unindexed timing)")
    args = parser.parse_args()
    reuse = args.store is not None and (args.store / "edge").exists()
    if reuse:
        from docqa import offline  # noqa: F401
        from ingest.embed import Embedder
        from ingest.store import EdgeStore

        embedder, store = Embedder(), EdgeStore(args.store / "edge", 384)
        print(f"reusing the store in {args.store} ({store.count():,} chunk points)")
    else:
        folder = args.store or Path(tempfile.mkdtemp(prefix="docqa-speed-"))
        embedder, store, _ = build_store(folder / "edge", args.chunks)

    from inference.answer import answer_question, retrieval_limit, source_budget
    from inference.llm import StopSignal, VllmClient
    from inference.pack import pack_sources
    from inference.retrieve import retrieve
    from ingest.tokens import count_tokens
    from tests.vllm_standin import VllmStandin

    questions = [json.loads(line)["question"] for line in (DEV / "questions.jsonl").open()]
    matters = [1, 2, 3]  # a user who may read three of the ten matters
    for question in questions[:5]:  # warm up
        retrieve(question, matter_ids=matters, embedder=embedder, store=store, limit=100)

    def at_16k() -> list[float]:
        timings = []
        for question in questions:
            started = time.perf_counter()
            room = source_budget(16384, question)
            found = retrieve(question, matter_ids=matters, embedder=embedder, store=store,
                             limit=retrieval_limit(room), room=room)
            pack_sources(found.hits, room, count_tokens)
            timings.append(time.perf_counter() - started)
        return timings

    if reuse:
        at_16k()  # the first pass reads the store's files from disk into the page cache
        timings = at_16k()
    else:
        unindexed = at_16k()
        started = time.perf_counter()
        store.optimize()  # as `ingest` does after a run
        print(f"built the vector index in {time.perf_counter() - started:.0f} s")
        timings = at_16k()
        report("retrieval + packing at 16k, before the index was built", unindexed)
        print(f"  index built / not built, p50: {statistics.median(timings) / statistics.median(unindexed):.2f}x")
    report("retrieval + packing at 16k, 3 of 10 matters", timings, 100)
    packing_times = []

    big_room = source_budget(131072 - 8192, "question")
    for question in questions[:60]:
        found = retrieve(question, matter_ids=matters, embedder=embedder, store=store,
                         limit=retrieval_limit(big_room), room=big_room)
        started = time.perf_counter()
        packing = pack_sources(found.hits, big_room, count_tokens)
        packing_times.append(time.perf_counter() - started)
    report(f"packing alone at 120k ({packing.tokens:,} tokens in the last block)", packing_times, 20)

    standin = VllmStandin().start()
    client = VllmClient(standin.url, model="gpt-oss-120b")
    overhead = []
    for question in questions[:60]:
        started = time.perf_counter()
        # As `ask` does: the model's window from /v1/models (waited for stoppably, from a thread),
        # then retrieval, packing, the prompt, its JSON and the HTTP request (with its stop signal),
        # timed until the stand-in holds the whole request body.
        signal = StopSignal()
        window = client.max_model_len(signal)
        answer_question(question, matter_ids=matters, embedder=embedder, store=store, llm=client,
                        budget=window - 8192, effort="low", max_completion_tokens=8192, stop=signal)
        overhead.append(standin.received_at[-1] - started)
    standin.stop()
    report("docqa's time before the request leaves (full 123k window)", overhead, 150)
    store.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
