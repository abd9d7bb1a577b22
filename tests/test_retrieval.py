"""Hybrid retrieval: dense and sparse vectors fused inside Qdrant, the matter filter in the query,
documents found by their cards, in both engines; and the eval command on a golden set."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from inference.evaluate import GoldSpan, document_rank, gold_rank, span_recall
from ingest.embed import Embedder
from ingest.sparse import document_vector, query_vector, terms
from ingest.store import ChunkPoint, EdgeStore, Hit, SearchQuery, ServerStore, VectorStore, point_id
from tests.conftest import DEV, SHARED, SUBSET_TXT, dev_questions

TEXTS = {
    # (matter, document): text
    (1, 10): "The supplier shall deliver the hydraulic pumps within thirty days of the purchase order.",
    (1, 11): "Either party may terminate this agreement on ninety days written notice.",
    (1, 12): "Invoices are payable within sixty days; late payments bear interest at two percent.",
    (2, 20): "The hydraulic pumps of matter two are delivered within thirty days of the order.",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(params=["edge", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Iterator[VectorStore]:
    engine: VectorStore
    if request.param == "edge":
        engine = EdgeStore(tmp_path / "edge", 384)
    else:
        engine = ServerStore(f"path:{tmp_path / 'local'}", "chunks", 384)
    points = []
    for (matter, document), text in TEXTS.items():
        payload = {"matter": matter, "document": document, "version": "v1", "chunk": 0, "kind": "chunk",
                   "path": f"doc-{document}.txt", "start": 0, "end": len(text), "tokens": 20, "text": text}
        points.append(ChunkPoint(point_id(document, "v1", 0), embedder.embed_query(text), payload, document_vector(text)))
        card = f"Contract {document} of matter {matter}"
        points.append(ChunkPoint(point_id(document, "v1", "card"), embedder.embed_query(card),
                                 {**payload, "kind": "card", "text": card}, document_vector(card)))
    engine.upsert(points)
    yield engine
    engine.close()


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_every_mode_searches_inside_the_matters_only(store: VectorStore, embedder: Embedder, mode: str) -> None:
    question = "When are the hydraulic pumps delivered?"
    query = SearchQuery(dense=embedder.embed_query(question) if mode != "sparse" else None,
                        sparse=query_vector(question) if mode != "dense" else None)

    hits = store.search(query, [1], 10)

    assert hits[0].payload["document"] == 10
    assert {h.payload["matter"] for h in hits} == {1}  # matter 2's near-copy is never fetched
    assert all(h.payload["kind"] == "chunk" for h in hits)
    assert store.search(query, [], 10) == []


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_tied_hits_come_in_the_order_of_their_ids_every_time(store: VectorStore, embedder: Embedder, mode: str) -> None:
    """Twelve copies of one clause score alike: the same question gets the same hits in the same
    order on every search, whichever the engine, and a cut inside a tie keeps the lowest ids. (In
    hybrid mode the engine's fusion ranks the copies within each vector's list first, so their
    fused scores differ and the scores, not the ids, order them.)"""
    text = "Neither party may assign this agreement without the prior written consent of the other."
    copies = []
    for document in range(30, 42):
        payload = {"matter": 3, "document": document, "version": "v1", "chunk": 0, "kind": "chunk",
                   "path": f"copy-{document}.txt", "start": 0, "end": len(text), "tokens": 16, "text": text}
        copies.append(ChunkPoint(point_id(document, "v1", 0), embedder.embed_query(text), payload, document_vector(text)))
    store.upsert(copies)
    query = SearchQuery(dense=embedder.embed_query("May a party assign the agreement?") if mode != "sparse" else None,
                        sparse=query_vector("May a party assign the agreement?") if mode != "dense" else None)

    runs = [[h.id for h in store.search(query, [3], 5)] for _ in range(6)]

    assert runs == [runs[0]] * 6
    if mode != "hybrid":
        assert runs[0] == sorted(p.id for p in copies)[:5]


def test_cards_and_document_filters_are_searched_apart(store: VectorStore, embedder: Embedder) -> None:
    question = "Contract 12"
    query = SearchQuery(dense=embedder.embed_query(question), sparse=query_vector(question))

    cards = store.search(query, [1, 2], 3, cards=True)
    within = store.search(query, [1], 10, documents=[11])

    assert cards[0].payload["document"] == 12 and all(c.payload["kind"] == "card" for c in cards)
    assert [h.payload["document"] for h in within] == [11]
    assert store.count([1]) == 3  # chunks only, cards not counted


def test_the_embedded_engine_builds_its_index_and_answers_the_same(tmp_path: Path) -> None:
    # Above Qdrant's indexing threshold (~6,500 new 384-d vectors), `optimize` builds the HNSW
    # and sparse indexes that the embedded engine never builds by itself; searches, the matter
    # filter, counts, deletes and reopening behave as before.
    import random

    import numpy as np

    rng = np.random.default_rng(3)
    words = [f"term{i}" for i in range(2000)]
    engine = EdgeStore(tmp_path / "edge", 384)
    vectors = rng.standard_normal((8000, 384)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = [ChunkPoint(point_id(i // 40, "v1", i % 40), vectors[i].tolist(),
                         {"matter": i % 4, "document": i // 40, "version": "v1", "kind": "chunk", "text": ""},
                         document_vector(" ".join(random.Random(i).choices(words, k=60))))
              for i in range(len(vectors))]
    for i in range(0, len(points), 1000):
        engine.upsert(points[i : i + 1000])
    probes = [SearchQuery(dense=vectors[i].tolist(), sparse=query_vector(" ".join(random.Random(i).choices(words, k=60))))
              for i in (5, 1234, 7001)]
    before = [[h.id for h in engine.search(q, [1, 2], 10)] for q in probes]
    indexed = engine._shard.info().indexed_vectors_count  # type: ignore[attr-defined]

    engine.optimize()

    assert engine._shard.info().indexed_vectors_count > indexed  # type: ignore[attr-defined]
    after = [engine.search(q, [1, 2], 10) for q in probes]
    assert all({h.payload["matter"] for h in hits} <= {1, 2} for hits in after)
    assert after[0][0].id == before[0][0] == points[5].id and after[1][0].id == points[1234].id
    assert [h.id for h in after[2]] != [] and after[2][0].payload["matter"] in {1, 2}
    assert engine.count() == 8000 and engine.count([1]) == 2000
    engine.delete_document(0)
    engine.optimize()  # nothing new to index: returns at once
    engine.close()
    reopened = EdgeStore(tmp_path / "edge", 384)
    assert reopened.count() == 7960 and reopened.search(probes[1], [2], 1)[0].id == points[1234].id
    reopened.close()


@pytest.mark.django_db(transaction=True)
def test_ingest_builds_the_embedded_index_after_a_run_that_indexed(data_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(EdgeStore, "optimize", lambda self: calls.append("optimize"))
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "lease.txt").write_text("The tenant pays the rent on the first day of each month.\n")

    call_command("ingest", str(folder), "--matter", "idx", stdout=io.StringIO())
    call_command("ingest", str(folder), "--matter", "idx", stdout=io.StringIO())  # unchanged: nothing to index

    assert calls == ["optimize"]


def test_sparse_vectors_are_bm25_term_weights() -> None:
    assert terms("The Licensee's licenses are IRREVOCABLE") == ["license", "licens", "irrevoc"]
    vector = document_vector("pump pump pump valve")
    assert len(vector.indices) == 2 and max(vector.values) > min(vector.values)  # saturating tf
    assert query_vector("pump valve").values == [1.0, 1.0]


def test_eval_metrics_rank_documents_gold_chunks_and_covered_characters() -> None:
    def hit(document: int, start: int, end: int) -> Hit:
        return Hit(f"{document}-{start}", 1.0, {"document": document, "start": start, "end": end})

    ranked = [hit(7, 0, 100), hit(9, 0, 100), hit(7, 100, 200), hit(9, 100, 200), hit(9, 200, 300)]
    gold = [GoldSpan(9, 150, 250)]  # half in the fourth chunk, half in the fifth

    assert document_rank(ranked, gold) == 2  # the second document of the ranking
    assert gold_rank(ranked, gold) == 4  # touching is not holding: chunk 9:0-100 ends before 150
    assert span_recall(ranked, gold, 4) == 0.5 and span_recall(ranked, gold, 5) == 1.0
    assert gold_rank(ranked, [GoldSpan(8, 0, 10)]) is None and document_rank(ranked, [GoldSpan(8, 0, 10)]) is None


@pytest.mark.django_db(transaction=True)
def test_eval_reports_recall_packing_and_verified_answers(data_dir: Path, docs_folder: Path, tmp_path: Path,
                                                          standin: Any) -> None:
    questions = [q for q in dev_questions() if all(a["file"] in SUBSET_TXT for a in q["answers"])][:6]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    out = io.StringIO()
    details = tmp_path / "details.jsonl"

    call_command("eval", "--questions", str(path), "--docs", str(docs_folder), "--matter", "eval",
                 "--budget", "4096", "--budget", "32768", "--json", "--details", str(details), stdout=out)

    report = json.loads(out.getvalue())
    assert report["questions"] == len(questions) and set(report["results"]) == {"hybrid", "dense", "sparse"}
    for mode, groups in report["results"].items():
        figures = groups["all"]
        assert figures["questions"] == len(questions)
        assert all(0.0 <= figures[key] <= 1.0 for key in figures if key != "questions"), (mode, figures)
        assert figures["document_recall@10"] == 1.0  # six documents in all: the gold one is always found
        assert figures["packed@32768"] >= figures["packed@4096"]
    answers = report["answers"]  # a language model is configured (the stand-in): answers are checked
    assert answers["questions"] == len(questions) and answers["all_verified"] == 1.0 and answers["failed"] == 0
    assert report["missing_gold_files"] == {}
    lines = [json.loads(line) for line in details.read_text().splitlines()]  # one per question and mode
    assert [(line["mode"], line["id"]) for line in lines] == [(m, q["id"]) for m in ("hybrid", "dense", "sparse")
                                                               for q in questions]
    for line, question in zip(lines, questions * 3, strict=True):
        assert line["question"] == question["question"] and line["document_rank"] is not None
        assert set(line) >= {"gold_rank", "span_recall@10", "packed@4096", "packed@32768"}
        assert line["gold_rank"] is not None or line["span_recall@10"] == 0.0
    hybrid = report["results"]["hybrid"]["all"]
    assert sum(line["packed@4096"] for line in lines[:len(questions)]) == round(hybrid["packed@4096"] * len(questions))


@pytest.mark.parametrize("option, value", [("--budget", "511"), ("--budget", "0"), ("--answer-budget", "100"),
                                           ("--budget", "2000000")])
def test_eval_refuses_a_budget_out_of_range_before_it_indexes_anything(tmp_path: Path, option: str,
                                                                       value: str) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"id": "q", "question": "Who?", "answers": []}) + "\n")

    with pytest.raises(CommandError, match=f"{option} {int(value):,} is out of range: give 512 to 1,000,000 tokens"):
        call_command("eval", "--questions", str(path), "--docs", str(tmp_path), "--matter", "gold", option, value,
                     stdout=io.StringIO())


GOLD = {"file": "a.txt", "start": 0, "end": 4}


@pytest.mark.parametrize("lines, said", [
    ([], "holds no questions: one JSON object per line"),
    (["", "   "], "holds no questions"),
    ([json.dumps({"question": "Who?", "answers": [GOLD]}), "{not json"], r"line 2: not JSON \(Expecting property name"),
    (["", json.dumps(["Who?"])], "line 2: a JSON object is wanted, not list"),
    ([json.dumps({"text": "Who?", "answers": [GOLD]})], 'line 1: no "question" text'),
    ([json.dumps({"question": "Who?"})], 'line 1: no gold "answers"'),
    ([json.dumps({"question": "Who?", "answers": [{"file": "a.txt", "start": "0", "end": 4}]})],
     r'line 1: each answer needs "file" \(a path in --docs\) and character offsets "start" <= "end", not '),
    ([json.dumps({"question": "Who?", "answers": [{"file": "a.txt", "start": 9, "end": 4}]})], "each answer needs"),
])
def test_eval_checks_the_questions_file_before_it_syncs_anything(tmp_path: Path, lines: list[str], said: str) -> None:
    """A malformed golden set stopped with a KeyError traceback after the whole folder was synced."""
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(line + "\n" for line in lines))

    with pytest.raises(CommandError, match=said):  # no database is touched: this test has none
        call_command("eval", "--questions", str(path), "--docs", str(tmp_path), "--matter", "gold",
                     stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_eval_names_the_gold_files_it_did_not_index_and_why(data_dir: Path, tmp_path: Path) -> None:
    """A golden set whose files are not indexed does not quietly score zero: each missing gold
    file is named with its reason, and when none is indexed the command stops."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lease.txt").write_text("The tenant pays the rent on the first day of each month.\n")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("The landlord repairs the roof.\n")
    (folder / "linked.txt").symlink_to(outside)
    questions = [{"id": "q1", "question": "Who pays the rent?", "answers": [{"file": "lease.txt", "start": 4, "end": 10}]},
                 {"id": "q2", "question": "Who repairs the roof?", "answers": [{"file": "linked.txt", "start": 4, "end": 12}]},
                 {"id": "q3", "question": "Who pays the tax?", "answers": [{"file": "tax.txt", "start": 0, "end": 3}]}]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    out, err = io.StringIO(), io.StringIO()

    call_command("eval", "--questions", str(path), "--docs", str(folder), "--matter", "gold", "--modes", "sparse",
                 "--budget", "4096", "--json", stdout=out, stderr=err)

    report = json.loads(out.getvalue())
    assert report["missing_gold_files"] == {"linked.txt": "link points outside the folder", "tax.txt": "not in the folder"}
    assert "warning: gold file linked.txt is not indexed (link points outside the folder)" in err.getvalue()
    assert report["results"]["sparse"]["all"]["document_recall@1"] == pytest.approx(1 / 3)
    # The ranks do not depend on the budgets asked for; a budget not a whole number of k reads as given.
    again = io.StringIO()
    call_command("eval", "--questions", str(path), "--docs", str(folder), "--matter", "gold", "--modes", "sparse",
                 "--budget", "8000", "--budget", "16k", "--budget", "512", "--budget", "8,000", stdout=again,
                 stderr=io.StringIO())
    header, row = again.getvalue().splitlines()[:2]
    assert header.split()[-6:] == ["in", "512", "in", "8,000", "in", "16k"]  # each once, smallest first (not "7k")
    assert row.split()[3] == f"{1 / 3:.3f}"  # doc@1 as with --budget 4096
    path.write_text("".join(json.dumps(q) + "\n" for q in questions[1:]))
    with pytest.raises(CommandError, match="none of the questions' gold files is indexed"):
        call_command("eval", "--questions", str(path), "--docs", str(folder), "--matter", "gold", "--modes", "sparse",
                     stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_reindex_makes_the_next_ingest_embed_every_file_again(data_dir: Path, tmp_path: Path) -> None:
    from docqa import services
    from docqa.models import Document, IngestItem

    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "lease.txt").write_text("The tenant pays the rent on the first day of each month.\n")
    call_command("ingest", str(folder), "--matter", "re", stdout=io.StringIO())
    out = io.StringIO()
    from docqa.models import IngestRun

    IngestRun.objects.update(status="running")
    with pytest.raises(CommandError, match="still running"):
        call_command("reindex", "--matter", "re", stdout=out)
    IngestRun.objects.update(status="finished")

    call_command("reindex", "--matter", "re", stdout=out)

    assert out.getvalue().startswith("1 documents will be parsed and embedded again")
    assert services.get_store().count() == 0
    services.close_store()
    call_command("ingest", str(folder), "--matter", "re", stdout=io.StringIO())
    assert IngestItem.objects.filter(path="lease.txt").latest("id").change == "changed"
    assert services.get_store().count() == Document.objects.get(path="lease.txt").chunk_count == 1


