"""Fast text-layer PDF parsing with pdfium: page numbers, headings and tables, ~50x unstructured's speed.

unstructured's `fast` strategy (pdfminer plus spaCy classification) parsed ~7 pages/s on the
2-core development machine; pdfium extracts a text layer at ~500 pages/s. Each page's text is cut
into paragraphs at blank lines and at heading lines, and headings are recognised by shape
(numbered clauses, short capitalised lines without a full stop), so titles survive without a
language model.

Tables are found from where the characters stand: pdfium writes one space for any gap between
words, so a gap wider than an em (measured on the character boxes) splits a line into cells, and
two or more consecutive lines of cells whose columns line up are a table, written one row per
line with cells separated by " | " (as tables from other formats are), so rows stay whole in
chunks and the model reads the columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import ParseError
from ingest.ocr import OcrOptions, needs_ocr, ocr_page, tesseract_path

NUMBERED = re.compile(r"^(?:(?:section|article|clause|schedule|exhibit|annex)\s+)?[0-9IVXivx]+(?:\.[0-9]+)*\.?\s+\S", re.I)
MAX_HEADING_WORDS = 12
SMALL_WORDS = {"a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with"}


# A gap between two words wider than this many ems (of the font size before it) ends a cell.
CELL_GAP_EM = 1.0
# ... except after the end of a sentence, where typewritten contracts leave two spaces (1.2 em).
SENTENCE_GAP_EM = 1.5
MIN_CELL_GAP_PT = 4.0  # an em of the smallest print anyone reads
# Cells of two rows belong to one column when an edge or the centre lies this close (points).
ALIGN_PT = 3.0
ROWS_LOOKED_BACK = 3
MAX_LINES_BETWEEN = 2
# A number, letter or bullet opening a line, set off by a tab: a list item, not a table's cell.
# A letter or roman numeral needs its stop or brackets ("a.", "(iv)"): "III", "DC" or "LLC"
# alone may well be a table's first column.
LIST_MARKER = re.compile(
    r"^(?:\d{1,3}(?:\.\d{1,3})*[.)]?|[(\[]\w{1,6}[)\]]|(?:[A-Za-z]|[ivxlcdmIVXLCDM]{1,6})[.)]|[•·●▪■◦○►*§.\-–—])$"
)


@dataclass(frozen=True)
class Block:
    text: str
    page: int | None
    category: str  # "Title", "NarrativeText", "Table" or "Header" (page furniture), as unstructured names them


@dataclass(frozen=True)
class Line:
    """One printed line: its cells, and each cell's left and right edge in points where known."""

    cells: tuple[str, ...]
    edges: tuple[tuple[float, float], ...] = ()

    @property
    def text(self) -> str:
        return " ".join(self.cells)

    def is_row(self) -> bool:
        return len(self.cells) >= 2 and len(self.edges) == len(self.cells)

    def lines_up_with(self, other: Line) -> bool:
        """Whether a cell of this row sits in the same column as a cell of `other`: a shared left
        edge, right edge (numbers) or centre. Two first cells, both at the margin, don't count."""
        for i, (left, right) in enumerate(self.edges):
            for j, (other_left, other_right) in enumerate(other.edges):
                if (i or j) and (
                    abs(left - other_left) <= ALIGN_PT
                    or abs(right - other_right) <= ALIGN_PT
                    or abs(left + right - other_left - other_right) <= 2 * ALIGN_PT
                ):
                    return True
        return False


def render_table(rows: Iterable[Sequence[str]]) -> str:
    """A table as text the model reads, whatever format it came from: one row per line, cells
    separated by " | "."""
    return "\n".join(" | ".join(cells) for cells in rows)


# A page number, alone or at the end of a footer: "Page 3 of 36", "Supply Agreement Page 4 of 75", "Page -2-".
PAGE_NUMBER = re.compile(r"(?:.*\s)?page\s*-?\s*\d+\s*-?(?:\s+of\s+\d+)?", re.I)


def is_heading(line: str) -> bool:
    """A heading: heading-shaped, and not a page number or a record's field (page_furniture)."""
    return heading_shaped(line) and not page_furniture(line)


def page_furniture(line: str) -> bool:
    """A page number, or a record's field whose value has no words ("Date: 2017-03-31", "SHA:
    ee8dca21...", "DOI: 10.3390/v12020194"): short lines that look like headings and are none."""
    if PAGE_NUMBER.fullmatch(line):
        return True
    label, colon, value = line.partition(": ")
    return bool(colon and label.strip()) and not any(wordlike(word) for word in value.split())


