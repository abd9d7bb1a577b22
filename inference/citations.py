"""Check an answer's citations against the sources that were actually sent.

Every `[Sn]` marker must name a packed source; a quoted span written right before a marker must
occur verbatim in that source (whitespace, typographic quotes and an ellipsis between parts are
tolerated). Each citation records whether it held and why.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

MARKER_GROUP = re.compile(r"\[(S\d+(?:\s*[,;]\s*S\d+)*)\]")
QUOTE_BEFORE = re.compile(r"[\"“]([^\"“”]{3,}?)[\"”]\s*[,.;:]?\s*$")
ELLIPSIS = re.compile(r"\s*(?:\.\.\.|…)\s*")


@dataclass(frozen=True)
class CheckedCitation:
    label: str
    quote: str
    verified: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(text: str) -> str:
    text = text.replace("“", '"').replace("”", '"').replace("’", "'").replace("‘", "'")
    return re.sub(r"\s+", " ", text).strip()


def quote_occurs(quote: str, source_text: str) -> bool:
    haystack = normalize(source_text)
    position = 0
    for part in ELLIPSIS.split(normalize(quote)):
        if not part:
            continue
        found = haystack.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


def check_citations(answer: str, sources: dict[str, str]) -> list[CheckedCitation]:
    """`sources` maps label -> text as sent. One result per marker, in answer order."""
    checked: list[CheckedCitation] = []
    previous_end = 0
    for match in MARKER_GROUP.finditer(answer):
        before = answer[previous_end : match.start()]
        quoted = QUOTE_BEFORE.search(before)
        quote = quoted.group(1).strip() if quoted else ""
        for label in re.split(r"\s*[,;]\s*", match.group(1)):
            checked.append(check_one(label, quote, sources))
        previous_end = match.end()
    return checked


def check_one(label: str, quote: str, sources: dict[str, str]) -> CheckedCitation:
    if label not in sources:
        return CheckedCitation(label, quote, False, f"{label} is not one of the sources sent")
    if not quote:
        return CheckedCitation(label, quote, True, "names a source that was sent; no quote to check")
    if quote_occurs(quote, sources[label]):
        return CheckedCitation(label, quote, True, "quote found verbatim in the source")
    return CheckedCitation(label, quote, False, f"quote not found in {label}")
