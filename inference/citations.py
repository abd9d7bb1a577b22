"""Check an answer's citations against the sources that were actually sent.

Every `[Sn]` marker must name a packed source. Every quoted span of the claim a marker ends (the
text since the previous marker; after the last marker, to the end too) must occur in that source
as whole words: whitespace, typographic quotes, hyphenation (a word broken
at a line end), the case of the first letter and trailing punctuation inside the quotes are
forgiven; an ellipsis may join parts that stand
in order no more than a few sentences apart. Each citation gets one of three results:

- "quote verified": the source was sent and the quote is in it;
- "source only": the source was sent, but there was no quote (or one too short) to check;
- "failed": an unknown label, or a quote that is not in the source.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import asdict, dataclass
from typing import Any

MARKER_GROUP = re.compile(r"\[(S\d+(?:\s*[,;]\s*S\d+)*)\]")
# A quote in straight or in curly quotes; each may hold the other kind inside, as contracts quote
# their defined terms: "... (hereinafter referred to as “CONSULTANT”) ..." [S1].
QUOTED = re.compile(r"\"([^\"]{3,}?)\"|“([^“”]{3,}?)”")
ELLIPSIS = re.compile(r"\s*(?:\.\.\.|…)\s*")
MIN_WORDS = 2  # a one-word "quote" proves nothing
MAX_GAP = 600  # characters allowed between the parts joined by an ellipsis
# An ellipsis that leaves one of these out can turn a clause into its opposite.
NEGATIONS = re.compile(r"(?<!\w)(not|no|never|neither|nor|without|except|unless|n't)(?!\w)", re.I)

QUOTE_VERIFIED, SOURCE_ONLY, FAILED = "quote verified", "source only", "failed"


@dataclass(frozen=True)
class CheckedCitation:
    label: str
    quote: str
    status: str
    reason: str
    span: tuple[int, int] | None = None  # a verified quote's place in the source's text as sent

    @property
    def verified(self) -> bool:
        return self.status != FAILED

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "span": list(self.span) if self.span else None, "verified": self.verified}


SOFT_HYPHEN = re.compile("\u00ad")
HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-\s*(?=[^\W\d_])")  # between letters only: "10-15" stays
SPACES = re.compile(r"\s+")
QUOTE_MARKS = str.maketrans({"“": '"', "”": '"', "’": "'", "‘": "'", "\u2010": "-", "\u2011": "-"})
# After the one-for-one marks above, these passes run in order; each may shorten the text.
PASSES = ((SOFT_HYPHEN, ""), (HYPHEN_BREAK, ""), (SPACES, " "))


def normalize(text: str) -> str:
    """Whitespace, typographic quotes and hyphenation made uniform on both sides, nothing looser:
    "non-compete", "non- compete" (a line break in a PDF) and "noncompete" compare equal."""
    text = text.translate(QUOTE_MARKS)
    for pattern, replacement in PASSES:
        text = pattern.sub(replacement, text)
    return text.strip()


class NormalizedSource:
    """A source's text normalized once per answer, and the way back from an offset in it to the
    source's own, worked out only when a quote is found (one pass over the matches, not the text)."""

    def __init__(self, raw: str):
        self.raw = raw
        self.text = normalize(raw)
        self._back: list[tuple[list[int], list[int]]] | None = None
        self.lead = 0  # spaces stripped from the front

    def original(self, offset: int) -> int:
        if self._back is None:
            self._back = []
            text = self.raw.translate(QUOTE_MARKS)
            for pattern, replacement in PASSES:
                # For each match: where the text after it starts in the output, and how many
                # characters all matches so far removed; output offset + removed = input offset.
                after: list[int] = []
                removed: list[int] = []
                total = 0
                for found in pattern.finditer(text):
                    after.append(found.start() - total + len(replacement))
                    total += found.end() - found.start() - len(replacement)
                    removed.append(total)
                self._back.append((after, removed))
                text = pattern.sub(replacement, text)
            self.lead = len(text) - len(text.lstrip())
        offset += self.lead
        for after, removed in reversed(self._back):
            passed = bisect_right(after, offset)
            offset += removed[passed - 1] if passed else 0
        return offset


