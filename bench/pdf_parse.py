"""PDF parse rate on the CUAD originals of ../shared/corpus/ingest: docqa's parser against bare pdfium.

For every PDF (465 contracts, ~8,500 pages), side by side in one run:
1. bare pdfium: open, read each page's text, close (the floor any text-layer parser pays);
2. docqa's parser (ingest.pdf.extract_pdf, OCR off): the same text cut into paragraphs, headings
   and tables, with the character boxes read to find the tables' cells;
and prints pages/s for each, their ratio, and how many tables were found in how many files, so
the cost of table detection is measured rather than guessed. The issue's floor is 40 pages/s.
Run:  .venv/bin/python bench/pdf_parse.py [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "ingest" / "cuad_pdf"
sys.path.insert(0, str(REPO))


def bare_pdfium(path: Path) -> int:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        for number in range(len(pdf)):
            page = pdf[number]
            textpage = page.get_textpage()
            textpage.get_text_range()
            textpage.close()
            page.close()
        return len(pdf)
    finally:
        pdf.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="first N PDFs (default: all)")
    args = parser.parse_args()

    from ingest.errors import ParseError
    from ingest.ocr import OcrOptions
    from ingest.pdf import extract_pdf

    paths = sorted(p for p in CORPUS.rglob("*") if p.suffix.lower() == ".pdf")
    paths = paths[: args.limit] if args.limit else paths
    bare_s = docqa_s = 0.0
    pages = tables = with_tables = failed = 0
    for path in paths:
        path.read_bytes()  # from the page cache for both parsers, so neither pays the disk
        started = time.perf_counter()
        pages += bare_pdfium(path)
        bare_s += time.perf_counter() - started
        started = time.perf_counter()
        try:
            blocks, _ = extract_pdf(path, OcrOptions(max_pages=0))
        except ParseError:
            failed += 1
            blocks = []
        docqa_s += time.perf_counter() - started
        found = sum(1 for block in blocks if block.category == "Table")
        tables += found
        with_tables += bool(found)
    print(f"{len(paths)} PDFs, {pages:,} pages ({failed} without a text layer)")
    print(f"  bare pdfium text:            {pages / bare_s:7,.0f} pages/s ({bare_s:.1f} s)")
    print(f"  docqa parser (tables found): {pages / docqa_s:7,.0f} pages/s ({docqa_s:.1f} s)")
    print(f"  docqa / bare time: {docqa_s / bare_s:.2f}x; floor 40 pages/s: {'met' if pages / docqa_s >= 40 else 'MISSED'}")
    print(f"  tables: {tables:,} in {with_tables} of {len(paths)} files")


if __name__ == "__main__":
    main()
