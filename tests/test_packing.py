"""Packing arithmetic on real documents: exact counts without tokenizing, never over budget.

Chunks of real dev-corpus files store their o200k counts up to safe cuts (ingest.tokens); every
count packing adds up from them must equal what the tokenizer says of the text it serializes.
"""

from __future__ import annotations

import random

import pytest

from inference.pack import PackedSource, chained_tokens, pack_sources
from inference.prompt import format_sources
from ingest.chunk import chunk_document
from ingest.embed import Embedder
from ingest.parse import parse_file
from ingest.store import Hit
from ingest.tokens import chunk_counts, count_tokens, document_tokens, is_safe_cut
from tests.conftest import DEV, SUBSET_PDF, SUBSET_TXT


@pytest.fixture(scope="module")
def documents() -> list[list[Hit]]:
    """Per document, its chunk hits with the payload ingest stores (texts, spans and counts)."""
    embedder = Embedder()
    result = []
    files = [(DEV / "docs" / name, "text") for name in SUBSET_TXT] + [(DEV / "originals_pdf" / SUBSET_PDF, "pdf")]
    for number, (path, kind) in enumerate(files, start=1):
        parsed = parse_file(path, kind)
        chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=254)
        counts = chunk_counts(parsed.text, [(c.start, c.end) for c in chunks])
        result.append([
            Hit(f"{number}-{c.index}", 0.0, {
                "document": number, "version": "v1", "chunk": c.index, "path": path.name, "page": c.page,
                "section": c.section, "start": c.start, "end": c.end, "text": c.text, **counted,
            })
            for c, counted in zip(chunks, counts, strict=True)
        ])
    return result


def test_safe_cuts_split_the_count_exactly() -> None:
    alphabet = list("aZé漢1٣²\u0301 \n\r\t.,'/|-_()$😀[]§\xa0\u2028\x1c\x85") + ["'s", "  ", "\n\n", "Cd", "123", "[S12]"]
    rng = random.Random(7)
    cuts = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(2, 24)))
        for position in range(1, len(text)):
            if is_safe_cut(text, position):
                cuts += 1
                assert count_tokens(text) == count_tokens(text[:position]) + count_tokens(text[position:]), repr(text)
    assert cuts > 1000


def test_most_neighbouring_chunks_join_at_a_stored_cut(documents: list[list[Hit]]) -> None:
    pairs = [(a.payload, b.payload) for hits in documents for a, b in zip(hits, hits[1:], strict=False)]
    joined = [a for a, b in pairs if a["cut"] is not None and b["cut_before"] == a["cut"]]
    assert len(joined) >= 0.9 * len(pairs)


def test_whole_documents_and_runs_count_exactly_from_stored_counts(documents: list[list[Hit]]) -> None:
    rng = random.Random(3)
    for hits in documents:
        parts = [h.payload for h in hits]
        text_of = lambda run: run[0]["text"] + "".join(p["text"][run[i - 1]["end"] - p["start"]:] for i, p in enumerate(run) if i)  # noqa: E731
        whole = chained_tokens(parts)
        if whole is not None:
            assert whole == count_tokens(text_of(parts))
        # What the document's card stores, so retrieval knows whether it fits before fetching it.
        keys = ("tokens", "cut", "cut_before", "head", "body", "tail")
        assert document_tokens([{k: p[k] for k in keys} for p in parts]) == whole
        for _ in range(20):
            start = rng.randrange(len(parts))
            run = parts[start : start + rng.randrange(1, 6)]
            known = chained_tokens(run)
            if known is not None:
                assert known == count_tokens(text_of(run))
    assert sum(chained_tokens([h.payload for h in hits]) is not None for hits in documents) >= len(documents) // 2


@pytest.mark.parametrize("budget", [300, 1000, 4000, 16000, 60000])
def test_packing_is_exact_and_never_over_budget(documents: list[list[Hit]], budget: int) -> None:
    rng = random.Random(budget)
    everything = [h for hits in documents for h in hits]
    for _ in range(8):
        picked = rng.sample(everything, min(len(everything), rng.randrange(5, 400)))
        # Runs of neighbours as well as scattered chunks, in some rank order.
        anchor = rng.choice(documents)
        at = rng.randrange(len(anchor))
        picked = anchor[at : at + 12] + [h for h in picked if h not in anchor[at : at + 12]]
        ranked = [Hit(h.id, 1.0 - i / 1000, h.payload) for i, h in enumerate(picked)]

        packing = pack_sources(ranked, budget, count_tokens)

        assert packing.tokens == count_tokens(format_sources(packing.sources))
        assert packing.tokens <= budget
        for source in packing.sources:
            assert source.tokens == count_tokens(source.text)
        packed = sum(len(s.chunks) for s in packing.sources)
        assert packed + len(packing.dropped) <= len(ranked)
        if packing.dropped:
            # What was left out was left out for room: none of it would have fitted on its own.
            by_span = {(h.payload["path"], h.payload["start"]): h.payload for h in ranked}
            alone = [count_tokens(format_sources([PackedSource("S99", 0, p["path"], p["page"], 0, 0, p["text"], 0.0,
                                                               p["section"])])) + 1
                     for p in (by_span[(d["path"], d["start"])] for d in packing.dropped)]
            assert budget - packing.tokens < min(alone)


def test_packing_without_stored_cuts_still_counts_exactly(documents: list[list[Hit]]) -> None:
    # An index written before cuts were stored: passages are then counted from their text.
    old = [Hit(h.id, 1.0 - i / 100, {k: v for k, v in h.payload.items() if k not in ("cut", "cut_before", "head", "body", "tail")})
           for i, h in enumerate(documents[0][:30])]

    packing = pack_sources(old, 3000, count_tokens)

    assert packing.tokens == count_tokens(format_sources(packing.sources)) <= 3000
    assert all(s.tokens == count_tokens(s.text) for s in packing.sources)


def test_the_block_count_is_the_sum_of_its_segments_whatever_the_passages_edges() -> None:
    # Each source's segment (label line, passage, separator) is counted once and kept on it; the
    # sum must equal the tokenizer's count of the serialized block, whatever each passage opens
    # and ends with (a letter, punctuation, a space, "/", a line break, digits, nothing at all),
    # in any order and under any labels.
    from inference.pack import block_tokens, label

    edges = ["Term", " leading space", "/etc/passwd", "\nline", "12.5%", "“quoted”", "", "—dash", "\t"]
    ends = [" the end", " the end.", " the end.\n", "x/", " 42", "!!", "\n\n", " ", ")"]
    rng = random.Random(11)
    for trial in range(40):
        sources = []
        for number in range(rng.randint(1, 6)):
            text = rng.choice(edges) + (" middle words here" if rng.random() < 0.8 else "") + rng.choice(ends)
            sources.append(PackedSource(label="", document_id=number, path=rng.choice(["a.txt", "dir/b c.pdf"]),
                                        page=rng.choice([None, 3]), start=number * 100, end=number * 100 + len(text),
                                        text=text, score=0.0, section=rng.choice(["", "7 Termination > 7.2"]),
                                        tokens=count_tokens(text)))
        label(sources)
        assert block_tokens(sources, count_tokens) == count_tokens(format_sources(sources)), (trial, sources)
        rng.shuffle(sources)  # new order, new labels, the kept segment counts
        for number, source in enumerate(sources, start=1):
            source.label = f"S{number * 7}"
        assert block_tokens(sources, count_tokens) == count_tokens(format_sources(sources)), (trial, sources)
