"""Office, spreadsheet and e-mail files made on the spot with their own libraries."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path


def write_pptx(path: Path) -> None:
    from pptx import Presentation

    deck = Presentation()
    for title, body in (("Project Kestrel", "Kick-off on 4 May."), ("Budget", "Phase two costs 1.2 million euros.")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(str(path))


def write_xlsx(path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Fees"
    for row in (("Service", "Fee (EUR)", "Cap"), ("Hosting", 1200, "none"), ("Support", 800, "40 hours")):
        sheet.append(row)
    book.save(str(path))


def write_pdf_with_table(path: Path) -> None:
    """A page laid out as contracts are: a heading, a paragraph, a fee table (a right-aligned
    column of figures), a numbered list with its numbers set off by a tab, typewritten text with
    two spaces after each sentence, and side-by-side signature blocks."""
    from reportlab.pdfgen import canvas

    page = canvas.Canvas(str(path), invariant=1)
    page.setFont("Helvetica-Bold", 11)
    page.drawString(72, 740, "4. Fees")
    page.setFont("Helvetica", 11)
    page.drawString(72, 720, "The Customer shall pay the following fees each quarter, in euros, within thirty")
    page.drawString(72, 706, "days of the invoice date.")
    for y, (service, fee, cap) in zip((680, 666, 652), (("Service", "Fee (EUR)", "Cap"), ("Hosting", "1,200", "none"),
                                                          ("Support", "800", "40 hours")), strict=True):
        page.drawString(72, y, service)
        page.drawRightString(300, y, fee)
        page.drawString(360, y, cap)
    for y, (number, item) in zip((620, 606), (("1.", "The Supplier keeps the service available."),
                                              ("2.", "The Customer reports faults in writing.")), strict=True):
        page.drawString(72, y, number)
        page.drawString(100, y, item)
    page.setFont("Courier", 10)
    page.drawString(72, 570, "Either party may end this agreement.  Notice is given in writing.")
    page.drawString(72, 558, "The term is two years.  It renews for one year unless ended.")
    page.setFont("Helvetica", 11)
    for y, (left, right) in zip((520, 506), (("By: Anna Berg", "By: Tomas Lund"), ("Title: Director", "Title: CEO")),
                                strict=True):
        page.drawString(72, y, left)
        page.drawString(320, y, right)
    page.showPage()
    page.save()


def write_csv(path: Path) -> None:
    path.write_text("party,role,jurisdiction\nNorthwind Components Ltd,Supplier,England\nHarbor Robotics Inc.,Buyer,Delaware\n")


def write_eml(path: Path) -> None:
    message = EmailMessage()
    message["From"] = "counsel@northwind.example"
    message["To"] = "legal@harbor.example"
    message["Subject"] = "Notice of termination"
    message["Date"] = "Mon, 3 Nov 2025 09:30:00 +0000"
    message.set_content("We hereby give ninety days' notice of termination of the Supply Agreement.\n")
    path.write_bytes(bytes(message))


LEASE_MD = (
    "# Lease Terms\n\n## 4. Rent\n\nThe tenant pays rent of 2,400 euros on the first day of each month.\n\n"
    "| Item | Amount |\n|---|---|\n| Deposit | 7,200 |\n| Parking | 90 |\n"
)


def write_odt(path: Path) -> None:
    """An OpenDocument text, written by pandoc (the one inside pypandoc-binary)."""
    import pypandoc

    pypandoc.convert_text(LEASE_MD, "odt", format="md", outputfile=str(path))


def write_rtf(path: Path) -> None:
    import pypandoc

    pypandoc.convert_text(LEASE_MD, "rtf", format="md", outputfile=str(path), extra_args=["--standalone"])


def write_eml_with_attachments(path: Path, *, with_schedule: bool = True) -> None:
    """A message with a PDF and a DOCX attachment, a program and an attached message."""
    import io

    import docx

    from tests.badfiles import text_pdf

    message = EmailMessage()
    message["From"] = "counsel@northwind.example"
    message["To"] = "legal@harbor.example"
    message["Subject"] = "Signed amendment"
    message.set_content("Please find the signed amendment and the fee schedule attached.\n")
    message.add_attachment(text_pdf("The amendment extends the warranty period to thirty-six months."),
                           maintype="application", subtype="pdf", filename="amendment.pdf")
    if with_schedule:
        document = docx.Document()
        document.add_paragraph("Schedule B: the hourly rate for on-site support is 140 euros.")
        buffer = io.BytesIO()
        document.save(buffer)
        message.add_attachment(buffer.getvalue(), maintype="application",
                               subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
                               filename="../../schedule B.docx")
    message.add_attachment(b"MZ\x90\x00" * 64, maintype="application", subtype="octet-stream", filename="setup.exe")
    forwarded = EmailMessage()
    forwarded["From"] = "clerk@court.example"
    forwarded["Subject"] = "Hearing date"
    forwarded.set_content("The hearing is set for 14 March at 10:00 in courtroom 4.\n")
    message.add_attachment(forwarded, filename="hearing.eml")
    path.write_bytes(bytes(message))


def write_msg(path: Path) -> None:
    """An Outlook message with a PDF attachment and a text attachment over the mini-stream size."""
    from tests.badfiles import text_pdf
    from tests.msgfile import msg_file

    path.write_bytes(msg_file(
        subject="Board approval", body="The board approved the lease renewal for ten years.\r\n",
        sender=("Ana Ruiz", "ana@northwind.example"), to=["legal@harbor.example"],
        attachments=[("minutes.pdf", text_pdf("Minutes: the renewal rent is 3,100 euros per month.")),
                     ("clauses.txt", b"Clause. The tenant insures the premises.\n" * 200)],
    ))
