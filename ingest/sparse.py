"""Sparse lexical vectors for Qdrant: BM25's term-frequency part here, its IDF in Qdrant.

Each chunk becomes a sparse vector whose indices are hashed word stems and whose values are
BM25's saturated term frequency, tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)); the
collection's sparse vector has the IDF modifier, so Qdrant weighs each term by its rarity among
the points it holds, and the dot product with a query vector of ones is BM25. Words are
lower-cased, split at anything that is not a letter or digit, stripped of English stopwords and
stemmed with the Snowball stemmer (pure Python, no data files).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

K1 = 1.2
B = 0.75
AVERAGE_LENGTH = 100.0  # stems in a typical 200-word-piece chunk; a fixed norm keeps chunks independent
WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me
more most my myself no nor not of off on once only or other our ours ourselves out over own same
she should so some such than that the their theirs them themselves then there these they this
those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves shall may must upon hereby herein thereof
""".split())


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return _stemmer().stem(word)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem.snowball import EnglishStemmer

    return EnglishStemmer()


def terms(text: str) -> list[str]:
    words = (w for w in WORD.findall(text.lower()) if w not in STOPWORDS and (len(w) > 1 or w.isdigit()))
    return [stem(w) if w.isalpha() else w for w in words]


def term_index(term: str) -> int:
    return zlib.crc32(term.encode("utf-8"))


def document_vector(text: str) -> SparseVector:
    counts = Counter(terms(text))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVERAGE_LENGTH)
    weights: dict[int, float] = {}
    for term, tf in counts.items():
        index = term_index(term)
        weights[index] = weights.get(index, 0.0) + tf * (K1 + 1) / (tf + norm)
    indices = sorted(weights)
    return SparseVector(indices, [weights[i] for i in indices])


def query_vector(text: str) -> SparseVector:
    indices = sorted({term_index(t) for t in terms(text)})
    return SparseVector(indices, [1.0] * len(indices))
