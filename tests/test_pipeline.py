"""Discover, parse and chunk on real files, without a database."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ingest.chunk import chunk_document
from ingest.discover import plan_sync, walk_folder
from ingest.embed import Embedder
from ingest.parse import parse_file
from tests.conftest import DEV, SUBSET_PDF, SUBSET_TXT, dev_questions, write_generated_docs


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_parse_pdf_keeps_page_numbers() -> None:
    parsed = parse_file(DEV / "originals_pdf" / SUBSET_PDF, "pdf")

    assert parsed.page_count and parsed.page_count > 1
    assert parsed.page_at(0) == 1
    assert parsed.page_at(len(parsed.text) - 1) == parsed.page_count


def test_parse_pdf_keeps_numbered_headings_as_titles() -> None:
    parsed = parse_file(DEV / "originals_pdf" / SUBSET_PDF, "pdf")

    titles = [(parsed.pages[i], parsed.text[parsed.starts[i] : parsed.ends[i]])
              for i, category in enumerate(parsed.categories) if category == "Title"]

    assert (1, "1. DEFINITIONS") in titles and (2, "5. TERM AND TERMINATION") in titles
    assert parsed.parser == "pdfium"


@pytest.mark.parametrize("line, heading", [
    ("7.2 Notice", True), ("ARTICLE IV", True), ("Section 3. Promotional Activities", True),
    ("Definitions and Interpretation", True), ("This Agreement is made between the parties.", False),
    ("NEITHER PARTY MAKES, AND EACH PARTY HEREBY WAIVES AND DISCLAIMS, ANY", False), ("", False),
])
def test_pdf_heading_shapes(line: str, heading: bool) -> None:
    from ingest.pdf import is_heading

    assert is_heading(line) is heading


@pytest.mark.parametrize("name, kind, phrase", [
    ("maintenance.docx", "docx", "priority one incidents"),
    ("policy.html", "html", "twelve years"),
    ("notes.md", "markdown", "210 bar"),
])
def test_parse_office_and_web_formats(tmp_path: Path, name: str, kind: str, phrase: str) -> None:
    write_generated_docs(tmp_path)

    parsed = parse_file(tmp_path / name, kind)

    assert phrase in parsed.text
    assert all(parsed.text[s:e] for s, e in zip(parsed.starts, parsed.ends, strict=True))


def test_chunks_fit_the_embedding_model_and_point_at_their_text(embedder: Embedder) -> None:
    parsed = parse_file(DEV / "docs" / SUBSET_TXT[0], "text")

    chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=embedder.token_limit)

    assert len(chunks) > 5
    assert all(c.embed_tokens <= embedder.token_limit for c in chunks)
    assert all(parsed.text[c.start : c.end] == c.text for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_counting_is_the_models_own_tokenizer_never_truncated(embedder: Embedder) -> None:
    from ingest.chunk import clearly_over

    text = (DEV / "docs" / SUBSET_TXT[0]).read_text(encoding="utf-8")[:20000]
    wrapper = embedder.model.tokenizer

    for piece in (text, text[:700], "Über-naïve “quotes” 12.5% \u200b\x00 tail", "", "   "):
        assert embedder.count_tokens(piece) == len(wrapper.encode(piece, add_special_tokens=False, verbose=False))
    assert embedder.count_tokens(text) > 2000  # far above the model's 256: counted, not cut
    # More words than the chunk size is "too long" without tokenizing; fewer words are counted.
    assert clearly_over(text, 200) == 201 and embedder.count_tokens(text) > 200
    assert clearly_over(" ".join(["w"] * 200), 200) == 0 and clearly_over(" ".join(["w"] * 202), 200) == 201


def test_chunking_splits_a_sentence_longer_than_the_model_limit(embedder: Embedder) -> None:
    from ingest.parse import ParsedDocument

    text = " ".join(f"word{i}" for i in range(3000))  # no sentence boundary anywhere
    parsed = ParsedDocument(text=text, parser="test", starts=[0], ends=[len(text)], pages=[None])

    chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=400, overlap=0, hard_limit=embedder.token_limit)

    assert all(embedder.count_tokens(c.text) <= embedder.token_limit for c in chunks)
    assert "".join(c.text.strip() + " " for c in chunks).split() == text.split()


def test_walk_skips_links_out_of_the_folder_and_unsupported_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config.txt").write_text("hidden")
    (root / "a.txt").write_text("alpha")
    (root / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", root / "escape.txt")
    (root / ".DS_Store").write_bytes(b"\0")
    os.symlink(root, root / "loop")  # a folder link back to the root
    os.symlink("/etc", root / "etc")  # ... and one out of the folder

    found = walk_folder(root, max_bytes=1000)

    assert [f.path for f in found.files] == ["a.txt"]
    assert {(s.path, s.reason) for s in found.skipped} == {
        ("escape.txt", "link points outside the folder"),
        ("image.png", "unsupported file type .png"),
        (".git/", "hidden folder; not read"),
        (".DS_Store", "hidden file; not read"),
        ("loop/", "link to a folder; not followed"),
        ("etc/", "link to a folder; not followed"),
    }


def test_walk_skips_files_over_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 2000)

    found = walk_folder(tmp_path, max_bytes=1000)

    assert found.files == [] and "over the limit of 1,000 bytes (DOCQA_MAX_FILE_MB)" in found.skipped[0].reason


def test_walk_passes_over_names_that_are_not_utf8_and_docqas_own_data_folder(tmp_path: Path) -> None:
    import os

    (tmp_path / "good.txt").write_text("Rent is due monthly.")
    with open(os.path.join(os.fsencode(tmp_path), b"latin1-\xe9t\xe9.txt"), "wb") as handle:  # from an old share
        handle.write(b"Rent is due weekly.")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "login.txt").write_text("admin s3cret")

    found = walk_folder(tmp_path, max_bytes=1000, exclude=tmp_path / "var")

    assert [f.path for f in found.files] == ["good.txt"]
    assert {(s.path, s.reason) for s in found.skipped} == {
        ("latin1-\ufffdt\ufffd.txt", "file name is not valid UTF-8; not read (rename it)"),
        ("var/", "docqa's own data folder; never read"),
    }


def test_a_utf16_text_file_with_its_bom_is_text_not_binary(tmp_path: Path) -> None:
    from ingest.parse import check_text_file, read_text

    for encoding in ("utf-16", "utf-16-be"):
        path = tmp_path / f"{encoding}.txt"
        path.write_bytes(("\ufeff" if encoding.endswith("be") else "") .encode(encoding) + "Rent is due.".encode(encoding))
        check_text_file(path)  # no "NUL bytes" refusal
        assert read_text(path).lstrip("\ufeff") == "Rent is due."


def test_plan_sync_sorts_files_into_new_changed_unchanged_deleted(tmp_path: Path) -> None:
    for name in ("same.txt", "edited.txt", "added.txt"):
        (tmp_path / name).write_text(name)
    files = walk_folder(tmp_path, max_bytes=1000).files
    digest = {f.path: f.sha256 for f in files}

    plan = plan_sync(files, {"same.txt": digest["same.txt"], "edited.txt": "old", "gone.txt": "x"})

    assert [f.path for f in plan.new] == ["added.txt"]
    assert [f.path for f in plan.changed] == ["edited.txt"]
    assert [f.path for f in plan.unchanged] == ["same.txt"]
    assert plan.deleted == ["gone.txt"]


def test_plan_sync_pairs_a_vanished_file_with_new_identical_content_as_moved(tmp_path: Path) -> None:
    (tmp_path / "renamed.txt").write_text("the same contract")
    (tmp_path / "fresh.txt").write_text("a new contract")
    files = walk_folder(tmp_path, max_bytes=1000).files
    digest = {f.path: f.sha256 for f in files}

    plan = plan_sync(files, {"old-name.txt": digest["renamed.txt"], "gone.txt": "other"})

    assert [(old, f.path) for old, f in plan.moved] == [("old-name.txt", "renamed.txt")]
    assert [f.path for f in plan.new] == ["fresh.txt"] and plan.deleted == ["gone.txt"]


def test_headings_nest_into_a_section_path() -> None:
    from ingest.parse import HeadingPath

    path = HeadingPath()
    trail = []
    for heading in ("EXHIBIT A", "7 Termination", "7.1 For cause", "7.2 Notice", "8. Governing Law", "Schedule 1"):
        path.enter(heading)
        trail.append(path.path())

    assert trail[0] == "EXHIBIT A" and trail[3] == "7 Termination > 7.2 Notice"
    assert trail[4] == "8. Governing Law" and trail[5] == "Schedule 1"


def test_headings_run_into_their_paragraphs_enter_the_section_path(tmp_path: Path) -> None:
    """Contracts converted to text run numbered headings into the paragraph ("13. Force Majeure.
    Any delay ...") or set them apart by wide gaps; references and numbered sentences are not
    headings. The marks survive the layout's trip through JSON."""
    from ingest.parse import ParsedDocument, assemble
    from ingest.pdf import Block

    path = tmp_path / "supply.txt"
    path.write_text("SUPPLY AGREEMENT\n\n10. Term and Termination. 10.1. Term. This Agreement runs five years. "
                    "13. Force Majeure. Any delay caused by floods is excused. 14. General Provisions. "
                    "14.1. Assignment. Neither party may assign this Agreement, as Section 8.3 of the Agreement says."
                    "\n\n2.3 Party A irrevocably undertakes not to compete.\n\n"
                    "Licenses end.     3. Licenses     3.4 No Sublicense Rights     No license includes the right to sublicense.\n\n"
                    "References 5. Crosby A. Epidemic and Peace. 2. Mr. Smith signs.\n\n"
                    "5. Fees & Expenses. Each party pays its own costs. 5.5 JTAG / Mask Works. No mask work is "
                    "licensed.\n")
    parsed = parse_file(path, "text")
    at = lambda words: parsed.section_at(parsed.text.index(words))  # noqa: E731

    assert at("This Agreement runs") == "10. Term and Termination > 10.1. Term"
    assert at("Any delay") == "13. Force Majeure"
    assert at("Neither party") == at("Section 8.3") == "14. General Provisions > 14.1. Assignment"
    assert at("Party A irrevocably") == "14. General Provisions > 14.1. Assignment"  # a numbered sentence
    assert at("Licenses end") == at("Party A irrevocably")
    assert at("No license includes") == "3. Licenses > 3.4 No Sublicense Rights"
    assert at("Smith signs") == "3. Licenses > 3.4 No Sublicense Rights"  # "5. Crosby A." and "2. Mr." are no headings
    # Titles whose words a free-standing "&", "/" or dash joins.
    assert at("Each party pays") == "5. Fees & Expenses"
    assert at("No mask work") == "5. Fees & Expenses > 5.5 JTAG / Mask Works"
    again = ParsedDocument.from_layout(parsed.text, parsed.parser, json.loads(json.dumps(parsed.layout())))
    assert again.section_at(parsed.text.index("Any delay")) == "13. Force Majeure"
    # Extracted PDF text (blocks) is read the same way.
    pdf = assemble([Block("7. Term. 7.2. Notice. Either party may end this on notice.", 1, "NarrativeText")], "pdf")
    assert pdf.section_at(pdf.text.index("Either party")) == "7. Term > 7.2. Notice"


def test_running_headers_footers_and_page_numbers_are_no_headings(tmp_path: Path) -> None:
    """A line on every page ("Source: ACME CORP, 8-K, 1/20/2009") or a page number would become
    the section of everything after it; a heading that recurs only twice is still a heading."""
    from ingest.parse import assemble
    from ingest.pdf import Block

    pages = []
    for number, (heading, body) in enumerate([("1. Scope", "The supplier delivers pumps."),
                                              ("2. Price", "Each pump costs 900 euros."),
                                              ("Schedule 1", "Models: P-100 and P-200."),
                                              ("Schedule 1", "Models: P-300, added later.")], start=1):
        pages.append(f"{heading}\n{body}\n\nSource: ACME CORP, 8-K, 1/20/2009\n\nPage {number} of 4\n")
    path = tmp_path / "supply.txt"
    path.write_text("\f".join(pages))
    parsed = parse_file(path, "text")
    at = lambda words: parsed.section_at(parsed.text.index(words))  # noqa: E731

    assert at("Each pump") == "2. Price"
    assert at("Page 1 of 4") == at("Source: ACME CORP, 8-K, 1/20/2009") == "1. Scope"  # the first of each
    assert at("P-300") == "Schedule 1"
    assert not {section for section in parsed.sections if "ACME" in section or "Page" in section}
    # Extracted PDF text (blocks) is read the same way.
    blocks = [Block(text, page, category) for page in (1, 2, 3)
              for text, category in ((f"{page}. Clause {page}", "Title"), ("The parties agree.", "NarrativeText"),
                                     ("CONFIDENTIAL", "Title"))]
    pdf = assemble(blocks, "pdf")
    assert {pdf.section_at(start) for start in pdf.starts} == {"1. Clause 1", "2. Clause 2", "3. Clause 3"}
    # A real contract converted to text: its footer ("Source: QUANTUM GROUP INC /FL, 8-K, 1/20/2009")
    # and page numbers ("Page 31 of 36") were the section of most of its chunks.
    real = parse_file(DEV / "docs" / "cuad" / "QuantumGroupIncFl_20090120_8-K_EX-99.2_3672910_EX-99.2_Hosting Agreement.txt",
                      "text")
    assert not [section for section in real.sections if "Source:" in section or "Page " in section]
    assert real.section_at(real.text.index("IBM grants Customer an irrevocable")) == "Waiver"  # the heading above it


@pytest.mark.parametrize(("line", "heading"), [
    ("SHA: ee8dca216514deeed4c9415bc2ad8a78dc3d9670", False), ("DOI: 10.3390/v12020194", False),
    ("Date: 2017-03-31", False), ("Page 3 of 36", False), ("page 12", False), ("Page -2-", False),
    ("Supply Agreement Page 4 of 75", False),
    ("Appendix: Model Specifics", True), ("Section 5: Fees", True), ("Exhibit 10.8", True), ("7.2 Notice", True),
    ("Section 5: Non-Compete", True), ("Annex 3: COVID-19", True), ("Schedule 1: Term/Termination", True),
    ("Chapter 4: R&D", True), ("Page 7 Definitions", True),
])
def test_record_fields_and_page_numbers_are_no_headings(line: str, heading: bool) -> None:
    from ingest.pdf import is_heading

    assert is_heading(line) is heading


def test_page_furniture_stands_apart_and_the_heading_after_it_still_counts() -> None:
    """A page number or field right above a heading (no blank line) ends the paragraph before it
    and is an element of its own, so the heading after it is still read as one; a running line
    that opens with a number ("12 Months") is not taken for a clause run into a paragraph."""
    from ingest.parse import assemble, plain_document
    from ingest.pdf import Block, Line, page_blocks

    text = "1. Scope\nThe supplier delivers pumps\nPage 3 of 36\nPayment Terms\nEach pump costs 900 euros.\n"
    parsed = plain_document(text)
    assert parsed.section_at(text.index("Each pump")) == "Payment Terms"
    assert parsed.section_at(text.index("The supplier")) == "1. Scope"
    assert [text[a:b] for a, b, c in zip(parsed.starts, parsed.ends, parsed.categories, strict=True) if c == "Header"] \
        == ["Page 3 of 36"]
    blocks = page_blocks([Line((line,)) for line in ("The supplier delivers pumps", "Fax: 514-844-5836",
                                                     "10. Term and Termination", "This Agreement runs five years.")], 1)
    assert [(b.text, b.category) for b in blocks] == [
        ("The supplier delivers pumps", "NarrativeText"), ("Fax: 514-844-5836", "Header"),
        ("10. Term and Termination", "Title"), ("This Agreement runs five years.", "NarrativeText")]
    pdf = assemble([Block(text, 1, category) for text, category in (
        ("5. Fees", "Title"), ("12 Months", "Title"), ("The fee is due monthly.", "NarrativeText"),
        ("12 Months", "Title"), ("12 Months", "Title"))], "pdf")
    assert {pdf.section_at(start) for start in pdf.starts} == {"5. Fees"}


def test_chunks_carry_the_section_they_start_in(embedder: Embedder) -> None:
    parsed = parse_file(DEV / "originals_pdf" / SUBSET_PDF, "pdf")

    chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=embedder.token_limit)

    assert any(c.section == "5. TERM AND TERMINATION" and "terminat" in c.text.lower() for c in chunks)


