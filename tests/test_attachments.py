"""E-mail attachments are child documents of their message and follow it through every sync."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from docqa import services
from docqa.models import Document, DocumentStatus, IngestItem
from ingest.attachments import extract_attachments, safe_name
from tests.formats import write_eml_with_attachments, write_msg

pytestmark = pytest.mark.django_db(transaction=True)


def ingest(folder: Path, *options: str) -> dict:
    out = io.StringIO()
    call_command("ingest", str(folder), "--matter", "mail", "--json", *options, stdout=out)
    return json.loads(out.getvalue())


def states(report: dict) -> dict[str, str]:
    return dict(IngestItem.objects.filter(run_id=report["run"]).values_list("path", "state"))


def points() -> int:
    return services.get_store().count([Document.objects.first().matter_id])


def indexed_chunks() -> int:
    return sum(Document.objects.filter(status=DocumentStatus.INDEXED).values_list("chunk_count", flat=True))


def test_attachments_are_indexed_as_children_and_follow_their_message(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    write_eml_with_attachments(folder / "amendment.eml")

    first = ingest(folder)

    assert states(first) == {
        "amendment.eml": "indexed",
        "amendment.eml/amendment.pdf": "indexed",
        "amendment.eml/schedule B.docx": "indexed",
        "amendment.eml/hearing.eml": "indexed",
        "amendment.eml/setup.exe": "skipped",
    }
    message = Document.objects.get(path="amendment.eml")
    pdf = Document.objects.get(path="amendment.eml/amendment.pdf")
    assert pdf.parent == message and "thirty-six months" in pdf.text.text
    assert "courtroom 4" in Document.objects.get(path="amendment.eml/hearing.eml").text.text
    assert {"path": "amendment.eml/setup.exe", "reason": "unsupported file type .exe"} in first["skipped"]
    assert points() == indexed_chunks()

    again = ingest(folder)
    assert states(again) == {"amendment.eml": "unchanged"}

    write_eml_with_attachments(folder / "amendment.eml", with_schedule=False)
    changed = ingest(folder)
    assert states(changed)["amendment.eml/amendment.pdf"] == "unchanged"
    assert states(changed)["amendment.eml/schedule B.docx"] == "deleted"
    assert Document.objects.get(path="amendment.eml/schedule B.docx").status == DocumentStatus.DELETED
    assert points() == indexed_chunks()

    (folder / "amendment.eml").rename(folder / "signed.eml")
    ingest(folder)
    assert Document.objects.get(path="signed.eml/amendment.pdf").parent.path == "signed.eml"
    hits = services.get_store().search(services.get_embedder().embed_query("warranty period"),
                                       matter_ids=[message.matter_id], limit=1)
    assert hits[0].payload["path"] == "signed.eml/amendment.pdf"

    (folder / "signed.eml").unlink()
    ingest(folder, "--allow-empty")  # the folder's last file went: an empty folder is otherwise refused
    assert points() == 0
    assert not Document.objects.exclude(status=DocumentStatus.DELETED).exists()


def test_outlook_msg_attachments_are_children_too(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    write_msg(folder / "approval.msg")

    report = ingest(folder)

    assert states(report) == {
        "approval.msg": "indexed", "approval.msg/minutes.pdf": "indexed", "approval.msg/clauses.txt": "indexed",
    }
    minutes = Document.objects.get(path="approval.msg/minutes.pdf")
    assert minutes.parent.path == "approval.msg" and "3,100 euros" in minutes.text.text
    assert points() == indexed_chunks()


def test_attachment_names_are_made_safe_and_unique() -> None:
    used: set[str] = set()
    names = [safe_name(n, i, used) for i, n in enumerate(["../../etc/passwd", "a\nb.txt", "", "Report.pdf", "report.pdf"], 1)]
    assert names == ["passwd", "a_b.txt", "attachment-3", "Report.pdf", "5-report.pdf"]
    long = safe_name("合同" * 100 + ".pdf", 6, used)
    assert long.endswith(".pdf") and len(long.encode("utf-8")) <= 200


def test_oversized_attachments_are_noted_not_indexed(tmp_path: Path) -> None:
    path = tmp_path / "big.eml"
    write_eml_with_attachments(path)

    found, notes = extract_attachments(path, "email", max_bytes=1000)

    assert "setup.exe" in [a.name for a in found] and all(len(a.data) <= 1000 for a in found)
    assert any(n.startswith("schedule B.docx:") and "over the file size limit" in n for n in notes)


def test_an_attachment_that_failed_is_retried_when_its_message_changes(data_dir: Path, tmp_path: Path) -> None:
    from email.message import EmailMessage

    folder = tmp_path / "mail"
    folder.mkdir()

    def write(body: str) -> None:
        message = EmailMessage()
        message["From"], message["Subject"] = "counsel@northwind.example", "Scan"
        message.set_content(body)
        message.add_attachment(b"%PDF-1.7 garbage", maintype="application", subtype="pdf", filename="scan.pdf")
        (folder / "scan.eml").write_bytes(bytes(message))

    write("The scan is attached.\n")
    first = ingest(folder)
    assert states(first)["scan.eml/scan.pdf"] == "failed"
    write("The scan is attached again.\n")

    again = ingest(folder)

    item = IngestItem.objects.get(run_id=again["run"], path="scan.eml/scan.pdf")
    assert item.change == "retried" and item.state == "failed"
