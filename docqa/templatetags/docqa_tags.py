import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
MARKER = re.compile(r"\[(S\d+)\]")


@register.filter
def link_citations(answer: str) -> SafeString:
    """Escape the answer, then turn each [Sn] marker into a link to its source."""
    escaped = escape(answer)
    return mark_safe(MARKER.sub(r'<a class="cite" href="#src-\1">[\1]</a>', escaped))


@register.filter
def content(value: object) -> str:
    """A recorded content field: its text, or, once retention expired it, what is left of it."""
    if isinstance(value, dict) and set(value) == {"sha256"}:
        return f"[expired; sha256 {str(value['sha256'])[:16]}…]"
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 71:
        return f"[expired; sha256 {value[7:23]}…]"
    return "" if value is None else str(value)