def test_chunks_never_split_a_table_row(embedder: Embedder, tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    rows = [f"INV-{i:04d},Northwind Components Ltd,Servo actuator batch {i},{i * 37} EUR,net 30 days" for i in range(400)]
    path.write_text("invoice,supplier,description,amount,terms\n" + "\n".join(rows) + "\n")
    parsed = parse_file(path, "csv")
    table_rows = set(parsed.text.splitlines())

    chunks = chunk_document(parsed, embedder.count_tokens, max_tokens=200, overlap=32, hard_limit=embedder.token_limit)

    assert len(chunks) > 5
    for chunk in chunks:
        assert {line for line in chunk.text.splitlines() if line} <= table_rows, chunk.text[:80]
        assert embedder.count_tokens(chunk.text) <= embedder.token_limit


def test_plain_text_keeps_the_files_character_offsets() -> None:
    """Every gold answer span of the dev corpus reads the same in the extracted text."""
    parsed: dict[str, str] = {}
    for question in dev_questions():
        for answer in question["answers"]:
            if answer["file"] not in parsed:
                parsed[answer["file"]] = parse_file(DEV / "docs" / answer["file"], "text").text
            assert parsed[answer["file"]][answer["start"] : answer["end"]] == answer["text"]


def test_plain_text_pages_split_at_form_feeds(tmp_path: Path) -> None:
    path = tmp_path / "paged.txt"
    path.write_text("1. Scope\nThe supplier delivers pumps.\n\f2. Price\r\nEach pump costs 900 euros.\n")

    parsed = parse_file(path, "text")

    price = parsed.text.index("Each pump")
    assert parsed.page_at(price) == 2 and parsed.page_count == 2
    assert parsed.section_at(price) == "2. Price" and parsed.section_at(parsed.text.index("The supplier")) == "1. Scope"
