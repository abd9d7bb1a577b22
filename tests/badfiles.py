"""Hostile and broken files, made on the spot."""

from __future__ import annotations

import io
from pathlib import Path


def text_pdf(text: str) -> bytes:
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, invariant=1)  # the same bytes for the same text
    page.drawString(72, 720, text)
    page.showPage()
    page.save()
    return buffer.getvalue()


def image_only_pdf() -> bytes:
    """A 'scanned' page: a drawing and no text layer."""
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer)
    page.rect(72, 500, 300, 200, fill=1)
    page.showPage()
    page.save()
    return buffer.getvalue()


def encrypted_pdf(text: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(text_pdf(text))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def write_bad_folder(folder: Path) -> dict[str, str]:
    """Write the bad files plus one good one; returns path -> expected reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "encrypted.pdf": (encrypted_pdf("Secret merger terms."), "encrypted"),
        "corrupt.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 20, "corrupt"),
        "truncated.pdf": (text_pdf("Half a file.")[:300], "corrupt"),
        "scanned.pdf": (image_only_pdf(), "no text layer"),
        "empty.txt": (b"", "empty"),
        "blank.md": (b"   \n\n  ", "empty"),
        "binary.txt": (b"MZ\x90\x00\x03\x00\x00\x00" * 100, "binary"),
        "fake.docx": (b"\x00\x01\x02 not a zip archive \xff\xfe" * 20, "could not be parsed"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "good.txt").write_text("The escrow agent releases funds upon written instruction.\n")
    (folder / "tool.exe").write_bytes(b"MZ")
    return {name: reason for name, (_, reason) in files.items()}


def zip_bomb_docx() -> bytes:
    """A DOCX whose document part deflates ~1,000x: 64 MiB of zeros in ~64 KiB (a real bomb nests this)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w") as part:
            block = b"\0" * 2**20
            for _ in range(64):
                part.write(block)
    return buffer.getvalue()


def nested_zip() -> bytes:
    """An archive holding an archive holding a document."""
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("contract.txt", "The parties agree to arbitrate.\n")
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as archive:
        archive.writestr("inner.zip", inner.getvalue())
    return outer.getvalue()


def scanned_pdf(lines: list[str]) -> bytes:
    """A page that is only a picture of printed text, as a scanner makes it: no text layer."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1700, 2200), 255)  # A4-ish at 200 dpi
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    for row, line in enumerate(lines):
        draw.text((150, 200 + row * 90), line, fill=0, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=200)
    return buffer.getvalue()
