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
