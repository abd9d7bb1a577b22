import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from docqa.models import in_count_order

register = template.Library()
MARKER = re.compile(r"\[(S\d+)\]")


@register.filter
def link_citations(answer: str, question: int | None = None) -> SafeString:
    """Escape the answer, then turn each [Sn] marker into a link to its source in the panel."""
    escaped = escape(answer)
    prefix = f"q{question}-" if question else "src-"
    return mark_safe(MARKER.sub(rf'<a class="cite" href="#{prefix}\1">[\1]</a>', escaped))


def quote_spans(text: str, quote: str) -> list[tuple[int, int]]:
    """Where the parts of `quote` (split at ellipses) occur in `text`, by the verifier's own rules."""
    from inference.citations import quote_locations

    return sorted(quote_locations(text, quote))


@register.filter
def mark_quotes(text: str, citations: list) -> SafeString:
    """The passage, escaped, with each verified quote's words marked (a quote that failed is not:
    its words found apart, or with a "not" left out between them, would look proven)."""
    text = str(text)
    spans: list[tuple[int, int]] = []
    for citation in citations or []:
        quote = getattr(citation, "quote", "") or ""
        if quote and not quote.startswith("sha256:") and getattr(citation, "status", "") == "quote verified":
            spans += quote_spans(text, quote)
    out, at = [], 0
    for start, end in merged(spans):
        out += [escape(text[at:start]), mark_safe("<mark>"), escape(text[start:end]), mark_safe("</mark>")]
        at = end
    out.append(escape(text[at:]))
    return mark_safe("".join(str(piece) for piece in out))


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans in order, those that overlap or touch joined into one."""
    joined: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


@register.filter
def thousands(value: object) -> str:
    """A count as people read it ("32,182"); anything not a number as it is."""
    try:
        return f"{int(str(value)):,}"
    except ValueError:
        return "" if value is None else str(value)


@register.filter
def count_line(counts: dict[str, int]) -> str:
    """A run's counts in a line ("new 12 · indexed 11 · failed 1"), leaving out the noughts."""
    return " · ".join(f"{k} {v:,}" for k, v in counts.items() if v)


@register.filter
def content(value: object) -> str:
    """A recorded content field: its text, or, once retention expired it, what is left of it."""
    if isinstance(value, dict) and set(value) == {"sha256"}:
        return f"[expired; sha256 {str(value['sha256'])[:16]}…]"
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 71:
        return f"[expired; sha256 {value[7:23]}…]"
    return "" if value is None else str(value)


# The audit list's "What" for events other than questions: the fields that say what was done, in
# this order, each as "field value"; bulky content (answers, sources) is for the event's own page.
SUMMARY_FIELDS = ("question", "conversation", "folder", "path", "root", "slug", "name", "user", "group", "role", "username",
                  "address", "reason", "roots", "run", "cancelled", "items", "counts", "token", "event", "document",
                  "format", "start", "end")


@register.filter
def audit_summary(detail: object) -> str:
    """One line saying what an audit event recorded ("path lease.txt · chars 120-480")."""
    if not isinstance(detail, dict):
        return ""
    if detail.get("text"):  # a question: its words say it
        return content(detail["text"])
    parts = []
    for name in SUMMARY_FIELDS:
        value = detail.get(name)
        if value in (None, "", [], {}) or name in ("start", "end"):
            continue
        if name == "counts" and isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in in_count_order(value).items() if v) or "nothing to do"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{name} {value}")
    if isinstance(detail.get("start"), int) and isinstance(detail.get("end"), int):
        parts.append(f"chars {detail['start']}-{detail['end']}")
    if not parts:  # an action of its own kind (a retention run, say): its first few plain fields
        parts = [f"{k} {v}" for k, v in detail.items() if isinstance(v, (str, int, float)) and v != ""][:4]
    return " · ".join(parts)
