"""Packing, citation checks and the generation pitfalls, without a database."""

from __future__ import annotations

import pytest

from inference.answer import generate
from inference.citations import check_citations
from inference.llm import GenerationFailed, VllmClient
from inference.pack import pack_sources
from inference.prompt import format_sources
from ingest.store import Hit
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
    answer = 'Termination: "Either party may terminate on ninety (90) days\' written notice" [S1]. Also [S1].'

    checked = check_citations(answer, sources)

    assert [(c.label, c.verified) for c in checked] == [("S1", True), ("S1", True)]
    assert checked[1].quote == ""


def test_citations_flag_invented_quotes_and_unknown_labels() -> None:
    sources = {"S1": "The fee is five dollars."}

    checked = check_citations('It says "the fee is ten dollars" [S1] and more [S7].', sources)

    assert [(c.label, c.verified) for c in checked] == [("S1", False), ("S7", False)]
    assert "not one of the sources" in checked[1].reason


def test_citations_accept_an_ellipsis_between_quoted_parts() -> None:
    sources = {"S2": "The supplier shall, at its own cost, repair the defect within ten days."}

    [checked] = check_citations('"The supplier shall ... repair the defect" [S2]', sources)

    assert checked.verified


@pytest.mark.parametrize("mode, message", [("length", "lower effort"), ("empty", "no answer text")])
def test_generate_fails_clearly_without_answer_text(mode: str, message: str) -> None:
    server = VllmStandin().start()
    server.mode = mode
    packing = pack_sources([hit(1, 0, 0, 200, 0.9)], 10_000, count_tokens)
    try:
        with pytest.raises(GenerationFailed, match=message):
            generate("What is alpha?", packing, VllmClient(server.url, model="gpt-oss-120b"), "low", 512, lambda k, d: None)
    finally:
        server.stop()
