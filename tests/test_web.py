"""The web path: sign in, pick a matter, ask, read the numbered sources. Every view is guarded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from docqa.models import Matter, Membership, Role

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def indexed(data_dir: Path, tmp_path: Path) -> Matter:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 broken")
    (folder / "lease.txt").write_text(
        "LEASE AGREEMENT\n\nThe tenant may terminate this lease on sixty (60) days' written notice.\n\n"
        "The monthly rent is two thousand dollars, payable on the first day of each month.\n"
    )
    call_command("ingest", str(folder), "--matter", "lease", stdout=io.StringIO())
    return Matter.objects.get(slug="lease")


def member(matter: Matter, name: str = "ann", role: str = Role.VIEWER) -> Client:
    user = User.objects.create_user(name, password="pw-123456")
    Membership.objects.create(matter=matter, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_users_are_sent_to_sign_in(indexed: Matter) -> None:
    for url in ("/", "/m/lease/", "/m/lease/documents/"):
        response = Client().get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_sign_in_page_logs_a_member_in(indexed: Matter) -> None:
    User.objects.create_user("bob", password="pw-123456")
    client = Client()

    response = client.post("/login/", {"username": "bob", "password": "pw-123456"})

    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_ask_page_shows_the_answer_with_numbered_sources(indexed: Matter, standin: Any) -> None:
    client = member(indexed)

    response = client.post("/m/lease/", {"question": "How much notice does the tenant need to terminate?", "effort": "low"})

    html = response.content.decode()
    assert response.status_code == 200
    assert 'href="#src-S1"' in html and "verified" in html
    assert "lease.txt" in html and "sixty (60) days" in html
    # Each source opens in its document, the passage highlighted there.
    import re

    link = re.search(r'href="(/m/lease/documents/\d+/\?start=\d+&amp;end=\d+)#hit"', html)
    assert link is not None
    page = client.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert '<mark id="hit">' in page and "sixty (60) days" in page.split('<mark id="hit">')[1].split("</mark>")[0]


def test_ask_page_says_when_no_language_model_is_connected(indexed: Matter) -> None:
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "medium"}).content.decode()

    assert "No language model is connected" in html and "two thousand dollars" in html


def test_ask_page_shows_a_clear_error_when_the_model_is_down(indexed: Matter, standin: Any) -> None:
    standin.mode = "error"
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}).content.decode()

    assert 'role="alert"' in html and "HTTP 500" in html


def test_non_members_get_404_for_a_matter(indexed: Matter) -> None:
    Matter.objects.create(slug="other", name="other")
    outsider = member(Matter.objects.get(slug="other"), "eve")

    assert outsider.get("/m/lease/").status_code == 404
    assert outsider.post("/m/lease/", {"question": "rent?", "effort": "low"}).status_code == 404
    assert outsider.get("/m/lease/documents/").status_code == 404


def test_documents_page_lists_status(indexed: Matter) -> None:
    html = member(indexed).get("/m/lease/documents/").content.decode()

    assert "lease.txt" in html and "indexed" in html and "broken.pdf" in html


def test_run_page_shows_progress_figures_and_failures(indexed: Matter) -> None:
    run = indexed.runs.get()
    client = member(indexed)

    html = client.get(f"/m/lease/runs/{run.id}/").content.decode()

    assert "2/2" in html and "broken.pdf" in html and "corrupt" in html
    assert 'http-equiv="refresh"' not in html  # finished: no more refreshing
    assert f'href="/m/lease/runs/{run.id}/"' in client.get("/m/lease/runs/").content.decode()


def test_run_failures_download_as_csv(indexed: Matter) -> None:
    run = indexed.runs.get()

    response = member(indexed).get(f"/m/lease/runs/{run.id}/failures.csv")

    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines()[1].startswith("broken.pdf,failed,parse,")


def test_only_editors_may_cancel_or_retry_a_run(indexed: Matter) -> None:
    run = indexed.runs.get()
    run.items.filter(path="lease.txt").update(state="queued")
    indexed.runs.update(status="running")
    viewer = member(indexed, "vic", Role.VIEWER)
    editor = member(indexed, "eddie", Role.EDITOR)

    assert viewer.post(f"/m/lease/runs/{run.id}/cancel").status_code == 404
    assert editor.post(f"/m/lease/runs/{run.id}/cancel").status_code == 302
    assert indexed.runs.get().status == "cancelled"


def test_no_content_crosses_matters_through_answers_search_results_or_history(indexed: Matter, tmp_path: Path) -> None:
    """Two indexed matters side by side: each member's answers, sources and history hold only their own."""
    folder = tmp_path / "other-docs"
    folder.mkdir()
    (folder / "settlement.txt").write_text(
        "CONFIDENTIAL SETTLEMENT\n\nThe settlement figure is nine million dollars, payable in three instalments.\n"
        "The monthly rent under the lease is not affected by this settlement.\n")
    call_command("ingest", str(folder), "--matter", "other", stdout=io.StringIO())
    ann, eve = member(indexed, "ann"), member(Matter.objects.get(slug="other"), "eve")

    # Each asks for the other matter's facts, in words that match them best (search-only mode).
    theirs = eve.post("/m/other/", {"question": "What is the monthly rent of the lease, and the notice to terminate?",
                                    "effort": "low"}).content.decode()
    mine = ann.post("/m/lease/", {"question": "What is the settlement figure in the confidential settlement?",
                                  "effort": "low"}).content.decode()

    assert "settlement.txt" in theirs and "lease.txt" not in theirs and "two thousand dollars" not in theirs
    assert "lease.txt" in mine and "settlement.txt" not in mine and "nine million" not in mine
    # History: the ask page lists only the user's own questions in that matter.
    assert "settlement figure" not in eve.get("/m/other/").content.decode()
    assert "monthly rent of the lease" not in ann.get("/m/lease/").content.decode()
    assert "settlement figure" not in member(indexed, "bob").get("/m/lease/").content.decode()