def wordlike(word: str) -> bool:
    """At least two letters, and letters at least half of it: "Non-Compete", "COVID-19", "U.S.A."
    are words; a date, a DOI or a hash ("ee8dca216514deeed4c9...") is not."""
    letters = sum(c.isalpha() for c in word)
    return letters >= 2 and 2 * letters >= len(word)


def heading_shaped(line: str) -> bool:
    """Short, capitalised or numbered, not ending like a sentence: where a paragraph ends and an
    element of its own begins (a heading, or page furniture that is_heading tells apart)."""
    words = line.split()
    if not words or len(words) > MAX_HEADING_WORDS or len(line) > 100:
        return False
    if line.endswith((".", ",", ";", ":")) and not NUMBERED.match(line):
        return False
    letters = [c for c in line if c.isalpha()]
    if not letters:
        return False
    if line.isupper() and len(letters) >= 3:
        return len(words) <= 8  # longer capitalised lines are disclaimers, not headings
    if NUMBERED.match(line) and len(words) <= 8 and words[-1][:1].isupper():
        return True
    capitalised = sum(1 for w in words if w[:1].isupper() or not w[:1].isalpha() or w in SMALL_WORDS)
    starts_well = words[0][:1].isupper() or words[0][:1].isdigit()
    return starts_well and len(words) <= 8 and capitalised == len(words) and not line.endswith(".")


