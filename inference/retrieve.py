"""Find the passages for a question: hybrid search inside Qdrant, documents first.

Chunks are searched with a dense and a sparse vector fused by reciprocal rank inside Qdrant,
always filtered to the allowed matters in the query itself. Documents are ranked too, by their
card (file name and opening text: title, parties, date), and, for a question with words before
the question proper ("Consider the Hosting Agreement between IBM and Quantum; ..."), by those
words alone. A question that names a document finds it first: the chunks of the best
documents are ranked within them, those of the named one also by the question without the
words that name it, and these rankings are fused with the cards' order. A question that names
no document is ranked by its chunks alone. When the best documents fit the token budget whole
(keeping a quarter of it for other documents' passages, half when no document is named or
chosen), all their chunks go first, so packing sends them complete (merged back into one
passage each). The result is one list of chunk hits, best first, for packing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from inference.pack import chained_tokens
from inference.rerank import Reranker
from ingest.embed import Embedder
from ingest.sparse import WORD, query_vector, terms
from ingest.store import Hit, SearchQuery, VectorStore, point_id

MODES = ("hybrid", "dense", "sparse")
RRF_K = 60
TOP_DOCUMENTS = 3  # documents whose chunks are ranked within the document too
INNER_WEIGHT = 3  # the named document's own ranking counts this many times in the fusion
CARD_LIMIT = 10
CHUNK_NAMING_LIMIT = 30  # chunks searched with the naming words (one document may fill many places)
NEIGHBOUR_HITS = 5  # the best hits bring the chunks on either side of them
NEIGHBOUR_ROOM = 4000  # ... one of them per this many tokens of room
WHOLE_CANDIDATES = 5  # documents of the best few chunks may be sent whole
SECTION_ROOM = 32000  # with this much room, the best hits also bring the rest of their section ...
SECTION_REACH = 3  # ... up to this many chunks on either side (a clause, not a whole chapter)
MAX_DOCUMENT_CHUNKS = 2000
HEADER_TOKENS = 12  # a source's label line, roughly (inference.pack.estimate)


@dataclass
class Retrieval:
    hits: list[Hit]  # chunks, best first
    documents: list[int] = field(default_factory=list)  # documents by their card, best first
    mode: str = "hybrid"
    whole: list[int] = field(default_factory=list)  # documents put first in full
    ranked: list[Hit] = field(default_factory=list)  # the fused ranking, before neighbours and whole documents


def make_query(question: str, embedder: Embedder, mode: str) -> SearchQuery:
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; one of {', '.join(MODES)}")
    dense = embedder.embed_query(question) if mode in ("hybrid", "dense") else None
    sparse = query_vector(question) if mode in ("hybrid", "sparse") else None
    return SearchQuery(dense=dense, sparse=sparse)


def retrieve(question: str, *, matter_ids: list[int], embedder: Embedder, store: VectorStore, limit: int,
             mode: str = "hybrid", documents_first: bool = True, room: int | None = None,
             reranker: Reranker | None = None, documents: list[int] | None = None) -> Retrieval:
    """Chunk hits for `question`, best first. With `room` (the token budget for sources), the
    best documents that fit whole come first, whole, so that packing sends them complete. With
    a `reranker`, a cross-encoder reorders the best of the fused ranking. With `documents` (a
    scope the user chose), only those documents are searched: the filter is in the query too."""
    naming = naming_part(question) if documents_first else ""
    query = make_query(question, embedder, mode)
    # Names are words: the naming part is searched by its words alone (no model call), except
    # when retrieval is dense only.
    naming_query = make_query(naming, embedder, "dense" if mode == "dense" else "sparse") if naming else None
    named: Hit | None = None
    chunks = store.search(query, matter_ids, limit, documents=documents)
    if not documents_first:
        chunks = reranker.rerank(question, chunks) if reranker else chunks
        return Retrieval(chunks, [], mode, [], chunks)
    cards = store.search(query, matter_ids, CARD_LIMIT, cards=True, documents=documents)
    if naming_query is not None:
        # "Consider the Mobile Application Development Agreement between VGrab and Ms. Chen; how
        # is intellectual property assigned?": the topic words match other documents' titles too
        # ("Intellectual Property Agreement"), so the cards are also searched with the part before
        # the question alone. A card that holds more of its words than any other card is the
        # document named; "As of January 17, ..." names none.
        by_name = store.search(naming_query, matter_ids, CARD_LIMIT, cards=True, documents=documents)
        # A card is only the opening of its document: parties listed further on ("ATHENE
        # ANNUITY AND LIFE COMPANY, ... APOLLO PRINCIPAL HOLDINGS III GP, LTD." signing a joint
        # filing agreement) are found in its chunks.
        naming_chunks = store.search(naming_query, matter_ids, CHUNK_NAMING_LIMIT, documents=documents)
        named = named_card(naming, by_name + cards, naming_chunks, written_as_names(question))
        if named is not None and named.payload.get("kind") != "card":
            document = int(named.payload["document"])
            named = next((c for c in store.fetch([point_id(document, str(named.payload["version"]), "card")])
                          if int(c.payload.get("matter", -1)) in matter_ids), None) \
                or next(iter(store.search(naming_query, matter_ids, 1, cards=True, documents=[document])), None)
        if named is not None:
            cards = [named, *(c for c in cards if int(c.payload["document"]) != int(named.payload["document"]))]
    ranked_documents = unique(int(c.payload["document"]) for c in cards)
    top = ranked_documents[:TOP_DOCUMENTS]
    # A question names a document when some clause of it is mostly words of the best card
    # ("Consider the Hosting Agreement between IBM and Quantum; ..."; inside the question proper,
    # words no other card holds as many of). Within that document those words match every chunk
    # alike, so its chunks are also ranked by the rest.
    best_cards = {int(c.payload["document"]): str(c.payload.get("text", "")) for c in reversed(cards)}
    focused = focus(question, [best_cards[d] for d in ranked_documents], named=named is not None)
    names_document = bool(top) and focused != question
    focused_query = make_query(focused, embedder, mode) if names_document else query
    within = store.search(focused_query, matter_ids, limit, documents=top) if names_document else []
    inner = store.search(focused_query, matter_ids, limit, documents=top[:1]) if names_document else []
    # Only a question that names a document is steered by the cards; one that names none ("what
    # is the incubation period?") is ranked by its chunks alone, wherever they are.
    # Within the named document its own ranking by the focused question leads; the others break
    # its ties and bring in the chunks of other documents.
    ranked = fuse([chunks, within, inner], ranked_documents, [1, 1, INNER_WEIGHT]) if names_document else chunks
    if reranker is not None:
        ranked = reranker.rerank(question, ranked)
    # Neighbours take room: one best hit brings them per 4k tokens of room, at most five.
    hits = with_neighbours(ranked, store, matter_ids,
                           NEIGHBOUR_HITS if not room else max(1, min(NEIGHBOUR_HITS, room // NEIGHBOUR_ROOM)),
                           reach=SECTION_REACH if room and room >= SECTION_ROOM else 1)
    whole: list[int] = []
    if room:
        # A document the question names, or one of those the user chose, is sure to be wanted; the
        # best document for a question that names none is a guess, so more of the room is kept
        # for the best passages elsewhere.
        keep = room // 4 if names_document or documents else room // 2
        hits, whole = whole_documents_first(hits, query, matter_ids, store, room, keep)
    return Retrieval(hits, ranked_documents, mode, whole, ranked)


def with_neighbours(hits: list[Hit], store: VectorStore, matter_ids: list[int],
                    count: int = NEIGHBOUR_HITS, reach: int = 1) -> list[Hit]:
    """Each of the best hits is followed by the chunks just before and after it in its document,
    so that a passage cut at a chunk edge reaches the model whole (packing merges them). With a
    `reach` over 1, the chunks further out that stand in the hit's own section ("7.2 Notice") come
    too, up to `reach` on either side, so that the clause arrives whole."""
    wanted: list[str] = []
    for hit in hits[:count]:
        p = hit.payload
        for index in around(int(p["chunk"]), reach):
            wanted.append(point_id(int(p["document"]), str(p["version"]), index))
    present = {h.id for h in hits}
    fetched = {h.id: h for h in store.fetch([i for i in dict.fromkeys(wanted) if i not in present])
               if int(h.payload.get("matter", -1)) in matter_ids}  # same documents; checked all the same
    if not fetched:
        return hits
    result: list[Hit] = []
    for position, hit in enumerate(hits):
        result.append(hit)
        if position < count:
            p = hit.payload
            section = p.get("section") or ""
            for step in (-1, 1):  # outwards on each side while the section lasts
                for distance in range(1, reach + 1):
                    index = int(p["chunk"]) + step * distance
                    key = point_id(int(p["document"]), str(p["version"]), index) if index >= 0 else ""
                    neighbour = fetched.get(key)
                    if neighbour is None or (distance > 1 and (not section or neighbour.payload.get("section") != section)):
                        break
                    del fetched[key]
                    result.append(Hit(neighbour.id, hit.score, neighbour.payload))
    return result


def around(chunk: int, reach: int) -> list[int]:
    return [i for d in range(1, reach + 1) for i in (chunk - d, chunk + d) if i >= 0]


def whole_documents_first(hits: list[Hit], query: SearchQuery, matter_ids: list[int], store: VectorStore,
                          room: int, keep: int) -> tuple[list[Hit], list[int]]:
    """Put every chunk of the best documents first while each fits whole in what is left of the
    room, keeping `keep` tokens of it for the best passages of other documents."""
    versions = {int(h.payload["document"]): str(h.payload["version"]) for h in reversed(hits[:WHOLE_CANDIDATES])}
    candidates = unique(int(h.payload["document"]) for h in hits[:WHOLE_CANDIDATES])
    # The cards know each document's size: one that cannot fit is not fetched.
    cards = {int(c.payload["document"]): c.payload
             for c in store.fetch([point_id(d, versions[d], "card") for d in candidates])
             if int(c.payload.get("matter", -1)) in matter_ids}
    best: dict[int, float] = {}
    for hit in hits[:WHOLE_CANDIDATES]:
        best.setdefault(int(hit.payload["document"]), hit.score)
    place = {h.id: position for position, h in enumerate(hits)}  # fetched chunks keep their rank
    present = {h.id: h for h in hits}
    left = room - keep
    first: list[Hit] = []
    whole: list[int] = []
    for document in candidates:
        card = cards.get(document, {})
        size, count = card.get("document_tokens"), card.get("chunk_count")
        if size is not None and int(size) + HEADER_TOKENS > left:
            break
        chunks: list[Hit] = []
        if size is not None and count is not None:
            # By their ids (document, version, index), with no scoring at all: those the searches
            # found already are at hand, the rest are fetched.
            ids = [point_id(document, versions[document], i) for i in range(int(count))]
            found = [present[i] for i in ids if i in present]
            found += [h for h in store.fetch([i for i in ids if i not in present])
                      if int(h.payload.get("matter", -1)) in matter_ids]
            chunks = sorted((Hit(h.id, best[document], h.payload) for h in found),
                            key=lambda h: (place.get(h.id, len(place)), int(h.payload["chunk"])))  # best first
        if len(chunks) != count:
            chunks = store.search(query, matter_ids, MAX_DOCUMENT_CHUNKS, documents=[document])
        run = sorted((h.payload for h in chunks), key=lambda p: int(p["chunk"]))
        exact = chained_tokens(run)  # sent whole, the chunks merge into one passage
        cost = exact + HEADER_TOKENS if exact is not None else sum(int(p.get("tokens") or 0) + HEADER_TOKENS for p in run)
        if not chunks or cost > left or len(chunks) >= MAX_DOCUMENT_CHUNKS:
            break
        first += chunks
        whole.append(document)
        left -= cost
    taken = {h.id for h in first}
    return first + [h for h in hits if h.id not in taken], whole


ASKS = r"(?=(?:what|which|who|whom|when|where|why|how|does|do|is|are|was|were|can|may|shall|will|has|have|did)\b)"
# Possessive and anchored whitespace: a run of 20,000 spaces costs microseconds, not seconds.
CLAUSE = re.compile(r"(?<=[;:?!.])\s++|,\s++|(?<!\s)\s++\b" + ASKS, re.I)
BEFORE_QUESTION = re.compile(r"([;:])\s++" + ASKS + r"|[,.]\s++" + ASKS, re.I)


def naming_span(question: str) -> tuple[int, int]:
    """Where the words before the question proper are ("Consider the Hosting Agreement between IBM
    and Quantum" in "...; Are any licenses irrevocable?", "In the 2019 lease" in "In the 2019
    lease, who pays?"), as (start, end) in `question`; (0, 0) when the question is all there is.
    Only its last line is read: a follow-up is searched with the question before it, and the
    document the follow-up names is the one it asks about."""
    lines = question.rstrip().splitlines()
    line = lines[-1] if lines else ""
    text = line.strip()
    if not text.endswith("?"):
        return 0, 0
    cuts = list(BEFORE_QUESTION.finditer(text))
    # A semicolon or colon before a question word is the cut ("...; Is there a cap?"); failing
    # that, a comma or full stop before one ("In the 2019 lease, who pays?"). The first of them:
    # "Section 4: Rent" or "10:30" further on is inside the question.
    colons = [m for m in cuts if m.group(1)]
    head = text[:(colons or cuts)[0].start()].strip() if cuts else ""
    if not terms(head):
        return 0, 0
    start = len(question.rstrip()) - len(line) + (len(line) - len(line.lstrip()))
    return start, start + len(head)


def naming_part(question: str) -> str:
    start, end = naming_span(question)
    return question[start:end]


PARTIES = re.compile(r"(?<=\s)(?=(?:between|among)\s)", re.I)  # where the list of parties starts
PARTY_LIST = re.compile(r"(?:between|among)\s", re.I)
NAMING_SHARE = 0.6  # a clause is naming the document when this share of its terms is on its card


def focus(question: str, cards: list[str], *, named: bool = False) -> str:
    """The question without the clauses that only name the document ("Consider the Hosting
    Agreement between IBM and Quantum;", "in the 2019 master services agreement,"): those whose
    terms are mostly on the best document's card, `cards[0]` (its file name, title and parties).
    The clause that asks (the one ending in "?") is always kept: a card that opens with a table of
    contents holds the topic words too ("Licenses", "No Sublicense Rights"). A clause of the
    question proper ("How many different pathogens | are members of the Flaviviridae family?")
    must also hold more of its terms on that card than on any other card (`cards[1:]`, other
    documents'): a name is peculiar to its document, a topic is not.

    Once the words before the question proper are known to name the best document (`named`: a
    card was found by them; or one of their clauses is mostly words of its card), a piece of
    their list of parties (from "between" or "among" on) or of the title just before it also goes
    when each of its words not on the card is written as a name (`written_as_names`): a card is only the opening of its
    document, and parties named after it ends (", Mr. Gu Xianwin and Ms. Chen Weijie") would
    otherwise stay in the question, matching the chunks that name them. Before the list ("In the
    Acme lease, for Change of Control, ...") nothing goes for being capitalized."""
    if not cards:
        return question
    card_terms = set(terms(cards[0]))
    other_terms = [set(terms(card)) for card in cards[1:]]
    start, end = naming_span(question)

    def naming(clause: str, peculiar: bool) -> bool:
        words = terms(clause)
        held = sum(w in card_terms for w in words)
        return bool(words) and not clause.rstrip().endswith("?") and held / len(words) >= NAMING_SHARE \
            and not (peculiar and any(sum(w in other for w in words) >= held for other in other_terms))

    # "between" (or "among") starts the list of parties: its own clause is cut there too.
    pieces = [piece.strip() for clause in CLAUSE.split(question[start:end]) for piece in PARTIES.split(clause)]
    naming_clauses = [(piece, naming(piece, False)) for piece in pieces]
    parties = next((i for i, piece in enumerate(pieces) if PARTY_LIST.match(piece)), None)
    # The list of parties and the title just before it ("the Mobile Application Development
    # Agreement | between VGrab Asia Ltd and Mr. | Zheng Qing"), when there is such a list.
    listed = len(pieces) if parties is None else max(0, parties - 1)
    # The words before the question proper name the document when a card was found by them, or
    # when one of their clauses is mostly words of the best card.
    names = written_as_names(question) if named or any(n for _, n in naming_clauses) else set()
    kept = [c for c in CLAUSE.split(question[:start]) if not naming(c, True)]
    for position, (clause, is_naming) in enumerate(naming_clauses):
        # In the title and list of parties, a piece of names goes; so does one with no terms ("Mr.").
        if not is_naming and not (position >= listed and names
                                  and all(w in card_terms or w in names for w in terms(clause))):
            kept.append(clause)
    kept += [c for c in CLAUSE.split(question[end:].lstrip(" ;:,.")) if not naming(c, True)]
    rest = " ".join(kept).strip()
    return rest if terms(rest) else question


def written_as_names(text: str) -> set[str]:
    """The terms of `text` written with a capital letter wherever they occur in it ("Chen",
    "Xianwin", "Vitamin Shoppe Industries"); a word also written in lower case is not a name.
    None in a text with no word in lower case."""
    capital: set[str] = set()
    lower: set[str] = set()
    for word in WORD.findall(text):
        (capital if word[0].isupper() else lower).update(terms(word))
    # A text with no word in lower case (all capitals, Title Case) tells names from nothing.
    return capital - lower if lower else set()


NAME_TERMS = 3  # "As of January 17" names no document; "the Acme Beta supply agreement" may
MONTHS = frozenset(terms("January February March April May June July August September October November December"))


def named_card(naming: str, cards: list[Hit], chunks: Sequence[Hit] = (),
               names: Collection[str] = frozenset()) -> Hit | None:
    """The card of the document that holds more of the words of `naming` than any other, and at
    least three of them that are not numbers or months, if there is one. Not a share of them: a
    card opens the document, and the parties' names may come after it ends. So a document's
    best chunk of `chunks` (found by these words) adds the words of `naming` it holds that are
    written as names (`names`: "Athene", "Apollo"; not a topic, nor "Supply Agreement" in a
    question written in capitals). A tie goes to the document with more of the words on its card
    (a guaranty that cites "the Supply Agreement between Acme and Zeta" is not that agreement),
    then in its file name (an agreement and its amendments: "..._AMENDMENT.txt"); failing that,
    none is named. A document found by a chunk alone is returned as that chunk (its card is
    fetched by the caller)."""
    wanted = set(terms(naming))
    named_words = wanted & set(names)
    held: dict[int, tuple[set[str], set[str], Hit]] = {}  # per document: words on its card, in its best chunk, its card
    for card in cards:
        document = int(card.payload["document"])
        if document not in held:
            held[document] = (wanted & set(terms(str(card.payload.get("text", "")))), set(), card)
    seen: set[int] = set()
    for chunk in chunks:
        document = int(chunk.payload["document"])
        if document not in seen and named_words:  # the document's best chunk only
            seen.add(document)
            on_card, _, card = held.get(document, (set(), set(), chunk))
            held[document] = (on_card, named_words & set(terms(str(chunk.payload.get("text", "")))), card)
    ranked = sorted(((len(on_card | in_chunk), len(on_card), len(wanted & set(terms(str(hit.payload.get("path", ""))))),
                      on_card | in_chunk, hit) for on_card, in_chunk, hit in held.values()),
                    key=lambda entry: (-entry[0], -entry[1], -entry[2]))
    if not ranked or (len(ranked) > 1 and ranked[1][:3] == ranked[0][:3]):
        return None
    words, best = ranked[0][3], ranked[0][4]
    # Numbers and months are dates, not names: "As of January 17, 2020" names no document.
    return best if sum(1 for t in words if t.isalpha() and t not in MONTHS) >= NAME_TERMS else None


def fuse(rankings: list[list[Hit]], documents: list[int], weights: list[float] | None = None) -> list[Hit]:
    """Reciprocal-rank fusion of chunk rankings (global, within the best documents, within the
    named one), each with its weight (1 unless given), and each chunk's document rank by card."""
    scores: dict[str, float] = {}
    by_id: dict[str, Hit] = {}
    document_rank = {document: rank for rank, document in enumerate(documents)}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, hit in enumerate(ranking):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (RRF_K + rank + 1)
            by_id.setdefault(hit.id, hit)
    for hit_id, hit in by_id.items():
        card = document_rank.get(int(hit.payload["document"]))
        if card is not None:
            scores[hit_id] += 1 / (RRF_K + card + 1)
    ordered = sorted(by_id, key=lambda i: -scores[i])
    return [Hit(i, scores[i], by_id[i].payload) for i in ordered]


def unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))