def store_schedules(store: VectorStore, embedder: Embedder, document: int, path: str, tokens: int,
                    card: str) -> list[str]:
    """A three-chunk document of pump schedules (each chunk stored as `tokens` long) and its card."""
    parts = ["Schedule A lists the pump models.", "Schedule B sets the pump prices.", "Schedule C sets the pump warranty."]
    points, offset = [], 0
    for index, text in enumerate(parts):
        payload = {"matter": 1, "document": document, "version": "v1", "chunk": index, "kind": "chunk", "path": path,
                   "start": offset, "end": offset + len(text), "tokens": tokens, "text": text}
        points.append(ChunkPoint(point_id(document, "v1", index), embedder.embed_query(text), payload,
                                 document_vector(text)))
        offset += len(text)
    points.append(ChunkPoint(point_id(document, "v1", "card"), embedder.embed_query(card),
                             {**points[0].payload, "kind": "card", "text": card}, document_vector(card)))
    store.upsert(points)
    return parts


def test_the_best_document_goes_first_and_whole_when_it_fits(store: VectorStore, embedder: Embedder) -> None:
    from inference.pack import pack_sources
    from inference.retrieve import retrieve
    from ingest.tokens import count_tokens

    parts = store_schedules(store, embedder, 30, "schedules.txt", 100,
                            "Schedules of the pump supply agreement: models, prices, warranty")
    question = "What does schedule B say about pump prices?"

    roomy = retrieve(question, matter_ids=[1], embedder=embedder, store=store, limit=10, room=1000)
    tight = retrieve(question, matter_ids=[1], embedder=embedder, store=store, limit=10, room=300)

    assert roomy.whole[:1] == [30] and {h.payload["chunk"] for h in roomy.hits[:3]} == {0, 1, 2}
    assert roomy.hits[0].payload["chunk"] == 1  # within the document, still best first
    assert 30 not in tight.whole
    # The best chunk brings its neighbours along, fetched by id when the search did not return them.
    one = retrieve(question, matter_ids=[1], embedder=embedder, store=store, limit=1)
    assert [h.payload["chunk"] for h in one.ranked] == [1]
    assert [(h.payload["document"], h.payload["chunk"]) for h in one.hits] == [(30, 1), (30, 0), (30, 2)]
    packed = pack_sources(roomy.hits, 1000, count_tokens)
    schedule = [s for s in packed.sources if s.path == "schedules.txt"]
    assert len(schedule) == 1 and schedule[0].text == "".join(parts)  # one passage: the whole document


