"""Every supported format parses with its structure; types are decided from content."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.detect import Unsupported, detect_kind, read_head
from ingest.discover import walk_folder
from ingest.parse import ParsedDocument, parse_file
from tests.badfiles import text_pdf
from tests.conftest import SHARED
from tests.formats import (
    write_csv,
    write_eml,
    write_msg,
    write_odt,
    write_pdf_with_table,
    write_pptx,
    write_rtf,
    write_xlsx,
)


def test_pptx_keeps_slide_numbers(tmp_path: Path) -> None:
    path = tmp_path / "deck.pptx"
    write_pptx(path)

    parsed = parse_file(path, detect_kind(path, read_head(path)))

    assert "Phase two costs 1.2 million euros." in parsed.text
    assert parsed.page_at(parsed.text.index("Phase two")) == 2


@pytest.mark.parametrize("name, writer, row", [
    ("fees.xlsx", write_xlsx, "Support | 800 | 40 hours"),
    ("parties.csv", write_csv, "Harbor Robotics Inc. | Buyer | Delaware"),
])
def test_tables_are_rendered_row_by_row(tmp_path: Path, name: str, writer: Callable[[Path], None], row: str) -> None:
    path = tmp_path / name
    writer(path)

    parsed = parse_file(path, detect_kind(path, read_head(path)))

    assert row in parsed.text.splitlines()


def test_pdf_tables_are_found_by_where_the_words_stand(tmp_path: Path) -> None:
    path = tmp_path / "fees.pdf"
    write_pdf_with_table(path)

    parsed = parse_file(path, "pdf")
    elements = {parsed.text[s:e]: c for s, e, c in zip(parsed.starts, parsed.ends, parsed.categories, strict=True)}

    assert elements["Service | Fee (EUR) | Cap\nHosting | 1,200 | none\nSupport | 800 | 40 hours"] == "Table"
    assert elements["By: Anna Berg | By: Tomas Lund\nTitle: Director | Title: CEO"] == "Table"
    # A numbered list, wrapped prose and two spaces after a sentence are not tables.
    assert elements["The Customer shall pay the following fees each quarter, in euros, within thirty days of the "
                    "invoice date."] == "NarrativeText"
    narrative = [text for text, category in elements.items() if category == "NarrativeText"]
    assert any(text.startswith("1. The Supplier keeps the service available. 2. The Customer reports faults in "
                               "writing. Either party may end this agreement. Notice is given in writing. The term "
                               "is two years.") for text in narrative)
    assert parsed.section_at(parsed.text.index("Hosting")) == "4. Fees"


@pytest.mark.parametrize("cell, marker", [
    ("5.", True), ("12.3.1", True), ("(a)", True), ("iv.", True), ("(iv)", True), ("•", True),
    ("III", False), ("LLC", False), ("DC", False), ("2019", False), ("Boston", False),
])
def test_a_list_marker_set_off_by_a_tab_is_not_a_cell(cell: str, marker: bool) -> None:
    from ingest.pdf import LIST_MARKER

    assert bool(LIST_MARKER.match(cell)) is marker


def test_tables_of_a_real_contract_pdf_keep_their_rows_in_chunks() -> None:
    from ingest.chunk import chunk_document
    from ingest.embed import Embedder

    path = next((SHARED / "corpus" / "ingest" / "cuad_pdf").rglob("EmeraldHealthBioceuticalsInc_20200218_1-A_EX1A-6*"))
    parsed = parse_file(path, "pdf")
    tables = [(s, e) for s, e, c in zip(parsed.starts, parsed.ends, parsed.categories, strict=True) if c == "Table"]
    embedder = Embedder()

    chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=40, overlap=8, hard_limit=embedder.token_limit)

    assert "$2,000,001 to $3,500,000 | $150,000" in parsed.text.splitlines()
    assert any(s <= parsed.text.index("$2,000,001 to") < e for s, e in tables)
    for chunk in chunks:
        for start, end in tables:
            for edge in (chunk.start, chunk.end):
                if start < edge < end:
                    assert parsed.text[edge - 1] == "\n" or parsed.text[edge] == "\n", chunk.text


def test_a_real_table_with_wrapped_cells_stays_one_table() -> None:
    """The station list of a CUAD contract: some rows leave cells empty, and a second call sign
    sits on a line of its own between two rows."""
    path = next((SHARED / "corpus" / "ingest" / "cuad_pdf").rglob("TubeMediaCorp_20060310_8-K_EX-10.1*"))
    parsed = parse_file(path, "pdf")
    tables = [parsed.text[s:e] for s, e, c in zip(parsed.starts, parsed.ends, parsed.categories, strict=True)
              if c == "Table"]

    station_list = next(t for t in tables if t.startswith("Call | Street Address | Launch"))
    assert "Boston | WLVI | 75 Morrissey Blvd., Boston, MA 02138 | 6/1/06" in station_list.splitlines()
    assert "Seattle-Tacoma | KCPQ\nKTWB\n1813 Westlake Ave. N., Seattle, WA 98109 | 7/15/06\n" in station_list
    assert "Portland, OR | KWBP | 10255 S.W. Arctic Dr., Beaverton, OR 97005 | 6/15/06" in station_list


@pytest.mark.parametrize("name, writer, kind", [
    ("lease.odt", write_odt, "odt"), ("lease.rtf", write_rtf, "rtf"), ("lease.txt", write_rtf, "rtf"),
])
def test_rtf_and_odt_keep_headings_and_tables(tmp_path: Path, name: str, writer: Callable[[Path], None],
                                              kind: str) -> None:
    path = tmp_path / name
    writer(path)

    parsed = parse_file(path, detect_kind(path, read_head(path)))

    assert parsed.parser == f"unstructured:{kind}"
    assert "Deposit | 7,200" in parsed.text.splitlines()
    assert parsed.section_at(parsed.text.index("2,400 euros")) == "4. Rent"


def test_other_opendocument_types_are_passed_over(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "budget.ods", "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", "<office:document-content/>")

    with pytest.raises(Unsupported, match="only text documents"):
        detect_kind(tmp_path / "budget.ods", read_head(tmp_path / "budget.ods"))


def test_email_keeps_its_headers_in_the_text(tmp_path: Path) -> None:
    path = tmp_path / "notice.eml"
    write_eml(path)

    parsed = parse_file(path, detect_kind(path, read_head(path)))

    assert parsed.text.startswith("From: counsel@northwind.example\nTo: legal@harbor.example")
    assert "Subject: Notice of termination" in parsed.text and "ninety days' notice" in parsed.text
    # ... and as fields, kept with the layout the database stores.
    assert parsed.metadata["From"] == "counsel@northwind.example" and parsed.metadata["To"] == "legal@harbor.example"
    assert parsed.metadata["Subject"] == "Notice of termination"
    assert ParsedDocument.from_layout(parsed.text, parsed.parser, parsed.layout()).metadata == parsed.metadata


def test_outlook_msg_keeps_its_headers_and_body(tmp_path: Path) -> None:
    path = tmp_path / "approval.msg"
    write_msg(path)

    parsed = parse_file(path, detect_kind(path, read_head(path)))

    assert parsed.parser == "unstructured:msg"
    assert parsed.text.startswith('From: "Ana Ruiz" <ana@northwind.example>\nTo: legal@harbor.example\nSubject: Board approval')
    assert "lease renewal for ten years" in parsed.text and "3,100 euros" not in parsed.text  # attachment apart


def test_content_decides_the_type_not_the_extension(tmp_path: Path) -> None:
    (tmp_path / "scan.txt").write_bytes(text_pdf("A PDF saved as text."))
    (tmp_path / "memo.docx").write_text("A plain memo saved under a Word name.")
    write_pptx(tmp_path / "deck.docx")

    kinds = {p.name: detect_kind(p, read_head(p)) for p in tmp_path.iterdir()}

    assert kinds == {"scan.txt": "pdf", "memo.docx": "text", "deck.docx": "pptx"}


@pytest.mark.parametrize("name, data, reason", [
    ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "unsupported file type .doc"),
    ("letter.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "legacy Office binary"),
])
def test_unsupported_content_is_passed_over_with_the_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(data)

    found = walk_folder(tmp_path, max_bytes=10_000)

    assert found.files == [] and reason in found.skipped[0].reason


def test_archives_are_not_opened_for_indexing(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "bundle.docx", "w") as archive:
        archive.writestr("contract.txt", "x" * 1000)

    with pytest.raises(Unsupported, match="archives are not indexed"):
        detect_kind(tmp_path / "bundle.docx", read_head(tmp_path / "bundle.docx"))
