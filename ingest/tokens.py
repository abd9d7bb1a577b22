"""GPT-OSS token counting, offline: o200k_base (plain text counts the same as o200k_harmony).

The vocabulary ships inside the `bpe-openai` package, so no download ever happens. Chunks store
this count at ingest so packing a 128k-token prompt costs no tokenization.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_CANDIDATE = re.compile(r"(?<=[\r\n])[^\s/]|\s")  # where a safe cut may be (safe_join decides)


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import bpe_openai

    return bpe_openai.build_encoding_from_name("o200k_base")


def count_tokens(text: str) -> int:
    """Tokens GPT-OSS sees for `text`; special-token look-alikes count as plain text."""
    return len(_encoding().encode_ordinary(text))


# Exact counts without tokenizing again. o200k splits text into pieces with a regex, and BPE
# runs inside each piece. A letter or digit followed by whitespace always ends a piece (the word
# and number patterns never take whitespace, and no pattern looks back), punctuation followed by
# a space or tab does too, and so does a line break followed by anything but whitespace or "/"
# (only the whitespace patterns and the punctuation pattern's trailing [\r\n/]* go on past a
# line break). At such a "safe cut" p,
# count(text) == count(text[:p]) + count(text[p:]). Chunks store their counts up to
# safe cuts inside their overlaps, so packing adds up the exact count of any run of neighbouring
# chunks, merged into one passage, without running the tokenizer.


def is_safe_cut(text: str, position: int) -> bool:
    """Whether count(text) == count(text[:position]) + count(text[position:])."""
    if position <= 0 or position >= len(text):
        return True
    return safe_join(text[position - 1], text[position])


# Unicode White_Space, which the tokenizer's \s means (Python's isspace() also takes \x1c-\x1f).
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                       "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def safe_join(before: str, after: str) -> bool:
    """Whether a piece always ends between the characters `before` and `after`."""
    if before == "\n" or before == "\r":
        # After a line break, only whitespace or "/" can join it ("\n\n", ".\n/").
        return after not in WHITESPACE and after != "/"
    if before in WHITESPACE:
        return False
    if after in WHITESPACE:
        # A letter, digit or mark ends its piece at any whitespace; punctuation takes the line
        # breaks after it ("." + "\n\n" is one piece), but no other whitespace.
        return after not in "\r\n" or before.isalpha() or before.isnumeric()
    return False


def first_safe_cut(text: str, lo: int = 0, hi: int | None = None) -> int | None:
    """The first safe cut in text[lo:hi] (both ends included), other than the text's own ends."""
    hi = len(text) - 1 if hi is None else min(hi, len(text) - 1)
    for match in _CANDIDATE.finditer(text, max(lo, 1), hi + 1):
        if is_safe_cut(text, match.start()):
            return match.start()
    return None


def last_safe_cut(text: str, lo: int = 0, hi: int | None = None) -> int | None:
    """The last safe cut in text[lo:hi], other than the text's own ends."""
    top = len(text) if hi is None else min(hi, len(text))
    for position in range(top - 1, max(lo, 1) - 1, -1):
        if safe_join(text[position - 1], text[position]):
            return position
    return None


def chunk_counts(text: str, spans: list[tuple[int, int]]) -> list[dict[str, int | None]]:
    """Per chunk span of `text` (in order): its count, and the counts that let neighbouring chunks
    be added up exactly when merged: `cut` is a safe cut where this chunk's text gives way to the
    next one's (in their overlap, or near it when they only touch), `head` the
    count from the chunk's start to that cut, `tail` from the previous chunk's cut to the chunk's
    end, and `body` between the two cuts."""
    cuts: list[int | None] = []
    for i, (start, end) in enumerate(spans):
        cut = None
        if i + 1 < len(spans) and start <= spans[i + 1][0] <= end:
            # Inside the overlap where there is one, else early in the next chunk, else late in
            # this one: the cut only has to lie in the merged text, after the previous cut.
            following, following_end = spans[i + 1]
            lower = cuts[-1] if cuts and cuts[-1] is not None else start
            earliest = max(following, lower)
            cut = earliest if is_safe_cut(text, earliest) and earliest < following_end else (
                first_safe_cut(text, earliest, following_end - 1))
            if cut is None and lower < following:
                cut = last_safe_cut(text, lower, following)
        cuts.append(cut)
    counts: list[dict[str, int | None]] = []
    for i, (start, end) in enumerate(spans):
        cut, before = cuts[i], cuts[i - 1] if i else None
        counts.append({
            "tokens": count_tokens(text[start:end]),
            "cut": cut,
            "cut_before": before,
            "head": count_tokens(text[start:cut]) if cut is not None else None,
            "tail": count_tokens(text[before:end]) if before is not None else None,
            "body": count_tokens(text[before:cut]) if before is not None and cut is not None else None,
        })
    return counts


def document_tokens(counts: list[dict[str, Any]]) -> int | None:
    """The exact count of neighbouring chunks merged back into one text, from their stored counts
    (chunk_counts or the payloads holding them), or None when a count or cut is missing."""
    if len(counts) == 1:
        return None if counts[0].get("tokens") is None else int(counts[0]["tokens"])
    pieces = [counts[0].get("head"), *(c.get("body") for c in counts[1:-1]), counts[-1].get("tail")] if counts else []
    if not pieces or any(piece is None for piece in pieces):
        return None
    return sum(int(piece) for piece in pieces if piece is not None)