def test_with_a_large_room_the_best_hit_brings_the_rest_of_its_section(store: VectorStore) -> None:
    from inference.retrieve import with_neighbours
    from ingest.store import Hit

    sections = ["6 Fees", "7 Termination", "7 Termination", "7 Termination", "7 Termination", "7 Termination",
                "7 Termination", "8 Notices"]
    points = []
    for index, section in enumerate(sections):
        payload = {"matter": 1, "document": 40, "version": "v1", "chunk": index, "kind": "chunk", "path": "msa.txt",
                   "start": index * 10, "end": index * 10 + 10, "tokens": 3, "text": f"chunk {index}.", "section": section}
        points.append(ChunkPoint(point_id(40, "v1", index), [0.1] * 384, payload, document_vector(f"chunk {index}")))
    store.upsert(points)
    best = Hit(point_id(40, "v1", 4), 0.9, points[4].payload)

    def chunks(hits: list[Hit]) -> list[int]:
        return sorted(h.payload["chunk"] for h in hits)

    assert chunks(with_neighbours([best], store, [1])) == [3, 4, 5]  # a small room: the two next to it
    assert chunks(with_neighbours([best], store, [1], reach=3)) == [1, 2, 3, 4, 5, 6]  # all of 7, none of 6 or 8
    assert chunks(with_neighbours([best], store, [2], reach=3)) == [4]  # another matter's reader gets nothing more


