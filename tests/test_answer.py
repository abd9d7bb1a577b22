"""Packing, citation checks and the generation pitfalls, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.answer import answer_question, generate
from inference.citations import check_citations
from inference.llm import GenerationFailed, VllmClient
from inference.pack import pack_sources
from inference.prompt import INSTRUCTIONS, format_sources
from ingest.chunk import Chunk
from ingest.embed import Embedder
from ingest.pipeline import DocumentRef, build_point
from ingest.store import EdgeStore, Hit
from ingest.tokens import count_tokens
from tests.vllm_standin import VllmStandin

TEXT = "Alpha clause one. " * 20 + "Beta clause two. " * 20


def hit(document: int, chunk: int, start: int, end: int, score: float, path: str = "a.txt") -> Hit:
    text = TEXT[start:end]
    return Hit(f"{document}-{chunk}", score, {
        "document": document, "chunk": chunk, "start": start, "end": end, "text": text,
        "path": path, "page": 1, "tokens": count_tokens(text),
    })


def test_pack_merges_overlapping_chunks_into_one_passage() -> None:
    hits = [hit(1, 0, 0, 200, 0.9), hit(1, 1, 150, 400, 0.8)]

    packing = pack_sources(hits, 10_000, count_tokens)

    assert len(packing.sources) == 1
    assert packing.sources[0].text == TEXT[0:400]
    assert packing.tokens == count_tokens(format_sources(packing.sources))


def test_pack_orders_sources_canonically_not_by_score() -> None:
    hits = [hit(2, 0, 0, 100, 0.9, "z.txt"), hit(1, 0, 300, 400, 0.5, "a.txt"), hit(1, 1, 0, 100, 0.4, "a.txt")]

    packing = pack_sources(hits, 10_000, count_tokens)

    assert [(s.label, s.path, s.start) for s in packing.sources] == [("S1", "a.txt", 0), ("S2", "a.txt", 300), ("S3", "z.txt", 0)]


def test_pack_never_exceeds_the_budget_and_lists_the_rest() -> None:
    hits = [hit(i, 0, 0, 700, 1.0 - i / 100) for i in range(10)]

    packing = pack_sources(hits, 500, count_tokens)

    assert packing.tokens <= 500
    assert len(packing.sources) + len(packing.dropped) == 10 and packing.dropped


def test_citations_verify_quotes_against_the_source() -> None:
    sources = {"S1": "Either party may terminate on ninety (90) days’ written notice."}
    answer = 'Termination: "either party may terminate on ninety (90) days\' written notice," [S1]. Also [S1].'

    checked = check_citations(answer, sources)

    assert [(c.label, c.status) for c in checked] == [("S1", "quote verified"), ("S1", "source only")]
    assert checked[1].quote == "" and checked[1].verified


def test_citations_flag_invented_quotes_and_unknown_labels() -> None:
    sources = {"S1": "The fee is five dollars."}

    checked = check_citations('It says "the fee is ten dollars" [S1] and more [S7].', sources)

    assert [(c.label, c.verified) for c in checked] == [("S1", False), ("S7", False)]
    assert "not one of the sources" in checked[1].reason


@pytest.mark.parametrize("answer, expected", [
    # a quote inside the claim, not just before its marker
    ('The lease says "the tenant may never terminate" and so she cannot leave [S1].', [("S1", "failed")]),
    # a quote after the last marker belongs to it
    ('As [S1] puts it: "the tenant may never terminate".', [("S1", "failed")]),
    ('As [S1] puts it: "the tenant may terminate".', [("S1", "quote verified")]),
    # every quote of a claim is checked, each on its own
    ('It grants "the tenant may terminate" and "on sixty days\' notice" [S1].', [("S1", "quote verified")] * 2),
    ('It grants "the tenant may terminate" and "on ten days\' notice" [S1].',
     [("S1", "quote verified"), ("S1", "failed")]),
])
def test_citations_check_every_quote_of_a_claim(answer: str, expected: list[tuple[str, str]]) -> None:
    sources = {"S1": "The tenant may terminate the lease on sixty days' notice to the landlord."}

    assert [(c.label, c.status) for c in check_citations(answer, sources)] == expected


@pytest.mark.parametrize("quote", ["30 days", "Licensee shall ... assign this Agreement"])
def test_citations_match_whole_words_and_near_parts_only(quote: str) -> None:
    sources = {"S1": "Licensee shall not assign this Agreement. " + "Filler sentence here. " * 40
               + "Either party may end it upon 130 days' notice."}

    [checked] = check_citations(f'"{quote}" [S1]', sources)

    assert checked.status == "failed"


@pytest.mark.parametrize("quote, verdict", [
    ("a non-compete covenant of two years", "quote verified"),
    ("a noncompete covenant of two years", "quote verified"),
    ("a non\u2011compete covenant of two years", "quote verified"),
    ("a non-competitive covenant of two years", "failed"),
    ("within 1015 days", "failed"),  # hyphens between digits are not hyphenation
])
def test_citations_forgive_hyphenation_and_nothing_looser(quote: str, verdict: str) -> None:
    sources = {"S1": "The executive accepts a non-\ncompete covenant of two years after termination, "
                     "payable within 10-15 days."}

    [checked] = check_citations(f'"{quote}" [S1]', sources)

    assert checked.status == verdict


def test_a_verified_quote_knows_where_it_stands_in_the_source() -> None:
    source = "Recitals.\n\nThe executive accepts a non-\n  compete covenant of\u00ad two years,\n“payable” later."

    [checked] = check_citations('“a noncompete covenant of two years, "payable"” [S1]', {"S1": source})

    assert checked.status == "quote verified" and checked.span is not None
    assert source[checked.span[0] : checked.span[1]] == "a non-\n  compete covenant of\u00ad two years,\n“payable”"


@pytest.mark.parametrize("quote", [
    "twenty-four (24) months after the Effective Date.",  # the hyphen kept, the full stop too
    "twentyfour (24) months after the Effective Date",
    "This Agreement ... twenty-four (24) months",  # each part marked on its own
])
def test_the_words_marked_in_a_passage_are_the_ones_the_verifier_found(quote: str) -> None:
    from docqa.templatetags.docqa_tags import mark_quotes, quote_spans
    from inference.citations import quote_locations

    passage = "1. Term. This Agreement shall last for a term of twenty-\nfour (24) months after the Effective Date."
    [checked] = check_citations(f'"{quote}" [S1]', {"S1": passage})

    spans = quote_spans(passage, quote)
    assert checked.status == "quote verified" and spans == quote_locations(passage, quote)
    assert passage[spans[-1][0]:spans[-1][1]].startswith("twenty-\nfour")
    # The words the verifier found, and the full stop too when the quote closes with it.
    assert spans[-1][1] == checked.span[1] + quote.endswith(".")
    html = mark_quotes(passage, [type("C", (), {"quote": quote, "status": "quote verified"})()])
    assert "<mark>twenty-\nfour (24) months" in html and html.count("<mark>") == len(spans)


def test_only_verified_quotes_are_marked_and_overlapping_ones_as_one() -> None:
    from docqa.templatetags.docqa_tags import mark_quotes

    passage = "The supplier shall not be liable for indirect loss arising from late delivery."

    def cite(quote: str, status: str = "quote verified") -> object:
        return type("C", (), {"quote": quote, "status": status})()

    # Its parts are in the passage, but the verifier refused it (the ellipsis leaves out "not").
    assert "<mark>" not in mark_quotes(passage, [cite("The supplier shall ... be liable", "failed")])
    html = mark_quotes(passage, [cite("shall not be liable for indirect loss"), cite("indirect loss arising from")])
    assert html.count("<mark>") == 1 and "<mark>shall not be liable for indirect loss arising from</mark>" in html


def test_a_quote_that_is_not_in_the_passage_marks_nothing() -> None:
    from docqa.templatetags.docqa_tags import quote_spans

    assert quote_spans("Either party may end it upon 30 days' notice.", "upon thirty days' notice") == []
    # Case is forgiven for the first letter only, as in verification.
    assert quote_spans("Either party may END it.", "either party may end it") == []


def test_citations_treat_a_one_word_quote_as_no_quote() -> None:
    [checked] = check_citations('It is "irrevocable" [S1].', {"S1": "The license is irrevocable."})

    assert checked.status == "source only"


def test_citations_accept_an_ellipsis_between_quoted_parts() -> None:
    sources = {"S2": "The supplier shall, at its own cost, repair the defect within ten days."}

    [checked] = check_citations('"The supplier shall ... repair the defect" [S2]', sources)

    assert checked.status == "quote verified"


def test_answer_retries_once_at_low_effort_when_reasoning_eats_the_budget(tmp_path: Path) -> None:
    embedder = Embedder()
    store = EdgeStore(tmp_path / "edge", embedder.dimension)
    ref = DocumentRef(matter_id=1, document_id=1, path="a.txt", version="v1")
    chunk = Chunk(index=0, text=TEXT[:200], start=0, end=200, page=None, embed_tokens=40)
    store.upsert([build_point(ref, chunk, embedder.embed_query(chunk.text))])
    server = VllmStandin().start()
    server.mode = "length_unless_low"
    llm = VllmClient(server.url, model="gpt-oss-120b")
    try:
        result = answer_question("What is alpha?", matter_ids=[1], embedder=embedder, store=store,
                                 llm=llm, budget=4000, effort="high")
        server.mode = "length"  # ... and when low effort runs out too, the message says both were tried
        with pytest.raises(GenerationFailed, match="at high effort and again at low effort; give it more room"):
            answer_question("What is alpha?", matter_ids=[1], embedder=embedder, store=store, llm=llm, budget=4000,
                            effort="high")
    finally:
        server.stop()
        store.close()

    assert [r["reasoning_effort"] for r in server.requests] == ["high", "low", "high", "low"]
    assert result.answer and "asked again at low effort" in result.notes[0]


def test_a_follow_up_over_the_same_sources_is_served_from_the_prefix_cache(tmp_path: Path) -> None:
    embedder = Embedder()
    store = EdgeStore(tmp_path / "edge", embedder.dimension)
    ref = DocumentRef(matter_id=1, document_id=1, path="a.txt", version="v1")
    chunk = Chunk(index=0, text=TEXT, start=0, end=len(TEXT), page=None, embed_tokens=200)
    store.upsert([build_point(ref, chunk, embedder.embed_query(chunk.text))])
    server = VllmStandin().start()
    llm = VllmClient(server.url, model="gpt-oss-120b")
    try:
        first = answer_question("What is alpha?", matter_ids=[1], embedder=embedder, store=store, llm=llm,
                                budget=4000, effort="low")
        follow = answer_question("And beta?", matter_ids=[1], embedder=embedder, store=store, llm=llm, budget=4000,
                                 effort="low", history=[("What is alpha?", first.answer)])
    finally:
        server.stop()
        store.close()

    alone, later = (r["messages"] for r in server.requests)
    assert later[:2] == alone and later[-1] == {"role": "user", "content": "Question: And beta?"}
    # The instructions and every source come from the cache (in whole 16-token blocks), not only the instructions.
    assert follow.usage["cached_tokens"] >= count_tokens(INSTRUCTIONS) + follow.usage["source_tokens"]


@pytest.mark.parametrize("mode, message", [("length", "whole output budget on reasoning"), ("empty", "no answer text")])
def test_generate_fails_clearly_without_answer_text(mode: str, message: str) -> None:
    server = VllmStandin().start()
    server.mode = mode
    packing = pack_sources([hit(1, 0, 0, 200, 0.9)], 10_000, count_tokens)
    try:
        with pytest.raises(GenerationFailed, match=message):
            generate("What is alpha?", packing, VllmClient(server.url, model="gpt-oss-120b"), "low", 512, lambda k, d: None)
    finally:
        server.stop()