def part_pattern(part: str) -> re.Pattern[str]:
    first, rest = part[0], re.escape(part[1:])
    head = f"[{re.escape(first.upper())}{re.escape(first.lower())}]" if first.isalpha() else re.escape(first)
    return re.compile(rf"(?<!\w){head}{rest}(?!\w)")


def quote_parts(quote: str) -> list[str]:
    return [p.strip(" ,.;:") for p in ELLIPSIS.split(normalize(quote)) if p.strip(" ,.;:")]


def quote_locations(text: str, quote: str) -> list[tuple[int, int]]:
    """Where each part of `quote` stands in `text`, in `text`'s own offsets, found by the very
    rules that verify a quote (so a verified quote is always the one marked): "twenty-four" in
    the quote finds "twenty- four" or "twentyfour" in the text, and the reverse."""
    source = NormalizedSource(text)
    spans, position = [], 0
    for raw in ELLIPSIS.split(normalize(quote)):
        part = raw.strip(" ,.;:")
        if not part:
            continue
        found = part_pattern(part).search(source.text, position)
        if found is None:
            continue  # a part that is not there is not marked; the rest still are
        start, end = source.original(found.start()), source.original(found.end() - 1) + 1
        # The punctuation the quote closes with ("... written notice.") is marked too when the text has it.
        closing = raw.rstrip()[len(part) + raw.find(part):]
        if closing and text.startswith(closing, end):
            end += len(closing)
        spans.append((start, end))
        position = found.end()
    return spans


def find_quote(parts: list[str], source: NormalizedSource) -> tuple[str, tuple[int, int] | None]:
    """("", where it stands in the source's text) when the parts stand in the source as quoted;
    otherwise (why not, None)."""
    haystack = source.text
    position, previous_end, first = 0, 0, 0
    for number, part in enumerate(parts):
        found = part_pattern(part).search(haystack, position)
        if found is None:
            return "quote not found in {label}", None
        if number:
            omitted = haystack[previous_end : found.start()]
            if len(omitted) > MAX_GAP:
                return "quoted parts stand too far apart in {label}", None
            negation = NEGATIONS.search(omitted)
            if negation:
                return f"the ellipsis leaves out {negation.group(0)!r}, which changes the meaning", None
        else:
            first = found.start()
        position = previous_end = found.end()
    return "", (source.original(first), source.original(previous_end - 1) + 1)


def check_citations(answer: str, sources: dict[str, str]) -> list[CheckedCitation]:
    """`sources` maps label -> text as sent. Per marker and label, in answer order: one result for
    each quote of the claim it ends, or one without a quote when the claim quotes nothing."""
    checked: list[CheckedCitation] = []
    normalized: dict[str, NormalizedSource] = {}  # each source once, however often it is cited
    markers = list(MARKER_GROUP.finditer(answer))
    for number, match in enumerate(markers):
        claim = answer[markers[number - 1].end() if number else 0 : match.start()]
        if number == len(markers) - 1:  # 'as [S2] puts it: "..."': a quote after the last marker is its
            claim += " " + answer[match.end():]
        quotes = [(q.group(1) or q.group(2)).strip() for q in QUOTED.finditer(claim)]
        checkable = [q for q in quotes if all(len(p.split()) >= MIN_WORDS for p in quote_parts(q))] or quotes[:1]
        for label in re.split(r"\s*[,;]\s*", match.group(1)):
            checked.extend(check_one(label, quote, sources, normalized) for quote in checkable or [""])
    return checked


def check_one(label: str, quote: str, sources: dict[str, str],
              normalized: dict[str, NormalizedSource]) -> CheckedCitation:
    if label not in sources:
        return CheckedCitation(label, quote, FAILED, f"{label} is not one of the sources sent")
    parts = quote_parts(quote)
    if not parts or any(len(p.split()) < MIN_WORDS for p in parts):
        reason = "no quote to check" if not quote else "quote too short to check"
        return CheckedCitation(label, quote, SOURCE_ONLY, f"names a source that was sent; {reason}")
    if label not in normalized:
        normalized[label] = NormalizedSource(sources[label])
    problem, span = find_quote(parts, normalized[label])
    if not problem:
        return CheckedCitation(label, quote, QUOTE_VERIFIED, "quote found word for word in the source", span)
    return CheckedCitation(label, quote, FAILED, problem.format(label=label))