def test_a_whole_document_is_fetched_by_id_when_its_card_says_it_fits(store: VectorStore, embedder: Embedder,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.retrieve import retrieve
    from ingest.tokens import chunk_counts, document_tokens

    parts = ["Schedule A lists the pump models. ", "Schedule B sets the pump prices. ", "Schedule C sets the pump warranty."]
    text = "".join(parts)
    spans = [(text.index(part), text.index(part) + len(part)) for part in parts]
    counts = chunk_counts(text, spans)
    points = []
    for index, ((start, end), counted) in enumerate(zip(spans, counts, strict=True)):
        payload = {"matter": 1, "document": 31, "version": "v1", "chunk": index, "kind": "chunk",
                   "path": "schedules.txt", "start": start, "end": end, "text": text[start:end], **counted}
        points.append(ChunkPoint(point_id(31, "v1", index), embedder.embed_query(parts[index]), payload,
                                 document_vector(parts[index])))
    card = "Schedules of the pump supply agreement: models, prices, warranty"
    size = document_tokens(counts)
    assert size is not None
    points.append(ChunkPoint(point_id(31, "v1", "card"), embedder.embed_query(card),
                             {"matter": 1, "document": 31, "version": "v1", "kind": "card", "path": "schedules.txt",
                              "text": card, "document_tokens": size, "chunk_count": 3}, document_vector(card)))
    store.upsert(points)
    searched: list[object] = []
    search = store.search
    monkeypatch.setattr(store, "search", lambda *a, **k: searched.append(k.get("documents")) or search(*a, **k))
    question = "What does schedule B say about pump prices?"

    roomy = retrieve(question, matter_ids=[1], embedder=embedder, store=store, limit=10, room=1000)
    tight = retrieve(question, matter_ids=[1], embedder=embedder, store=store, limit=10, room=size)

    assert roomy.whole[:1] == [31] and {h.payload["chunk"] for h in roomy.hits[:3]} == {0, 1, 2}
    assert roomy.hits[0].payload["chunk"] == 1  # best first, as ranked
    assert [31] not in searched  # fetched by id, never searched for
    assert 31 not in tight.whole  # a quarter of the room is kept for other documents
    other = retrieve(question, matter_ids=[2], embedder=embedder, store=store, limit=10, room=1000)
    assert other.hits and {h.payload["matter"] for h in other.hits} == {2}


def test_a_named_document_may_take_more_of_the_room_than_a_guessed_one(store: VectorStore, embedder: Embedder) -> None:
    from inference.retrieve import retrieve

    store_schedules(store, embedder, 32, "supply.txt", 150,
                    "Pump Supply Agreement between Acme Pumps Limited and Beta Water Company")
    # Sent whole, the document costs 3 x (150 + 12) = 486 tokens: within three quarters of 800,
    # not within half of it.
    named = retrieve("Consider the Pump Supply Agreement between Acme Pumps and Beta Water; what are the prices?",
                     matter_ids=[1], embedder=embedder, store=store, limit=10, room=800)
    guessed = retrieve("What does schedule B say about pump prices?", matter_ids=[1], embedder=embedder, store=store,
                       limit=10, room=800)
    assert named.whole[:1] == [32]
    assert 32 not in guessed.whole  # half the room stays for passages of other documents
    assert 32 in retrieve("What does schedule B say about pump prices?", matter_ids=[1], embedder=embedder,
                          store=store, limit=10, room=1000).whole
    # A document the user chose to ask about is no guess either.
    assert retrieve("What does schedule B say about pump prices?", matter_ids=[1], embedder=embedder, store=store,
                    limit=10, room=800, documents=[32]).whole == [32]


@pytest.mark.django_db(transaction=True)
def test_the_part_before_the_question_finds_the_document_it_names(data_dir: Path, tmp_path: Path) -> None:
    """A real question of the dev set: the contract it names is a development agreement whose card
    ends before its parties, and two other contracts are titled by the question's topic."""
    from docqa import services
    from docqa.models import Document
    from inference.retrieve import retrieve

    folder = tmp_path / "cuad"
    folder.mkdir()
    names = ["VgrabCommunicationsInc_20200129_10-K_EX-10.33_11958828_EX-10.33_Development Agreement.txt",
             "JINGWEIINTERNATIONALLTD_10_04_2007-EX-10.7-INTELLECTUAL PROPERTY AGREEMENT.txt",
             "GSITECHNOLOGYINC_11_16_2009-EX-10.2-INTELLECTUAL PROPERTY AGREEMENT between SONY ELECTRONICS INC. "
             "and GSI TECHNOLOGY, INC..txt"]
    for name in names:
        shutil.copyfile(DEV / "docs" / "cuad" / name, folder / name)
    call_command("ingest", str(folder), "--matter", "ip", stdout=io.StringIO())
    ids = {d.path: d.id for d in Document.objects.all()}
    matter = Document.objects.get(path=names[0]).source.matter_id
    question = next(q["question"] for q in dev_questions() if q["id"] == "dev-0183")
    assert question.startswith("Consider the Mobile Application Development Agreement between VGrab Asia Ltd")

    found = retrieve(question, matter_ids=[matter], embedder=services.get_embedder(), store=services.get_store(),
                     limit=10)

    assert found.documents[0] == ids[names[0]]
    assert found.ranked[0].payload["document"] == ids[names[0]]
    # A date before the question names no document: the topic's contracts lead.
    dated = retrieve("As of March 5, how is intellectual property ownership assigned?", matter_ids=[matter],
                     embedder=services.get_embedder(), store=services.get_store(), limit=10)
    assert dated.documents[0] != ids[names[0]]


@pytest.mark.parametrize(("question", "naming"), [
    ("Consider the Supply Agreement between Acme, Inc and Beta; Is there a cap on liability under this contract?",
     "Consider the Supply Agreement between Acme, Inc and Beta"),
    ("Consider the X between A and B; Does this contract include any right of first refusal, right of first offer, "
     "or right of first negotiation?", "Consider the X between A and B"),
    ("In the 2019 master services agreement, what is the notice period?", "In the 2019 master services agreement"),
    ("Consider the Acme lease. Who pays the rent?", "Consider the Acme lease"),
    ("Consider the Acme lease; who pays under Section 4: Rent?", "Consider the Acme lease"),  # the first cut
    ("Consider the Acme lease; what is due at 10:30?", "Consider the Acme lease"),
    ("Consider the Agreement between Acme; Beta and Gamma; Is there a cap?",
     "Consider the Agreement between Acme; Beta and Gamma"),  # a cut is followed by a question word
    # A follow-up is searched with the question before it: the follow-up's own naming part counts.
    ("Consider the Acme lease; is there a cap?\nConsider the Beta lease; who pays?", "Consider the Beta lease"),
    ("Consider the Acme lease; is there a cap?\nAnd is it mutual?", ""),
    ("What is the incubation period, according to the WHO report?", ""),  # the question comes first
    ("What is the incubation period?", ""),
    ("Summarize the Acme lease.", ""),  # no question
])
def test_naming_part_is_what_comes_before_the_question(question: str, naming: str) -> None:
    from inference.retrieve import naming_part

    assert naming_part(question) == naming


def test_a_card_is_named_by_holding_more_of_the_words_than_any_other() -> None:
    from inference.retrieve import named_card
    from ingest.store import Hit

    def card(document: int, text: str) -> Hit:
        return Hit(str(document), 0.0, {"document": document, "text": text})

    acme, beta = card(1, "Supply Agreement between Acme Pumps Limited and"), card(2, "Supply Agreement of Beta")
    naming = "Consider the Supply Agreement between Acme Pumps and Beta Water"
    assert named_card(naming, [beta, acme, beta]) is acme  # 4 of the words against 3; order does not matter
    assert named_card(naming, [acme, card(3, "Acme Pumps Supply Agreement")]) is None  # a tie names neither
    assert named_card("As of January 17", [card(4, "Signed January 17, 2020")]) is None  # too few words to name
    assert named_card("As of January 17, 2020", [card(4, "Signed January 17, 2020")]) is None  # a date is no name


def test_between_an_agreement_and_its_amendments_the_file_name_decides() -> None:
    """An amendment's body names the same parties as the agreement it amends: when both hold as
    many of the words, the document whose file name holds more of them is named."""
    from inference.retrieve import named_card
    from ingest.store import Hit

    def card(document: int, path: str, text: str) -> Hit:
        return Hit(str(document), 0.0, {"document": document, "kind": "card", "path": path, "text": text})

    text = "SERVICES AGREEMENT between FEDERATED INVESTMENT MANAGEMENT COMPANY and FEDERATED ADVISORY SERVICES COMPANY"
    original = card(1, "federated/SERVICES AGREEMENT.txt", text + " as amended from time to time")
    amendment = card(2, "federated/SERVICES AGREEMENT_AMENDMENT.txt", "AMENDMENT TO " + text)
    second = card(3, "federated/SERVICES AGREEMENT_SECONDAMENDMENT.txt", "SECOND AMENDMENT TO " + text)
    naming = ("Consider the AMENDMENT TO SERVICES AGREEMENT between FEDERATED INVESTMENT MANAGEMENT COMPANY and "
              "FEDERATED ADVISORY SERVICES COMPANY")
    assert named_card(naming, [original, second, amendment]) is amendment
    # Parts of one filing, named alike down to their file names: none is named.
    parts = [card(4 + i, f"filing/Maintenance Agreement{i}.txt", text) for i in (1, 2)]
    assert named_card(naming, parts) is None


def test_a_document_is_also_named_by_the_words_of_its_best_chunk() -> None:
    """A card is only the opening of its document: parties who sign at the end are in its chunks."""
    from inference.retrieve import named_card, written_as_names
    from ingest.store import Hit

    filing = Hit("5", 0.0, {"document": 5, "kind": "card", "text": "JOINT FILING AGREEMENT In accordance with Rule 13d-1"})
    annuity = Hit("6", 0.0, {"document": 6, "kind": "card", "text": "Service Agreement between Athene Annuity Life "
                             "Insurance Company"})
    signatures = Hit("5-2", 0.0, {"document": 5, "kind": "chunk", "text": "ATHENE ANNUITY AND LIFE COMPANY By: Apollo "
                                  "Insurance Solutions Group LP, its adviser By: AISG GP Ltd."})
    naming = ("Consider the Joint Filing Agreement between Athene Annuity and Life Company, Apollo Insurance Solutions "
              "Group LP and AISG GP Ltd")
    names = written_as_names(naming + "; who may sign it?")
    assert named_card(naming, [annuity, filing]) is annuity  # by the cards alone: 6 of the words against 3
    assert named_card(naming, [annuity, filing], [signatures], names) is filing  # its card and its chunk: 15
    # A document whose card was not found is named by its chunk, returned as that chunk.
    assert named_card(naming, [annuity], [signatures], names) is signatures
    # Only a document's best chunk counts, not the sum of all the chunks that mention the names.
    mentions = [Hit(f"6-{i}", 0.0, {"document": 6, "kind": "chunk", "text": text})
                for i, text in enumerate(["Apollo Solutions", "Apollo Solutions Group LP and AISG GP Ltd"])]
    assert named_card(naming, [annuity, filing], [*mentions, signatures], names) is filing  # 6 + 2 against 15
    # A chunk adds names only: topic words in lower case do not name its document.
    topic = "Regarding the indemnification and limitation of liability provisions of the Acme supply agreement"
    acme = Hit("7", 0.0, {"document": 7, "kind": "card", "text": "Acme Supply Agreement"})
    beta = Hit("8-1", 0.0, {"document": 8, "kind": "chunk", "text": "provisions regarding indemnification and the "
                            "limitation of liability in this supply agreement"})
    assert named_card(topic, [acme], [beta], written_as_names(topic + "; who pays?")) is acme


def test_a_document_citing_the_named_agreement_is_not_that_agreement() -> None:
    from inference.retrieve import named_card, written_as_names
    from ingest.store import Hit

    naming = "Consider the Supply Agreement between Acme Pumps Inc and Zeta Corp"
    supply = Hit("1", 0.0, {"document": 1, "kind": "card", "path": "EX-10.1 Supply Agreement.txt",
                            "text": "SUPPLY AGREEMENT between Acme Pumps Inc and Zeta Corp"})
    guaranty = Hit("2", 0.0, {"document": 2, "kind": "card", "path": "Acme Pumps Zeta Guaranty.txt",
                              "text": "GUARANTY by Acme Pumps Inc"})
    cites = Hit("2-3", 0.0, {"document": 2, "kind": "chunk", "path": "Acme Pumps Zeta Guaranty.txt",
                             "text": "the obligations under the Supply Agreement between Acme Pumps Inc and Zeta Corp"})
    # Both hold every word, the guaranty by its chunk: the one with more of them on its card wins.
    assert named_card(naming, [guaranty, supply], [cites], written_as_names(naming + "; who pays?")) is supply


def test_a_named_documents_parties_go_from_the_question_though_its_card_ends_before_them() -> None:
    from inference.retrieve import focus

    card = "Development Agreement (Agreement No: VAL/MAD/190305/1)"
    question = ("Consider the Mobile Application Development Agreement between VGrab Asia Ltd and Mr. Zheng Qing, "
                "Mr. Gu Xianwin and Ms. Chen Weijie; What is the expiration date of this contract?")
    # Unnamed, the card holds too few of the words for any clause to go.
    assert focus(question, [card]).startswith("Consider the Mobile Application Development Agreement between VGrab")
    # Named (its card was found by these words), every clause of names goes: the words the card
    # holds and words written as names, capitalized wherever they occur.
    assert focus(question, [card], named=True) == "What is the expiration date of this contract?"
    # A topic before the question proper stays, in lower case or capitalized (a defined term), and
    # so does everything in a question written in capitals: only the list of parties loses names.
    topic = "Regarding termination for convenience in the Acme supply agreement: what notice is needed?"
    assert "termination for convenience" in focus(topic, ["Acme Pumps Supply Agreement"], named=True)
    lease = "LEASE AGREEMENT between Acme Corp and Beta LLC"
    assert focus("In the Acme lease, for Change of Control, what consent is needed?", [lease], named=True) == \
        "for Change of Control what consent is needed?"
    assert "LATE FEES" in focus("REGARDING LATE FEES IN THE ACME LEASE: WHO PAYS THEM?", [lease], named=True)


@pytest.mark.django_db(transaction=True)
def test_the_signatories_of_a_short_agreement_name_it_though_its_card_does_not_hold_them(data_dir: Path,
                                                                                          tmp_path: Path) -> None:
    """Real CUAD contracts (../shared/corpus/ingest): a joint filing agreement names its nineteen
    parties only in its signature blocks, after its card ends; an annuity service agreement's card
    holds more of the question's words ("annuity", "life", "insurance", "company")."""
    from docqa import services
    from docqa.models import Document
    from inference.retrieve import retrieve

    folder = tmp_path / "cuad"
    folder.mkdir()
    names = ["MFAFINANCIAL,INC_07_06_2020-EX-99.D-JOINT FILING AGREEMENT.txt",
             "NYLIACVARIABLEANNUITYSEPARATEACCOUNTIII_04_10_2020-EX-99.8.KK-SERVICE AGREEMENT.txt"]
    for name in names:
        shutil.copyfile(SHARED / "corpus" / "ingest" / "cuad_txt" / name, folder / name)
    call_command("ingest", str(folder), "--matter", "filings", stdout=io.StringIO())
    filing = Document.objects.get(path=names[0])
    question = ("Consider the JOINT FILING AGREEMENT between ATHENE ANNUITY AND LIFE COMPANY, ATHENE ANNUITY & LIFE "
                "ASSURANCE COMPANY, ATHENE USA CORPORATION, ATHENE LIFE RE LTD., ATHENE HOLDING LTD., APOLLO INSURANCE "
                "SOLUTIONS GROUP LP, AISG GP LTD., APOLLO LIFE ASSET, L.P. and APOLLO CAPITAL MANAGEMENT, L.P.; "
                "Who may execute this agreement?")

    found = retrieve(question, matter_ids=[filing.source.matter_id], embedder=services.get_embedder(),
                     store=services.get_store(), limit=10)

    assert found.documents[0] == filing.id
    assert found.ranked[0].payload["document"] == filing.id


def test_a_question_naming_a_document_fuses_with_the_named_documents_ranking_counted_thrice(
        store: VectorStore, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.retrieve
    from inference.retrieve import INNER_WEIGHT, retrieve

    store_schedules(store, embedder, 33, "supply.txt", 50,
                    "Pump Supply Agreement between Acme Pumps Limited and Beta Water Company")
    fused: list[object] = []
    fuse = inference.retrieve.fuse
    monkeypatch.setattr(inference.retrieve, "fuse", lambda *a: fused.append(a[2:]) or fuse(*a))

    found = retrieve("Consider the Pump Supply Agreement between Acme Pumps and Beta Water; what are the prices?",
                     matter_ids=[1], embedder=embedder, store=store, limit=10)

    assert fused == [([1, 1, INNER_WEIGHT],)]
    assert found.documents[0] == 33 and found.ranked[0].payload["document"] == 33


def test_the_named_documents_own_ranking_leads_the_fusion() -> None:
    from inference.retrieve import INNER_WEIGHT, fuse
    from ingest.store import Hit

    first, second = (Hit(name, 0.0, {"document": 7}) for name in ("by the whole question", "by the focused one"))
    everywhere, inner = [first, second], [second, first]

    # The whole question (naming words and all) and the top documents' ranking put one chunk first;
    # the named document's ranking by the question without its naming words puts the other.
    assert [h.id for h in fuse([everywhere, everywhere, inner], [7])] == [first.id, second.id]
    assert [h.id for h in fuse([everywhere, everywhere, inner], [7], [1, 1, INNER_WEIGHT])] == [second.id, first.id]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sentence-transformers cross-encoder folder, made offline from MiniLM's weights with
    a seeded scoring head (no trained cross-encoder ships as a package; its order is arbitrary,
    but it runs the very code a trained one does)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ingest.embed import default_model_path

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(str(default_model_path()), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(default_model_path())).save_pretrained(folder)
    return folder


def test_reranking_reorders_the_best_hits_inside_the_matters_only(store: VectorStore, embedder: Embedder,
                                                                   cross_encoder: Path) -> None:
    from inference.rerank import Reranker
    from inference.retrieve import retrieve

    reranker = Reranker(cross_encoder, top=2)
    plain = retrieve("When are the hydraulic pumps delivered?", matter_ids=[1], embedder=embedder, store=store, limit=10)
    reranked = retrieve("When are the hydraulic pumps delivered?", matter_ids=[1], embedder=embedder, store=store,
                        limit=10, reranker=reranker)

    assert {int(h.payload["matter"]) for h in reranked.ranked} == {1}
    assert sorted(h.id for h in reranked.ranked) == sorted(h.id for h in plain.ranked)
    scores = reranker.model.predict([("When are the hydraulic pumps delivered?", h.payload["text"]) for h in plain.ranked[:2]])
    expected = [plain.ranked[i].id for i in sorted(range(2), key=lambda i: -float(scores[i]))]
    assert [h.id for h in reranked.ranked[:2]] == expected
    assert [h.id for h in reranked.ranked[2:]] == [h.id for h in plain.ranked[2:]]
    assert [h.score for h in reranked.ranked] == sorted((h.score for h in reranked.ranked), reverse=True)


def test_reranking_is_off_by_default_and_a_wrong_folder_says_so(settings: Any, tmp_path: Path) -> None:
    from docqa.llm import get_reranker
    from inference.rerank import RerankerMissing

    get_reranker.cache_clear()
    assert get_reranker() is None
    settings.RERANK_MODEL = str(tmp_path / "nothing-here")
    get_reranker.cache_clear()
    with pytest.raises(RerankerMissing, match="holds no model"):
        get_reranker()
    get_reranker.cache_clear()


def test_focus_drops_the_clauses_that_name_the_document_and_keeps_the_question() -> None:
    from inference.retrieve import focus

    card = ("IP Agreement INTELLECTUAL PROPERTY AGREEMENT between SONY ELECTRONICS INC. and GSI TECHNOLOGY, INC. "
            "TABLE OF CONTENTS 3. Licenses 3.1 Grant by SONY 3.4 No Sublicense Rights 5. Transfer of Licenses")
    # The naming clauses go; the asking clause stays although the table of contents holds its words.
    assert focus("Consider the Intellectual Property Agreement between GSI Technology, Inc and Sony Electronics Inc; "
                 "Are the licenses granted under this contract non-transferable?", [card]) == \
        "Are the licenses granted under this contract non-transferable?"
    # A question that names nothing on the card is left whole; so is one with no card.
    assert focus("What is the incubation period of the virus?", [card]) == "What is the incubation period of the virus?"
    assert focus("Consider the Sony agreement; who pays?", []) == "Consider the Sony agreement; who pays?"


def test_focus_takes_a_clause_of_the_question_proper_for_a_name_only_when_no_other_card_holds_it() -> None:
    from inference.retrieve import focus

    sony = "INTELLECTUAL PROPERTY AGREEMENT between SONY ELECTRONICS INC. and GSI TECHNOLOGY, INC."
    supply = "SUPPLY AGREEMENT between Acme Pumps Limited and Beta Water"
    # A name inside the question proper is peculiar to its document's card: it goes.
    assert focus("Does the Sony GSI Intellectual Property Agreement have a cap on liability?", [sony, supply]) == \
        "have a cap on liability?"
    # A piece of the question that several cards hold is a topic, not a name: the question stays whole.
    flavi = "Flaviviridae: how many different pathogens? A review"
    dengue = "Dengue and other flaviviruses: many different pathogens of one family"
    question = "How many different pathogens are members of the Flaviviridae family of virus?"
    assert focus(question, [flavi, dengue]) == question
    # Before the question proper, a clause names the documents whose cards hold it, even two of them
    # (an agreement and its amendment between the same parties).
    amendment = "AMENDMENT to the INTELLECTUAL PROPERTY AGREEMENT between SONY ELECTRONICS INC. and GSI TECHNOLOGY"
    assert focus("Consider the Intellectual Property Agreement between Sony Electronics and GSI Technology; "
                 "who owns the patents?", [sony, amendment]) == "who owns the patents?"
