"""Fast text-layer PDF parsing with pdfium: page numbers and headings, ~100x unstructured's speed.

unstructured's `fast` strategy (pdfminer plus spaCy classification) parsed ~7 pages/s on the
2-core development machine; pdfium extracts a text layer at ~500 pages/s. Each page's text is cut
into paragraphs at blank lines and at heading lines, and headings are recognised by shape
(numbered clauses, short capitalised lines without a full stop), so titles survive without a
language model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import ParseError
from ingest.ocr import OcrOptions, needs_ocr, ocr_page, tesseract_path

NUMBERED = re.compile(r"^(?:(?:section|article|clause|schedule|exhibit|annex)\s+)?[0-9IVXivx]+(?:\.[0-9]+)*\.?\s+\S", re.I)
MAX_HEADING_WORDS = 12
SMALL_WORDS = {"a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with"}


@dataclass(frozen=True)
class Block:
    text: str
    page: int | None
    category: str  # "Title" or "NarrativeText", as unstructured names them


def is_heading(line: str) -> bool:
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


def page_blocks(text: str, page: int | None) -> list[Block]:
    """Paragraphs and headings of one page's text."""
    blocks: list[Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Block(" ".join(paragraph), page, "NarrativeText"))
            paragraph.clear()

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = " ".join(raw.split())
        if not line:
            flush()
        elif is_heading(line) and not paragraph_continues(paragraph, line):
            flush()
            blocks.append(Block(line, page, "Title"))
        else:
            paragraph.append(line)
    flush()
    return blocks


def paragraph_continues(paragraph: list[str], line: str) -> bool:
    """A capitalised line after a line that did not end a sentence is more likely wrapped text."""
    return bool(paragraph) and not paragraph[-1].endswith((".", ":", ";", "?", "!")) and not line.isupper()


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
        texts: list[str] = []
        for number in range(pages):
            page = pdf[number]
            textpage = page.get_textpage()
            try:
                texts.append(textpage.get_text_range())
            finally:
                textpage.close()
                page.close()
        scanned = [number for number, text in enumerate(texts) if needs_ocr(text)]
        use_ocr = bool(scanned) and len(scanned) <= ocr.max_pages and tesseract_path() is not None
        if use_ocr:
            for number in scanned:
                page = pdf[number]
                try:
                    texts[number] = ocr_page(page, ocr.languages)
                finally:
                    page.close()
    finally:
        pdf.close()
    blocks = [block for number, text in enumerate(texts) for block in page_blocks(text, number + 1)]
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
