"""OCR for scanned PDF pages with Debian's tesseract, run as a program (no Python binding).

A page whose text layer is (nearly) empty is rendered by pdfium at 300 dpi and read by
`tesseract`, locally; nothing leaves the machine. Where tesseract is not installed the document
is recorded as needing OCR instead.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from ingest.errors import ParseError

DPI = 300
PAGE_TIMEOUT_S = 120
MIN_TEXT_CHARS = 20  # fewer non-blank characters than this: a scan with at most a stamp on it


@dataclass(frozen=True)
class OcrOptions:
    max_pages: int = 100  # per document; 0 turns OCR off
    languages: str = "eng"


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def needs_ocr(text: str) -> bool:
    return len("".join(text.split())) < MIN_TEXT_CHARS


def ocr_page(page: Any, languages: str) -> str:
    """The text tesseract reads on one pdfium page."""
    program = tesseract_path()
    if program is None:
        raise ParseError("tesseract is not installed")
    image = page.render(scale=DPI / 72, grayscale=True).to_pil()
    png = io.BytesIO()
    image.save(png, format="PNG")
    try:
        result = subprocess.run(
            [program, "stdin", "stdout", "-l", languages, "--dpi", str(DPI)],
            input=png.getvalue(), capture_output=True, timeout=PAGE_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ParseError(f"OCR of a page took longer than {PAGE_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise ParseError(f"OCR failed: {message[0]}")
    return result.stdout.decode("utf-8", "replace")