def text_lines(text: str) -> list[Line]:
    """The lines of a page's text with no positions (OCR output): one cell each."""
    return [Line((" ".join(raw.split()),)) for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def page_lines(textpage: Any, text: str) -> list[Line]:
    """The lines of a pdfium text page, split into cells at gaps wider than CELL_GAP_EM.

    `text` is the page's whole text, one character per pdfium character index (pdfium's own
    line breaks are characters too), so a space at index k sits between characters k-1 and k+1.
    """
    import ctypes

    import pypdfium2.raw as pdfium_c

    handle = textpage.raw
    left, right, bottom, top = ctypes.c_double(), ctypes.c_double(), ctypes.c_double(), ctypes.c_double()

    def box(index: int) -> tuple[float, float]:
        """A character's left and right edge; NaN where pdfium has none, which splits nothing."""
        if not pdfium_c.FPDFText_GetCharBox(handle, index, left, right, bottom, top):
            return math.nan, math.nan
        return left.value, right.value

    lines: list[Line] = []
    for match in re.finditer(r"([^\r\n]*)(?:\r\n|\r|\n|$)", text):
        line, offset = match.group(1), match.start()
        if match.start() == len(text) and lines:
            break  # the empty match at the end
        cuts: list[tuple[int, int, float, float]] = []  # (end of cell, start of next, right edge, left edge)
        for gap in re.finditer(r"(?<=\S)[ \t]+(?=\S)", line):
            before, after = offset + gap.start() - 1, offset + gap.end()
            edge, next_edge = box(before)[1], box(after)[0]
            if next_edge - edge < MIN_CELL_GAP_PT:  # most gaps: no need to ask for the font size
                continue
            width = (next_edge - edge) / max(pdfium_c.FPDFText_GetFontSize(handle, before), 1.0)
            sentence_end = line[gap.start() - 1] in ".?!" and line[gap.end()].isupper()
            if width >= CELL_GAP_EM and not (sentence_end and width < SENTENCE_GAP_EM):
                cuts.append((gap.start(), gap.end(), edge, next_edge))
        if not cuts:
            lines.append(Line((" ".join(line.split()),)))
            continue
        first = len(line) - len(line.lstrip())
        last = len(line.rstrip())
        starts = [first] + [cut[1] for cut in cuts]
        ends = [cut[0] for cut in cuts] + [last]
        lefts = [box(offset + first)[0]] + [cut[3] for cut in cuts]
        rights = [cut[2] for cut in cuts] + [box(offset + last - 1)[1]]
        cells = [" ".join(line[s:e].split()) for s, e in zip(starts, ends, strict=True)]
        edges = list(zip(lefts, rights, strict=True))
        if LIST_MARKER.match(cells[0]):  # "5.<tab>The seller ...": a list item, one cell
            cells[:2] = [f"{cells[0]} {cells[1]}"]
            edges[:2] = [(edges[0][0], edges[1][1])]
        lines.append(Line(tuple(cells), tuple(edges)))
    return lines


def find_tables(lines: list[Line]) -> Iterator[tuple[int, int]]:
    """(first, end) line ranges that are tables: two or more rows of cells, each lining up with
    one of the few rows before it (a row with empty cells may share no column with the row just
    above); one or two single lines between two such rows (a wrapped cell) belong to the table."""
    i = 0
    while i < len(lines):
        if not lines[i].is_row():
            i += 1
            continue
        end, recent = i + 1, [lines[i]]
        while end < len(lines):
            if continues(lines[end], recent):
                recent.append(lines[end])
                end += 1
            else:
                # One or two single lines (a wrapped cell, a second call sign), then a row.
                between = next((n for n in range(1, MAX_LINES_BETWEEN + 1) if end + n < len(lines)
                                and all(not line.is_row() and line.cells[0] for line in lines[end : end + n])
                                and continues(lines[end + n], recent)), 0)
                if not between:
                    break
                recent.append(lines[end + between])
                end += between + 1
        if len(recent) >= 2:
            yield i, end
        i = end


def continues(line: Line, rows: list[Line]) -> bool:
    """Whether `line` is a row of the table whose rows so far are `rows`."""
    return line.is_row() and any(line.lines_up_with(row) for row in rows[-ROWS_LOOKED_BACK:])


def page_blocks(lines: list[Line], page: int | None) -> list[Block]:
    """Paragraphs, headings and tables of one page's lines."""
    blocks: list[Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Block(" ".join(paragraph), page, "NarrativeText"))
            paragraph.clear()

    tables = dict(find_tables(lines))
    index = 0
    while index < len(lines):
        if index in tables:
            flush()
            rows = lines[index : tables[index]]
            blocks.append(Block(render_table(row.cells for row in rows), page, "Table"))
            index = tables[index]
            continue
        line = lines[index].text
        index += 1
        if not line:
            flush()
        elif category := standalone(line, paragraph[-1] if paragraph else None):
            flush()
            blocks.append(Block(line, page, category))
        else:
            paragraph.append(line)
    flush()
    return blocks


def standalone(line: str, previous: str | None) -> str | None:
    """The category of a line that is an element of its own, after `previous` (the paragraph's
    last line so far, None when there is none): "Header" for page furniture (even inside a
    paragraph), "Title" for a heading; None for a line of the paragraph. A capitalised line after
    a line that did not end a sentence is more likely wrapped text than a heading."""
    if not heading_shaped(line):
        return None
    if page_furniture(line):
        return "Header"
    continues = previous is not None and not previous.endswith((".", ":", ";", "?", "!")) and not line.isupper()
    return None if continues else "Title"


def extract_pdf(path: Path, ocr: OcrOptions | None = None) -> tuple[list[Block], int]:
    """Blocks of every page's text, and how many pages were read by OCR.

    Pages without a text layer go through OCR (ingest.ocr) when `ocr` allows and tesseract is
    installed. Raises ParseError for encrypted, unreadable and unreadable-without-OCR files.
    """
    import pypdfium2

    ocr = ocr or OcrOptions()
    try:
        pdf = pypdfium2.PdfDocument(str(path))
    except pypdfium2.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            raise ParseError("encrypted PDF (password required); not indexed") from exc
        raise ParseError(f"corrupt or unreadable PDF ({message})") from exc
    try:
        pages = len(pdf)
        if pages == 0:
            raise ParseError("PDF has no pages")
        texts: list[list[Line]] = []
        scanned = []
        for number in range(pages):
            page = pdf[number]
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
                if needs_ocr(text):
                    scanned.append(number)
                texts.append(page_lines(textpage, text))
            finally:
                textpage.close()
                page.close()
        use_ocr = bool(scanned) and len(scanned) <= ocr.max_pages and tesseract_path() is not None
        if use_ocr:
            for number in scanned:
                page = pdf[number]
                try:
                    texts[number] = text_lines(ocr_page(page, ocr.languages))
                finally:
                    page.close()
    finally:
        pdf.close()
    blocks = [block for number, lines in enumerate(texts) for block in page_blocks(lines, number + 1)]
    ocr_pages = len(scanned) if use_ocr else 0
    if not blocks:
        raise ParseError(no_text_reason(pages, len(scanned), ocr, ocr_pages))
    return blocks, ocr_pages


def no_text_reason(pages: int, scanned: int, ocr: OcrOptions, ocr_pages: int) -> str:
    what = f"PDF has {pages} page(s) but no text layer (scanned?)"
    if ocr_pages:
        return f"{what}, and OCR found no text on them"
    if ocr.max_pages == 0:
        return f"{what}; needs OCR, which is turned off (DOCQA_OCR_MAX_PAGES=0)"
    if scanned > ocr.max_pages:
        return f"{what}; needs OCR of {scanned} pages, over the limit of {ocr.max_pages} (DOCQA_OCR_MAX_PAGES)"
    return f"{what}; needs OCR, and tesseract is not installed (apt-get install tesseract-ocr)"
