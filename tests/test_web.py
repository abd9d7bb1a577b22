"""The web path: sign in, pick a matter, ask, read the numbered sources. Every view is guarded."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from docqa.models import AuditEvent, IngestRun, Matter, Membership, Role

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


def test_every_page_sends_strangers_to_sign_in(indexed: Matter) -> None:
    """Each route of the site, asked for by GET and by POST without signing in, gives away nothing:
    a page sends the visitor to sign in, the API and the OpenAI-compatible endpoint answer 401
    (they take a token). A route added later is covered without naming it here."""
    from django.urls import URLPattern, get_resolver

    public = {"healthz", "login", "logout"}  # the liveness probe and signing in/out
    values = {"slug": "lease", "fmt": "csv", "action": "cancel"}  # any other part is an id
    checked = 0
    for route in get_resolver().url_patterns:
        if not isinstance(route, URLPattern) or route.name in public:
            continue  # admin/ and api/v1/ include their own routes, checked below
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "1"), str(route.pattern))
        for method in (Client().get, Client().post):
            response = method(path)
            checked += 1
            if path.startswith("/v1/") or route.name == "metrics":
                assert response.status_code in (401, 403, 404, 405), (path, response.status_code)  # metrics: 404 without its token
            else:
                assert response.status_code in (302, 405) and (response.status_code == 405 or
                                                               response.url.startswith("/login/")), (path, method)
    assert checked >= 40  # 24 routes today, each by GET and POST
    for path in ("/api/v1/matters", "/api/v1/matters/lease/questions/1/stop", "/api/v1/audit/events"):
        assert Client().post(path).status_code in (401, 405) and Client().get(path).status_code in (401, 405)
    assert Client().get("/admin/").status_code == 302


def test_sign_in_page_logs_a_member_in(indexed: Matter) -> None:
    User.objects.create_user("bob", password="pw-123456")
    client = Client()

    response = client.post("/login/", {"username": "bob", "password": "pw-123456"})

    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_a_refused_question_says_which_field_and_why_without_javascript(indexed: Matter) -> None:
    """A budget of 100 re-showed the form with nothing said (the script checks it first; without
    it the page was silent)."""
    from docqa.models import Question

    page = member(indexed).post("/m/lease/", {"question": "Who pays the rent?", "effort": "low", "budget": "100"}
                                ).content.decode()

    assert 'role="alert">Budget: Ensure this value is greater than or equal to 512.' in page
    assert "Who pays the rent?</textarea>" in page and not Question.objects.exists()  # kept, not asked


def test_ask_page_shows_the_answer_with_numbered_sources(indexed: Matter, standin: Any) -> None:
    client = member(indexed)

    response = client.post("/m/lease/", {"question": "How much notice does the tenant need to terminate?", "effort": "low"}, follow=True)

    html = response.content.decode()
    assert response.status_code == 200
    import re

    # Without JavaScript the form posts, then goes on to the conversation at the answer: reloading
    # that page shows the answer again, it does not ask again.
    from docqa.models import Question

    question = Question.objects.get()
    assert response.redirect_chain == [(f"/m/lease/c/{question.conversation_id}/#q{question.id}", 302)]
    assert "sixty (60) days" in client.get(f"/m/lease/c/{question.conversation_id}/").content.decode()
    assert Question.objects.count() == 1
    assert '<option value="low" selected>low</option>' in html  # a follow-up keeps the effort chosen

    assert re.search(r'<a class="cite" href="#q\d+-S1">\[S1\]</a>', html) and "verified" in html
    assert "lease.txt" in html and "sixty (60) days" in html
    # Each source opens in its document, the quoted words highlighted there.
    link = re.search(r'href="(/m/lease/documents/\d+/\?start=\d+&amp;end=\d+[^"#]*)#hit"', html)
    assert link is not None
    page = client.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert '<mark id="hit">' in page and "sixty (60) days" in page.split('<mark id="hit">')[1].split("</mark>")[0]


def test_search_only_lists_passages_best_first_and_links_what_was_left_out(data_dir: Path, tmp_path: Path) -> None:
    import re

    folder = tmp_path / "docs"
    folder.mkdir()
    clauses = [f"{n}. Clause {n}\n\nThe supplier shall deliver batch {n} of the pumps to warehouse {n} and keep "
               f"record {n} of it for audit by the buyer, with the invoice numbered {n}." for n in range(1, 61)]
    (folder / "supply.txt").write_text("SUPPLY AGREEMENT\n\n" + "\n\n".join(clauses) + "\n")
    call_command("ingest", str(folder), "--matter", "supply", stdout=io.StringIO())
    client = member(Matter.objects.get(slug="supply"))

    html = client.post("/m/supply/", {"question": "Who audits the records of the deliveries?", "effort": "low",
                                      "budget": "1024"}, follow=True).content.decode()

    # (Failed once in a full clean-clone run and never alone: the page's words say why, if it recurs.)
    said = re.sub(r"\s+", " ", re.sub("<[^>]+>", " ", html.split("<main", 1)[-1]))[:2000]
    assert "No language model is connected" in html and "passages, best first (no model was asked)" in html, said
    # No model was asked, so nothing was left out "for lack of room": found beyond the budget.
    assert "Also found, beyond the 1,024-token budget" in html and "Left out for lack of room" not in html
    left_out = html.split("Also found, beyond the 1,024-token budget")[1]
    link = re.search(r'<a href="(/m/supply/documents/\d+/\?start=(\d+)&amp;end=(\d+))#hit">supply.txt</a>', left_out)
    assert link is not None and "characters " in left_out and " tokens" in left_out
    page = client.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert '<mark id="hit">' in page
    # The copy buttons carry the passages, the result's content ("the passages listed with it"
    # listed none): each with its label, file, section and first 500 characters.
    from docqa.conversations import turns
    from docqa.models import Conversation

    turn = turns(Conversation.objects.get())[0]
    assert turn["plain"].count("\n[S") == len(turn["sources"]) >= 2 and "\nPassages:\n[S1] supply.txt" in turn["plain"]
    assert "\n**Passages**\n\n- [S1] supply.txt" in turn["markdown"] and "record " in turn["markdown"]


def test_a_citation_knows_the_section_its_quote_stands_in(data_dir: Path, tmp_path: Path, standin: Any) -> None:
    """A contract sent whole is one source labelled by its first section; a quote from a later
    section is stored and shown with that section, not the passage's first."""
    from docqa.models import Citation

    folder = tmp_path / "docs"
    folder.mkdir()
    filler = " ".join(f"The parties record routine matter {n} for the file." for n in range(60))
    sections = [("1. Definitions", filler), ("2. Delivery", filler),
                ("3. Indemnity", filler + " The supplier shall indemnify the buyer against every third party "
                 "claim arising from defective pumps. " + filler)]
    (folder / "supply.txt").write_text("SUPPLY AGREEMENT\n\n" + "\n\n".join(f"{h}\n\n{t}" for h, t in sections) + "\n")
    call_command("ingest", str(folder), "--matter", "supply", stdout=io.StringIO())
    client = member(Matter.objects.get(slug="supply"))

    html = client.post("/m/supply/", {"question": "Who indemnifies the buyer against third party claims?",
                                      "effort": "low"}, follow=True).content.decode()

    cited = Citation.objects.get(status="quote verified")
    assert cited.section == "3. Indemnity" and "defective pumps" in cited.quote
    assert "in § 3. Indemnity" in html


def test_a_quote_past_a_heading_inside_its_chunk_is_labelled_by_that_heading(
        data_dir: Path, tmp_path: Path, standin: Any) -> None:
    """A chunk knows the heading it opens under; a quote standing after the next heading in the
    same chunk ("... 5. Termination. Either party ...") is labelled by that heading, read from
    the document's layout, and the label is set apart from the verification text."""
    from docqa.models import Citation

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "terms.txt").write_text(
        "TERMS OF SUPPLY\n\n4. Limitation of Liability. Neither party is liable for indirect loss of profit. "
        "5. Termination. Either party may terminate this agreement upon ninety days written notice to the other.\n")
    call_command("ingest", str(folder), "--matter", "terms", stdout=io.StringIO())
    client = member(Matter.objects.get(slug="terms"))

    html = client.post("/m/terms/", {"question": "How much notice is needed to terminate this agreement?",
                                     "effort": "low"}, follow=True).content.decode()

    cited = Citation.objects.get(status="quote verified")
    assert "ninety days" in cited.quote and cited.section == "5. Termination", cited.section
    assert "in § 5. Termination</span> <span class=\"muted\">· quote found word for word" in html


def test_what_the_user_is_told_beside_the_answer_is_shown_and_kept(indexed: Matter, standin: Any) -> None:
    """A retry at low effort is said on the page and in the API, not only in the terminal; a model
    whose window cannot hold the reserved output fails with a reason a user can act on (and the
    operator's, with the setting to change, kept for the administrator)."""
    from docqa.models import Answer

    client = member(indexed)
    standin.mode = "length_unless_low"  # reasoning eats the whole output unless the effort is low

    html = client.post("/m/lease/", {"question": "How much notice does the tenant need to terminate?",
                                     "effort": "medium"}, follow=True).content.decode()

    note = "At medium effort the model spent its whole output budget reasoning, so it was asked again at low effort."
    assert note in html and "sixty (60) days" in html
    assert Answer.objects.get().notes == [note]
    standin.mode, standin.max_model_len = "normal", 6000  # medium effort reserves 8,192 for the output
    html = client.post("/m/lease/", {"question": "Who pays the rent?", "effort": "medium"}, follow=True).content.decode()
    assert told("setup") in html and "Try a lower effort" in html
    assert "DOCQA_LLM_RESERVED_OUTPUT" not in html
    failed = Answer.objects.get(error__contains="window")
    assert failed.error_kind == "setup" and "DOCQA_LLM_RESERVED_OUTPUT" in failed.error
    assert f"under question {failed.question_id}" in html
    # The passages found are shown packed at search-only's budget, which the record names.
    assert failed.question.budget == 16384 and failed.usage["budget"] == 16384


def test_a_marker_naming_no_source_is_shown_unverified_and_copied(indexed: Matter, standin: Any) -> None:
    standin.append = ' The landlord also pays "all of the taxes" [S9].'
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "How much notice does the tenant need to terminate?",
                                     "effort": "low"}, follow=True).content.decode()

    unknown = html.split('class="source unknown"')[1].split("</div>")[0]
    assert "[S9]" in unknown and "unverified" in unknown and "S9 is not one of the sources sent" in unknown
    assert "[S9] names no source that was sent (unverified)" in html  # in the Markdown and text copies too


def test_ask_page_says_when_no_language_model_is_connected(indexed: Matter) -> None:
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "medium"}, follow=True).content.decode()

    assert "No language model is connected" in html and "two thousand dollars" in html


def told(kind: str) -> str:
    """What the asker is told of a fault of `kind`, as the page writes it."""
    from django.utils.html import escape

    from docqa.faults import PLAIN

    return escape(PLAIN[kind])


def test_ask_page_shows_a_clear_error_when_the_model_is_down(indexed: Matter, standin: Any) -> None:
    """A lawyer is told in plain words what happened and what to try, and which question to name
    to an administrator; the operator's message (server address, HTTP status) is for staff."""
    from docqa.models import Answer

    standin.mode = "error"
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    failed = Answer.objects.get()
    # The server was there and failed on the request (vLLM's engine): the model failed, it was not away.
    assert 'role="alert"' in html and told("failed") in html and f"under question {failed.question_id}" in html
    assert "HTTP 500" not in html and "For the administrator" not in html and standin.url not in html
    assert "HTTP 500" in failed.error and failed.error_kind == "failed"
    # Staff (who can fix it) see the operator's message beside the plain one.
    staff = User.objects.create_user("sam", password="pw-123456", is_staff=True)
    Membership.objects.create(matter=indexed, user=staff, role=Role.VIEWER)
    client.force_login(staff)
    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()
    assert told("failed") in html and "For the administrator" in html and "HTTP 500" in html


@pytest.mark.parametrize("mode, message", [("malformed", "malformed stream data"), ("cut", "ended without"),
                                           ("mid_stream_error", "failed mid-answer")])
def test_a_broken_stream_is_a_message_and_an_audit_record(indexed: Matter, standin: Any, mode: str,
                                                          message: str) -> None:
    standin.mode = mode
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    assert 'role="alert"' in html and told("failed") in html and message not in html and "Traceback" not in html
    event = AuditEvent.objects.filter(action="question.answer").latest("id")
    assert message in event.detail["error"] and event.detail["answer"] == ""
    assert event.detail["error_kind"] == "failed"
    # The model had its passages when the stream broke: they are kept as it was sent them.
    assert "<h4>Passages the model was sent</h4>" in html and "The model gave no answer that could be kept" in html
    assert event.detail["sources_sent"] is True and event.detail["model"]


def test_a_model_server_that_is_down_is_a_message_and_an_audit_record(indexed: Matter, standin: Any) -> None:
    standin.stop()  # vLLM down, or still loading: its port refuses connections
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    assert 'role="alert"' in html and told("unavailable") in html and "Traceback" not in html
    assert "unreachable" not in html and "Errno" not in html
    asked = AuditEvent.objects.filter(action="question.ask").latest("id")
    answered = AuditEvent.objects.filter(action="question.answer").latest("id")
    assert asked.detail["text"] == "What is the rent?" and answered.detail["question"] == asked.detail["question"]
    assert "unreachable" in answered.detail["error"] and answered.detail["answer"] == ""
    # The search did not fail: the passages found are shown in place of an answer, said to be so,
    # and the failed turn stands in its conversation (a retry or follow-up continues it).
    assert html.count(told("unavailable")) == 1
    assert "The model could not be asked, so there is no answer" in html
    panel = html.split("<h4>Passages found</h4>")[1]
    assert "lease.txt" in panel and "two thousand dollars" in panel and "verified" not in panel
    assert answered.detail["mode"] == "error" and answered.detail["sources"][0]["path"] == "lease.txt"
    assert answered.detail["sources_sent"] is False and answered.detail["model"] == ""
    # Asked for: the model's window (None); used, with no window known: search-only's budget.
    assert asked.detail["budget"] is None
    assert answered.detail["budget"] == answered.detail["usage"]["budget"] == 16384
    assert 'name="conversation" value="' in html and "Follow-up question" in html


def test_a_request_that_never_connected_keeps_its_passages_as_not_sent(indexed: Matter, standin: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The server answered /v1/models, then refused the chat request's connection: the passages
    packed for it are shown best first as not sent, without searching a second time."""
    from inference import answer as answering
    from inference.llm import LlmUnavailable

    def refused(*args: Any, **kwargs: Any) -> Any:
        error = LlmUnavailable("the language model at http://127.0.0.1:1 is unreachable (refused)")
        error.delivered = False
        raise error

    searches: list[str] = []
    retrieve = answering.retrieve
    monkeypatch.setattr(answering, "retrieve", lambda text, **k: searches.append(text) or retrieve(text, **k))
    monkeypatch.setattr("inference.llm.VllmClient.stream_chat", refused)

    html = member(indexed).post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    answered = AuditEvent.objects.filter(action="question.answer").latest("id")
    assert told("unavailable") in html and "<h4>Passages found</h4>" in html and "they were not sent to it" in html
    assert answered.detail["sources_sent"] is False and answered.detail["model"] == "" and len(searches) == 1


def test_without_a_search_as_well_a_failed_model_shows_its_error_alone(indexed: Matter, standin: Any,
                                                                        settings: Any) -> None:
    """When the search fails too (here: no passage fits the budget asked for), the model's failure
    is what is reported, and no passage is shown."""
    standin.stop()
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent? " + "Read it all with care. " * 100,
                                     "effort": "low", "budget": "600"}, follow=True).content.decode()

    assert told("unavailable") in html and "Passages found" not in html and "search-only" not in html
    # The conversation list says which conversation's last question failed.
    history = html.split('id="history-list"')[1].split("</ul>")[0]
    assert 'class="badge bad" title="its last question failed">failed</span>' in history


def test_non_members_get_404_for_a_matter(indexed: Matter) -> None:
    Matter.objects.create(slug="other", name="other")
    outsider = member(Matter.objects.get(slug="other"), "eve")

    assert outsider.get("/m/lease/").status_code == 404
    assert outsider.post("/m/lease/", {"question": "rent?", "effort": "low"}, follow=True).status_code == 404
    assert outsider.get("/m/lease/documents/").status_code == 404
    # A page in the site's own look, saying no more than that there is nothing for this user.
    page = outsider.get("/m/lease/").content.decode()
    assert "<h2>Not found</h2>" in page and "lease" not in page.split("<main")[1] and 'href="/"' in page
    refused = outsider.get("/audit/")
    assert refused.status_code == 403 and "<h2>Not allowed</h2>" in refused.content.decode()
    stale = Client(enforce_csrf_checks=True).post("/login/", {"username": "eve", "password": "x"})  # no token
    assert stale.status_code == 403 and "<h2>This form has expired</h2>" in stale.content.decode()


def test_unknown_addresses_answer_in_the_callers_language(indexed: Matter) -> None:
    client = member(indexed)
    api = client.get("/api/v1/no/such/call")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
    openai = client.get("/v1/nothing")
    assert openai.status_code == 404 and openai.json()["error"]["code"] == "unknown_url"
    assert "<h2>Not found</h2>" in client.get("/no/such/page/").content.decode()


def test_signing_out_by_address_asks_and_the_sign_in_page_says_it_is_done(indexed: Matter) -> None:
    client = member(indexed)
    asked = client.get("/logout/")  # a bookmark: Django signs out by POST only, and answered a blank 405
    assert asked.status_code == 200 and "You are signed in as ann." in asked.content.decode()
    assert client.get("/m/lease/").status_code == 200  # still signed in

    out = client.post("/logout/", follow=True)
    assert out.redirect_chain[-1][0] == "/login/"
    assert '<p class="note" role="status">You are signed out.</p>' in out.content.decode()
    assert client.get("/m/lease/").status_code == 302
    again = client.get("/logout/", follow=True)
    assert "<h2>Sign in</h2>" in again.content.decode() and "You are signed out." in again.content.decode()


def test_documents_page_lists_status(indexed: Matter) -> None:
    html = member(indexed).get("/m/lease/documents/").content.decode()

    assert "lease.txt" in html and "indexed" in html and "broken.pdf" in html


def test_run_page_shows_progress_figures_and_failures(indexed: Matter) -> None:
    run = indexed.runs.get()
    client = member(indexed)

    html = client.get(f"/m/lease/runs/{run.id}/").content.decode()

    assert "2/2" in html and "broken.pdf" in html and "corrupt" in html
    assert 'http-equiv="refresh"' not in html  # finished: no more refreshing
    # A finished run's pace is over the time it took, not up to now: read a day later, it is the same.
    from datetime import timedelta

    from docqa.actions import run_stats

    last = max(i.finished_at for i in run.items.all() if i.finished_at)
    start = last - timedelta(seconds=10)  # two files in ten seconds: 0.2 files/s whenever it is read
    IngestRun.objects.filter(id=run.id).update(started_at=start)
    run.refresh_from_db()
    assert run_stats(run).elapsed == pytest.approx((last - start).total_seconds())
    assert "0.2</strong>files/s" in client.get(f"/m/lease/runs/{run.id}/").content.decode()
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
    # A later sync of the folder: the old run's Retry says why it cannot, on the run's page.
    IngestRun.objects.create(matter=indexed, source=run.source, actor="test")
    page = editor.post(f"/m/lease/runs/{run.id}/retry", follow=True).content.decode()
    assert 'role="alert"' in page and "start a new sync instead" in page


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
                                    "effort": "low"}, follow=True).content.decode()
    mine = ann.post("/m/lease/", {"question": "What is the settlement figure in the confidential settlement?",
                                  "effort": "low"}, follow=True).content.decode()

    assert "settlement.txt" in theirs and "lease.txt" not in theirs and "two thousand dollars" not in theirs
    assert "lease.txt" in mine and "settlement.txt" not in mine and "nine million" not in mine
    # History: the ask page lists only the user's own questions in that matter.
    assert "settlement figure" not in eve.get("/m/other/").content.decode()
    assert "monthly rent of the lease" not in ann.get("/m/lease/").content.decode()
    assert "settlement figure" not in member(indexed, "bob").get("/m/lease/").content.decode()


def stream(client: Client, path: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """POST to a server-sent-events view and parse the events it sends."""
    import json

    response = client.post(path, data)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.streaming_content).decode()
    events = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_the_answer_streams_then_a_follow_up_continues_the_thread(indexed: Matter, standin: Any) -> None:
    client = member(indexed)

    events = stream(client, "/m/lease/ask/stream", {"question": "How much notice does the tenant need to terminate?",
                                                    "effort": "low"})

    kinds = [k for k, _ in events]
    statuses = [d["text"] for k, d in events if k == "status"]
    assert statuses[:2] == ["contacting the language model", "retrieving"] and "generating" in statuses
    assert statuses[2].startswith("packed 1 sources /")
    assert kinds.count("token") > 3 and kinds[-1] == "done"  # token by token, then done
    assert "".join(d["text"] for k, d in events if k == "token").strip().startswith("According to")
    done = events[-1][1]
    block = client.get(f"/m/lease/q/{done['question']}/").content.decode()
    assert 'class="badge ok">verified' in block and "<mark>" in block and "Copy as Markdown" in block

    follow = stream(client, "/m/lease/ask/stream", {"question": "And what is the monthly rent?", "effort": "low",
                                                    "conversation": done["conversation"]})
    assert follow[-1][0] == "done" and follow[-1][1]["conversation"] == done["conversation"]
    page = client.get(f"/m/lease/c/{done['conversation']}/").content.decode()
    assert page.count('class="turn"') == 2 and "Follow-up question" in page
    assert 'aria-current="page"' in page  # the history lists it, marked as the one open


def test_stream_reports_failures_as_messages(indexed: Matter, standin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from docqa.faults import PLAIN

    standin.mode = "error"
    member_client = member(indexed)
    events = stream(member_client, "/m/lease/ask/stream", {"question": "What is the rent?", "effort": "low"})
    # In plain words, for the lawyer; the operator's message stays out of the page's stream.
    assert events[-1][0] == "error" and events[-1][1]["message"] == PLAIN["failed"]
    assert events[-1][1]["kind"] == "failed" and "detail" not in events[-1][1]
    # The page fetches the recorded turn: the error, and the passages the server was sent before
    # it answered HTTP 500, as they were sent (no second search).
    failed = events[-1][1]
    block = member_client.get(f"/m/lease/q/{failed['question']}/").content.decode()
    assert told("failed") in block and "<h4>Passages the model was sent</h4>" in block and "monthly rent" in block
    assert "HTTP 500" not in block
    assert "The model gave no answer that could be kept, so the passages it was sent" in block and failed["conversation"]
    answered = AuditEvent.objects.filter(action="question.answer").latest("id")
    assert answered.detail["sources_sent"] is True and answered.detail["model"]
    # Asked again in the same thread, the question is not searched twice over (as a follow-up would be).
    from docqa import actions

    searched: list[Any] = []
    answer_question = actions.answer_question
    monkeypatch.setattr(actions, "answer_question", lambda *a, **k: searched.append(k["previous"]) or
                        answer_question(*a, **k))
    standin.mode = "normal"
    again = stream(member_client, "/m/lease/ask/stream", {"question": "What is the rent?", "effort": "low",
                                                          "conversation": failed["conversation"]})
    assert again[-1][0] == "done" and searched == [""]
    stream(member_client, "/m/lease/ask/stream", {"question": "And the notice?", "effort": "low",
                                                  "conversation": failed["conversation"]})
    assert searched == ["", "What is the rent?"]
    stream(member_client, "/m/lease/ask/stream", {"question": "And the notice?", "effort": "low",
                                                  "conversation": failed["conversation"]})
    assert searched[-1] == "What is the rent?"  # not the same question again, nor an older answered one
    # The model hears the whole thread, failed turns included, so "it" in a follow-up means something.
    sent = [m["content"] for m in standin.requests[-1]["messages"][2:]]
    assert "(No answer was given to this question.)" in sent and sent.count("Question: And the notice?") == 2


def events_of(response: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """A server-sent-events response's events as they arrive."""
    import json

    for part in response.streaming_content:
        for block in part.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if "event" in lines:
                yield lines["event"], json.loads(lines["data"])


def wait_for(check: Any, seconds: float = 10.0) -> Any:
    import time

    deadline = time.monotonic() + seconds
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_stop_hangs_up_on_the_model_and_keeps_what_was_written(indexed: Matter, standin: Any) -> None:
    from docqa.models import Answer

    standin.mode, standin.delay = "slow", 0.2
    ann = member(indexed, "ann")
    response = ann.post("/m/lease/ask/stream", {"question": "What is the monthly rent?", "effort": "low"})
    asked, written, stopped = None, "", None
    for kind, data in events_of(response):
        if kind == "asked":  # the question's id comes first: from here on it can be stopped
            asked = data["question"]
            bob = member(indexed, "bob")  # another member of the matter may not stop it
            assert bob.post(f"/m/lease/q/{asked}/stop").status_code == 404
            other = Matter.objects.create(slug="other", name="Other")  # nor may ann under another matter
            Membership.objects.create(matter=other, user=User.objects.get(username="ann"), role=Role.VIEWER)
            assert ann.post(f"/m/other/q/{asked}/stop").status_code == 404
        elif kind == "token":
            written += data["text"]
            if stopped is None:
                stopped = ann.post(f"/m/lease/q/{asked}/stop")
                assert stopped.status_code == 202
                assert ann.post(f"/m/lease/q/{asked}/stop").status_code == 409  # once is enough
        elif kind == "done":
            assert data == {"question": asked, "conversation": data["conversation"], "mode": "stopped"}
    assert wait_for(lambda: standin.hangups == 1)  # the model server saw the client go: vLLM aborts there
    answer = Answer.objects.get(question_id=asked)
    assert answer.mode == "stopped" and not answer.error and answer.text and answer.sources and answer.model
    assert written.strip() == answer.text  # what the asker was shown, no more and no less
    assert answer.notes == ["Stopped by the asker before the model finished: the answer is incomplete."]
    block = ann.get(f"/m/lease/q/{asked}/").content.decode()
    assert "Stopped by the asker" in block and "<h4>Cited sources</h4>" in block and 'class="error"' not in block
    stop_event = AuditEvent.objects.get(action="question.stop")
    assert stop_event.actor == "web:ann" and stop_event.detail["question"] == asked
    recorded = AuditEvent.objects.filter(action="question.answer").latest("id").detail
    assert recorded["mode"] == "stopped" and recorded["sources_sent"] is True and recorded["answer"] == answer.text
    assert ann.post(f"/m/lease/q/{asked}/stop").status_code == 409  # answered: nothing left to stop
    # A follow-up tells the model the stopped turn had no answer, rather than half of one.
    standin.mode = "normal"
    stream(ann, "/m/lease/ask/stream", {"question": "And the notice?", "effort": "low",
                                        "conversation": answer.question.conversation_id})
    assert "(No answer was given to this question.)" in [m["content"] for m in standin.requests[-1]["messages"]]
    whole = stream(ann, "/m/lease/ask/stream", {"question": "What is the monthly rent?", "effort": "low"})[-1][1]
    full = Answer.objects.get(question_id=whole["question"]).text
    assert full.startswith(answer.text) and len(answer.text) < len(full)  # what was written, and no more


@pytest.mark.parametrize("mode", ["slow_start", "no_headers"])
def test_stop_hangs_up_on_a_model_still_reading_the_prompt(indexed: Matter, standin: Any, settings: Any,
                                                           mode: str) -> None:
    """Nothing streams while vLLM reads a long prompt (or queues it), nor while a server that is
    overloaded has not even answered the request (no headers): the stop still hangs up at once."""
    import time

    from docqa.models import Answer

    standin.mode, standin.delay, settings.LLM_TIMEOUT = mode, 6.0, 30
    ann = member(indexed)
    response = ann.post("/m/lease/ask/stream", {"question": "What is the monthly rent?", "effort": "low"})
    events = events_of(response)
    asked = next(data["question"] for kind, data in events if kind == "asked")
    next(data for kind, data in events if kind == "status" and data["text"] == "generating")
    assert wait_for(lambda: standin.requests)  # the model has the request and is "reading"
    pressed = time.monotonic()
    assert ann.post(f"/m/lease/q/{asked}/stop").status_code == 202
    done = next(data for kind, data in events if kind == "done")
    assert done["mode"] == "stopped" and time.monotonic() - pressed < 3  # not the 6 s the model would take
    answer = Answer.objects.get(question_id=asked)
    assert answer.text == "" and answer.model and answer.sources
    assert answer.notes == ["Stopped by the asker before the model wrote any of its answer: the passages it was sent are kept."]
    assert wait_for(lambda: standin.hangups == 1)  # the model server saw the hang-up


def test_stop_ends_the_wait_for_a_model_server_that_never_answers(indexed: Matter, standin: Any,
                                                                   settings: Any) -> None:
    """The server hangs at the first contact (/v1/models): the question is recorded before it, so
    it is named at once, listed as pending, and Stop ends the wait, where the timeout would not."""
    import time

    from docqa.models import Answer, Question

    standin.mode, settings.LLM_TIMEOUT = "dead", 30
    ann = member(indexed)
    response = ann.post("/m/lease/ask/stream", {"question": "What is the monthly rent?", "effort": "low"})
    events = events_of(response)
    named = next(data for kind, data in events if kind == "asked")
    asked = named["question"]
    assert named["asked_at"].startswith(str(Question.objects.get(id=asked).created_at.date()))  # dated as it was asked
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", named["asked_at"])  # as the REST API writes times
    assert next(data for kind, data in events if kind == "status")["text"] == "contacting the language model"
    assert AuditEvent.objects.filter(action="question.ask").latest("id").detail["budget"] is None  # the model's window
    time.sleep(0.5)  # the server is being waited for
    pressed = time.monotonic()
    assert ann.post(f"/m/lease/q/{asked}/stop").status_code == 202
    done = next(data for kind, data in events if kind == "done")
    assert done["mode"] == "stopped" and time.monotonic() - pressed < 3  # not the 30 s of the timeout
    answer = Answer.objects.get(question_id=asked)
    assert answer.notes == ["Stopped by the asker before the model was asked: nothing was sent to it."]
    assert answer.text == "" and not answer.model and not standin.requests
    trail = list(AuditEvent.objects.filter(detail__question=asked).order_by("id").values_list("action", flat=True))
    assert trail == ["question.ask", "question.stop", "question.answer"]
    # The model's window was never learned and nothing was packed: no budget is claimed.
    answered = AuditEvent.objects.filter(action="question.answer").latest("id")
    assert Question.objects.get(id=asked).budget is None
    assert answered.detail["budget"] is None and answered.detail["usage"]["budget"] is None
    auditor = Client()
    auditor.force_login(User.objects.create_superuser("aud", password="pw-123456"))
    replay = auditor.get(f"/audit/{answered.id}/").content.decode()
    assert "no budget (stopped before the model's window was known)" in replay and "None" not in replay
    block = ann.get(f"/m/lease/q/{asked}/").content.decode()  # nothing was searched: no panel claims otherwise
    assert "nothing was sent to the model" in block and "<aside" not in block and "matched" not in block
    assert ann.post(f"/m/lease/q/{asked}/stop").status_code == 409


@pytest.mark.parametrize("when", ["first contact", "generating"])
def test_an_interrupted_ask_is_recorded_as_stopped_not_left_pending(indexed: Matter, standin: Any,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     when: str) -> None:
    """Ctrl-C on `ask` (or a worker shutting down) while the server is waited for or the model
    writes: the question is recorded as stopped on the way out, so it is never pending forever."""
    from docqa import actions
    from docqa.models import Answer

    def interrupt(kind: str, data: Any) -> None:
        if kind == "status" and data == ("contacting the language model" if when == "first contact" else "generating"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        actions.do_ask(indexed, "What is the monthly rent?", actor="cli", effort="low", on_event=interrupt)

    answer = Answer.objects.get()
    assert answer.mode == "stopped" and not answer.error and answer.notes[0].startswith(actions.INTERRUPTED)
    assert bool(answer.model) is (when == "generating")  # passages as sent once the model was asked
    recorded = AuditEvent.objects.filter(action="question.answer").latest("id").detail
    assert recorded["mode"] == "stopped" and bool(recorded.get("sources_sent")) is (when == "generating")


def test_a_client_that_leaves_mid_answer_stops_the_model(indexed: Matter, standin: Any) -> None:
    from docqa.models import Answer

    standin.mode, standin.delay = "slow", 0.2
    response = member(indexed).post("/m/lease/ask/stream", {"question": "What is the monthly rent?", "effort": "low"})
    events = events_of(response)
    asked = next(data["question"] for kind, data in events if kind == "asked")
    next(data for kind, data in events if kind == "token")
    response.close()  # the page was closed: the server closes the stream's generator
    assert wait_for(lambda: standin.hangups == 1)
    answer = wait_for(lambda: Answer.objects.filter(question_id=asked).first())
    assert answer.mode == "stopped" and answer.notes[0].startswith("Stopped because the client left")


def stop_at(matter: Matter, when: Any) -> Any:
    """Ask, and press Stop (do_stop, as the page's button does) at the first event `when` picks."""
    from docqa import actions
    from docqa.models import Answer, Question

    asked: list[int] = []

    def hook(kind: str, data: Any) -> None:
        if kind == "asked":
            asked.append(data["question"])
        elif when(kind, data) and len(asked) == 1:
            asked.append(0)  # once
            assert actions.do_stop(Question.objects.get(id=asked[0]), actor="web:ann")

    outcome = actions.do_ask(matter, "What is the monthly rent?", actor="web:ann", effort="medium", on_event=hook)
    return Answer.objects.get(question=outcome.question)


def test_a_question_stopped_while_searching_sends_the_model_nothing(indexed: Matter, standin: Any) -> None:
    answer = stop_at(indexed, lambda kind, data: data == "retrieving")  # seen at the search's next step
    assert answer.mode == "stopped" and not answer.model and answer.sources and not standin.requests
    assert answer.notes == ["Stopped by the asker before the model was asked: nothing was sent to it."]
    assert AuditEvent.objects.filter(action="question.answer").latest("id").detail["sources_sent"] is False


def test_a_question_stopped_between_the_models_attempts_keeps_its_passages_as_sent(indexed: Matter,
                                                                                   standin: Any) -> None:
    standin.mode = "length_unless_low"  # the first attempt reasons to the end of its budget
    answer = stop_at(indexed, lambda kind, data: kind == "finish")  # seen at the retry's status
    assert answer.mode == "stopped" and answer.model and answer.sources and len(standin.requests) == 1
    assert answer.notes == ["Stopped by the asker before the model wrote any of its answer: the passages it was sent are kept."]
    recorded = AuditEvent.objects.filter(action="question.answer").latest("id").detail
    assert recorded["sources_sent"] is True and recorded["model"] == answer.model


def test_a_stop_as_the_request_is_about_to_leave_claims_nothing_was_sent(indexed: Matter, standin: Any) -> None:
    """The stop lands after the "generating" step was looked at and before the request leaves:
    the client never sends it, so the passages are not claimed as sent."""
    from docqa import actions
    from docqa.models import Answer

    watch = actions.StopWatch()

    def leave_at_the_last_moment(kind: str, data: Any) -> None:
        if kind == "status" and data == "generating":  # handed on after the watch looked at it
            watch.leave()

    outcome = actions.do_ask(indexed, "What is the monthly rent?", actor="web:ann", effort="low",
                             on_event=leave_at_the_last_moment, watch=watch)
    answer = Answer.objects.get(question=outcome.question)
    assert not standin.requests  # the request never left
    assert answer.mode == "stopped" and not answer.model and answer.sources
    assert answer.notes == ["Stopped because the client left (the page was closed or the connection was lost) "
                            "before the model was asked: nothing was sent to it."]
    assert AuditEvent.objects.filter(action="question.answer").latest("id").detail["sources_sent"] is False


def test_a_stop_too_late_to_cut_the_answer_says_so(indexed: Matter, standin: Any) -> None:
    answer = stop_at(indexed, lambda kind, data: kind == "usage")  # the answer's last event
    assert answer.mode == "llm" and "According to" in answer.text
    assert answer.notes == ["Stop was pressed as the answer was being finished: it is kept whole."]
    assert AuditEvent.objects.filter(action="question.stop").count() == 1


NO_ANSWER_SHOWN = '<div class="answer">(No answer was given to this question.)</div>'


def test_a_replay_lists_and_checks_the_earlier_turns_sent_with_the_question(indexed: Matter, standin: Any) -> None:
    from django.contrib.auth.models import Permission

    from docqa.models import Answer, sha256_text

    ann = member(indexed)
    first = stream(ann, "/m/lease/ask/stream", {"question": "What is the monthly rent?", "effort": "low"})[-1][1]
    standin.mode = "error"
    thread = {"effort": "low", "conversation": first["conversation"]}
    failed = stream(ann, "/m/lease/ask/stream", {"question": "And the notice?", **thread})[-1][1]
    standin.mode = "normal"
    last = stream(ann, "/m/lease/ask/stream", {"question": "Who may terminate?", **thread})[-1][1]

    answered = AuditEvent.objects.filter(action="question.answer").latest("id")
    said = [m["content"] for m in standin.requests[-1]["messages"] if m["role"] == "assistant"]
    assert said[1] == "(No answer was given to this question.)"
    assert answered.detail["question"] == last["question"] and answered.detail["turns_sent"] == [
        {"question": first["question"], "question_sha256": sha256_text("What is the monthly rent?"),
         "answer_sha256": sha256_text(said[0])},
        {"question": failed["question"], "question_sha256": sha256_text("And the notice?"),
         "answer_sha256": sha256_text(said[1])}]  # exactly what the model was sent
    # The failed turn's own record names the turn it was sent with (its passages reached the server).
    assert AuditEvent.objects.filter(action="question.answer").order_by("id")[1].detail["turns_sent"][0]["question"] \
        == first["question"]

    aud = User.objects.create_user("aud", password="pw-123456", is_staff=True)
    aud.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    Membership.objects.create(matter=indexed, user=aud, role=Role.VIEWER)
    auditor = Client()
    auditor.force_login(aud)
    page = auditor.get(f"/audit/{answered.id}/").content.decode()
    assert "Earlier turns sent with the question (2)" in page and page.count("matches its SHA-256</span>") == 2 + 1
    first_event = AuditEvent.objects.filter(action="question.answer").order_by("id")[0]
    assert f'href="/audit/{first_event.id}/"' in page and NO_ANSWER_SHOWN in page
    # Retention replaces the texts by their hashes: the turns still check, their texts are gone.
    from datetime import timedelta

    from django.utils import timezone

    from docqa.retention import expire_content

    expire_content(days=1, now=timezone.now() + timedelta(days=2))
    page = auditor.get(f"/audit/{answered.id}/").content.decode()
    assert page.count("matches its SHA-256</span>") == 3 and "does not match" not in page
    assert page.count('<span class="badge">expired</span>') == 2 and NO_ANSWER_SHOWN not in page
    Answer.objects.filter(question_id=first["question"]).update(text="sha256:" + sha256_text("The rent is one dollar."))
    assert "does not match its SHA-256" in auditor.get(f"/audit/{answered.id}/").content.decode()


def test_conversations_and_answers_are_private_to_their_user(indexed: Matter, standin: Any) -> None:
    ann = member(indexed, "ann")
    done = stream(ann, "/m/lease/ask/stream", {"question": "What is the rent?", "effort": "low"})[-1][1]
    bob = member(indexed, "bob")  # same matter, another user
    assert bob.get(f"/m/lease/c/{done['conversation']}/").status_code == 404
    assert bob.get(f"/m/lease/q/{done['question']}/").status_code == 404
    assert bob.post("/m/lease/ask/stream", {"question": "and?", "effort": "low",
                                           "conversation": done["conversation"]}).status_code == 404
    assert "What is the rent?" not in bob.get("/m/lease/").content.decode()


def test_a_scope_limits_the_search_to_a_folder(indexed: Matter, tmp_path: Path) -> None:
    folder = tmp_path / "docs" / "annex"
    folder.mkdir()
    (folder / "parking.txt").write_text("PARKING ANNEX\n\nThe tenant may use two parking spaces behind the building.\n")
    call_command("ingest", str(tmp_path / "docs"), "--matter", "lease", stdout=io.StringIO())
    client = member(indexed)

    scoped = client.post("/m/lease/", {"question": "What is the monthly rent?", "effort": "low",
                                       "scope": "annex"}, follow=True).content.decode()
    assert "annex/parking.txt" in scoped and "two thousand dollars" not in scoped
    # The turn says where it searched, the box keeps the folder for a follow-up, the API says it too.
    from docqa.models import Question

    assert "low effort · only in annex ·" in scoped and 'id="id_scope"' in scoped and 'value="annex"' in scoped
    assert Question.objects.get().scope == ["annex"]
    nowhere = client.post("/m/lease/", {"question": "rent?", "effort": "low", "scope": "no/such/folder"}, follow=True)
    assert "No indexed document in lease is under no/such/folder." in nowhere.content.decode()
    assert '<option value="annex">' in client.get("/m/lease/").content.decode()  # folders offered
    # The documents page walks the tree a level at a time, and filters by state.
    root = client.get("/m/lease/documents/").content.decode()
    assert '<a href="?folder=annex">annex/</a>' in root and "1 file<" in root and "lease.txt" in root
    assert "parking.txt" not in root
    inside = client.get("/m/lease/documents/?folder=annex").content.decode()
    assert "parking.txt</a>" in inside and "lease.txt" not in inside
    failed = client.get("/m/lease/documents/?state=failed").content.decode()
    assert "broken.pdf" in failed and "lease.txt</a>" not in failed


def test_two_folders_holding_the_same_file_name_are_told_apart(indexed: Matter, tmp_path: Path) -> None:
    """A matter syncing two folders that both hold lease.txt listed two rows "lease.txt" in one
    table, cited both as "lease.txt" and sent the model two sources of one name. Each is now named
    after its folder wherever it is listed, searched, cited or scoped."""
    letters = tmp_path / "letters"
    letters.mkdir()
    (letters / "lease.txt").write_text("LEASE AGREEMENT (DRAFT)\n\nThe monthly rent is three thousand dollars, "
                                       "payable quarterly in advance.\n")
    call_command("ingest", str(letters), "--matter", "lease", stdout=io.StringIO())
    client = member(indexed)

    # The documents page opens on one row per folder, each saying which folder of the server it is.
    root = client.get("/m/lease/documents/").content.decode()
    assert '<a href="?folder=docs">docs/</a>' in root and '<a href="?folder=letters">letters/</a>' in root
    assert str(letters) in root and "lease.txt" not in root
    inside = client.get("/m/lease/documents/?folder=letters").content.decode()
    assert "lease.txt</a>" in inside and "broken.pdf" not in inside and "three" not in inside
    everywhere = client.get("/m/lease/documents/?state=indexed").content.decode()
    assert "docs/lease.txt</a>" in everywhere and "letters/lease.txt</a>" in everywhere
    # The sources found, the scope box's folders and a document's own page name the folder.
    asked = client.post("/m/lease/", {"question": "What is the monthly rent?", "effort": "low"},
                        follow=True).content.decode()
    assert "docs/lease.txt" in asked and "letters/lease.txt" in asked
    assert '<option value="letters">' in asked and '<option value="docs">' in asked
    scoped = client.post("/m/lease/", {"question": "What is the monthly rent?", "effort": "low",
                                       "scope": "letters"}, follow=True).content.decode()
    assert "three thousand dollars" in scoped and "two thousand dollars" not in scoped
    one = client.post("/m/lease/", {"question": "What is the monthly rent?", "effort": "low",
                                    "scope": "docs/lease.txt"}, follow=True).content.decode()
    assert "two thousand dollars" in one and "three thousand dollars" not in one
    from docqa.models import Document

    draft = Document.objects.get(source__root=str(letters))
    # A folder holding no document (taken over by a folder above it, or all of it skipped) is no name.
    indexed.sources.create(root=str(tmp_path / "empty"))
    assert sorted(indexed.folder_names().values()) == ["docs", "letters"]
    assert "<h2>letters/lease.txt</h2>" in client.get(f"/m/lease/documents/{draft.id}/").content.decode()
    # The trail says which lease.txt was opened: its folder's name beside the path.
    viewed = AuditEvent.objects.filter(action="document.view").latest("id")
    assert viewed.detail["folder"] == "letters" and viewed.detail["path"] == "lease.txt"
    # The API gives each document's folder, and its folder filter takes the folder's name.
    from docqa import actions

    token = actions.do_create_token(User.objects.get(username="ann"), "t", "test")
    listed = client.get("/api/v1/matters/lease/documents?folder=letters",
                        HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert [(d["path"], d["source"], d["shown"]) for d in listed["items"]] == [
        ("lease.txt", str(letters), "letters/lease.txt")]
    client.get(f"/api/v1/matters/lease/documents/{draft.id}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert AuditEvent.objects.filter(action="document.view").latest("id").detail["folder"] == "letters"


def test_a_folder_holding_no_document_leaves_the_documents_page_working(indexed: Matter, tmp_path: Path) -> None:
    """Beside two folders that hold documents, a folder whose files were all deleted (or one that
    never held any) has no name: the documents page failed with a server error (KeyError) on it.
    It has no row of its own; its deleted documents are listed under "deleted", named by its root."""
    letters, old = tmp_path / "letters", tmp_path / "old"
    for folder, text in ((letters, "SIDE LETTER\n\nThe rent is reduced.\n"), (old, "OLD MEMO\n\nNothing.\n")):
        folder.mkdir()
        (folder / "memo.txt").write_text(text)
        if folder == letters:  # a subfolder whose name is not ASCII: counted in characters, not bytes
            (folder / "über").mkdir()
            (folder / "über" / "note.txt").write_text("NOTE\n\nKeys are returned on the last day.\n")
        call_command("ingest", str(folder), "--matter", "lease", stdout=io.StringIO())
    (old / "memo.txt").unlink()
    call_command("ingest", str(old), "--matter", "lease", "--allow-empty", stdout=io.StringIO())
    indexed.sources.create(root=str(tmp_path / "empty"))
    assert sorted(indexed.folder_names().values()) == ["docs", "letters"]
    client = member(indexed)

    top = client.get("/m/lease/documents/")
    assert top.status_code == 200
    html = top.content.decode()
    assert '<a href="?folder=docs">docs/</a>' in html and '<a href="?folder=letters">letters/</a>' in html
    assert str(old) not in html and "empty" not in html and "1 deleted" in html
    deleted = client.get("/m/lease/documents/?state=deleted").content.decode()
    assert f"{old}/memo.txt</a>" in deleted and "letters/memo.txt" not in deleted
    # Every document in a state is listed by the name shown: folder first, then path.
    everywhere = client.get("/m/lease/documents/?state=indexed").content.decode()
    names = re.findall(r'<a href="/m/lease/documents/\d+/">([^<]+)</a>', everywhere)
    assert names == sorted(names) and names[-2:] == ["letters/memo.txt", "letters/über/note.txt"]
    assert names[0].startswith("docs/")
    inside = client.get("/m/lease/documents/?folder=letters").content.decode()
    assert "über/</a>" in inside and "1 file" in inside and "memo.txt</a>" in inside and "note.txt" not in inside
    assert "note.txt</a>" in client.get("/m/lease/documents/?folder=letters/über").content.decode()


def test_a_deleted_folders_documents_are_told_apart_from_the_live_ones(indexed: Matter, tmp_path: Path) -> None:
    """With one live folder beside a folder whose files were all deleted, names had no folder at
    all: the deleted gone/lease.txt was listed in the live tree as a second "lease.txt", and its
    page, its API record and its audit said "lease.txt" too. It is now called by its folder's
    root wherever it is listed, opened or audited, and kept out of the live tree."""
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "lease.txt").write_text("OLD LEASE\n\nThe monthly rent was one thousand dollars.\n")
    call_command("ingest", str(gone), "--matter", "lease", stdout=io.StringIO())
    (gone / "lease.txt").unlink()
    call_command("ingest", str(gone), "--matter", "lease", "--allow-empty", stdout=io.StringIO())
    assert indexed.folder_names() == {}  # one live folder: its documents are named by their paths
    client = member(indexed)

    tree = client.get("/m/lease/documents/").content.decode()
    assert tree.count("lease.txt</a>") == 1 and str(gone) not in tree and "1 deleted" in tree
    deleted = client.get("/m/lease/documents/?state=deleted").content.decode()
    assert f"{gone}/lease.txt</a>" in deleted
    from docqa import actions
    from docqa.models import Document

    old = Document.objects.get(source__root=str(gone))
    assert f"<h2>{gone}/lease.txt</h2>" in client.get(f"/m/lease/documents/{old.id}/").content.decode()
    assert AuditEvent.objects.filter(action="document.view").latest("id").detail["folder"] == str(gone)
    token = actions.do_create_token(User.objects.get(username="ann"), "t", "test")
    listed = client.get(f"/api/v1/matters/lease/documents?folder={gone}",
                        HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert [(d["id"], d["shown"]) for d in listed["items"]] == [(old.id, f"{gone}/lease.txt")]


def test_a_long_list_of_documents_turns_pages(indexed: Matter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder or a state's list longer than a page used to end in "N more not shown", with no
    way to see them; ?page= turns the pages, and a page past the end leads back."""
    from docqa import views
    from docqa.models import Document

    monkeypatch.setattr(views, "LISTED", 2)
    source = indexed.sources.get()
    Document.objects.bulk_create(Document(matter=indexed, source=source, path=f"bulk/f{i}.txt", kind="text",
                                          status="failed", error="parse: made up") for i in range(5))
    client = member(indexed)
    names = [re.findall(r'<a href="/m/lease/documents/\d+/">([^<]+)</a>',
                        client.get(f"/m/lease/documents/?folder=bulk&page={page}").content.decode())
             for page in (1, 2, 3)]
    assert names == [["f0.txt", "f1.txt"], ["f2.txt", "f3.txt"], ["f4.txt"]]
    middle = client.get("/m/lease/documents/?state=failed&folder=bulk&page=2").content.decode()
    assert "3–4 of 5" in middle
    assert 'href="?state=failed&amp;folder=bulk&amp;page=1" rel="prev"' in middle
    assert 'href="?state=failed&amp;folder=bulk&amp;page=3" rel="next"' in middle
    past = client.get("/m/lease/documents/?folder=bulk&page=9").content.decode()
    assert "this list has 5" in past and 'href="?folder=bulk&amp;page=3" rel="prev"' in past
    assert client.get("/m/lease/documents/?folder=bulk&page=%C2%B2").status_code == 200  # "²" is no page number
    first = client.get("/m/lease/documents/?folder=bulk&page=x").content.decode()
    assert "1–2 of 5" in first and "rel=\"prev\"" not in first


def test_a_follow_up_keeps_its_folder_when_a_later_folder_renames_it(indexed: Matter, tmp_path: Path) -> None:
    """A folder added later whose name clashes renames the older one ("docs" becomes
    "<parent>/docs"): the scope box of a follow-up used to offer the old name, which then found
    nothing. It now offers the folder by its name of today."""
    letters = tmp_path / "letters"
    letters.mkdir()
    (letters / "lease.txt").write_text("SIDE LETTER\n\nThe monthly rent is three thousand dollars.\n")
    call_command("ingest", str(letters), "--matter", "lease", stdout=io.StringIO())
    client = member(indexed)
    asked = client.post("/m/lease/", {"question": "What is the monthly rent?", "effort": "low", "scope": "docs"},
                        follow=True)
    page = asked.redirect_chain[-1][0].split("#")[0]
    assert 'value="docs"' in asked.content.decode()
    other = tmp_path / "other" / "docs"
    other.mkdir(parents=True)
    (other / "memo.txt").write_text("MEMO\n\nNothing about rent.\n")
    call_command("ingest", str(other), "--matter", "lease", stdout=io.StringIO())
    renamed = f"{tmp_path.name}/docs"
    assert sorted(indexed.folder_names().values()) == sorted([renamed, "letters", "other/docs"])
    again = client.get(page).content.decode()
    assert f'value="{renamed}"' in again and 'value="docs"' not in again
    from docqa.models import Question

    follow_up = client.post("/m/lease/", {"question": "And the deposit?", "effort": "low", "scope": renamed,
                                          "conversation": Question.objects.latest("id").conversation_id},
                            follow=True).content.decode()
    assert "two thousand dollars" in follow_up and "three thousand" not in follow_up.split("And the deposit?")[-1]


def test_the_model_and_the_citations_name_a_documents_folder(indexed: Matter, tmp_path: Path, standin: Any) -> None:
    letters = tmp_path / "letters"
    letters.mkdir()
    (letters / "lease.txt").write_text("SIDE LETTER\n\nThe monthly rent is reduced to three thousand dollars.\n")
    call_command("ingest", str(letters), "--matter", "lease", stdout=io.StringIO())
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "To what is the monthly rent reduced?", "effort": "low"},
                       follow=True).content.decode()
    prompt = "\n".join(str(m.get("content")) for m in standin.requests[-1]["messages"])
    assert "letters/lease.txt" in prompt and "docs/lease.txt" in prompt and "] lease.txt" not in prompt
    from docqa.models import Citation

    cited = Citation.objects.get()
    assert cited.path == "letters/lease.txt" and cited.status == "quote verified" and "letters/lease.txt" in html


@pytest.fixture
def worker(indexed: Matter) -> Iterator[None]:
    """The embedded default's in-process worker, as `serve` runs it."""
    from docqa import embedded

    embedded.ensure_worker()
    yield
    embedded.stop_worker()


def test_a_cancelled_run_says_what_it_left_undone_and_resume_does_it(indexed: Matter, worker: None) -> None:
    """The page read "cancelled, in progress" with no counts and counted the cancelled files as
    done (2/2, 100%); nothing said how to finish, and the cancel was audited without "web:"."""
    from docqa.actions import wait_for_run

    run = indexed.runs.get()
    run.items.filter(path="lease.txt").update(state="queued")
    run.items.filter(path="broken.pdf").update(state="parsing")  # in a worker's hands
    indexed.runs.update(status="running", counts={})
    editor = member(indexed, "eddie", Role.EDITOR)

    page = editor.post(f"/m/lease/runs/{run.id}/cancel", follow=True).content.decode()
    assert "Cancelled: 1 file not yet started will not be indexed" in page
    assert "cancelled, finishing the files in hand" in page and "Resume run" not in page
    assert AuditEvent.objects.get(action="ingest.cancel").actor == "web:eddie"
    run.items.filter(path="broken.pdf").update(state="failed")  # the file in hand ends

    page = editor.get(f"/m/lease/runs/{run.id}/").content.decode()
    assert "finishing the files in hand" not in page and "<strong>1/2</strong>files" in page
    assert "<strong>1</strong>cancelled" in page and "1 file was not indexed because the run was cancelled" in page
    assert "failed 1 · cancelled 1" in page and page.count("Resume run") == 2  # the note and the button
    assert "failed 1 · cancelled 1" in editor.get("/m/lease/runs/").content.decode()  # counted once it ended
    assert "Resume run" not in member(indexed, "vic").get(f"/m/lease/runs/{run.id}/").content.decode()

    page = editor.post(f"/m/lease/runs/{run.id}/resume", follow=True).content.decode()
    assert "1 file queued again" in page
    run = wait_for_run(run, timeout=120)
    assert run.status == "finished" and run.counts["indexed"] == 1 and run.counts["cancelled"] == 0
    assert AuditEvent.objects.get(action="ingest.resume").actor == "web:eddie"


def zip_of(files: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_editors_upload_files_and_a_zip_and_watch_the_sync(indexed: Matter, worker: None, settings: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from docqa.actions import wait_for_run
    from docqa.models import IngestRun

    editor = member(indexed, "ed", Role.EDITOR)
    response = editor.post("/m/lease/upload", {"files": [
        SimpleUploadedFile("notice.txt", b"NOTICE\n\nThe landlord gave notice on 1 March.\n"),
        SimpleUploadedFile("bundle.zip", zip_of({"annex/a.txt": b"ANNEX A\n\nThe deposit is one month of rent.\n",
                                                 "annex/b.md": b"# Annex B\n\nKeys are returned at the end.\n"})),
    ]})
    assert response.status_code == 302 and "/runs/" in response.url
    run = wait_for_run(IngestRun.objects.get(id=int(response.url.rstrip("/").rsplit("/", 1)[1])), timeout=120)
    assert run.counts["indexed"] == 3, run.counts
    paths = set(indexed.documents.filter(status="indexed").values_list("path", flat=True))
    assert {"notice.txt", "annex/a.txt", "annex/b.md"} <= paths
    page = editor.get(response.url).content.decode()
    assert "indexed 3" in page or "3" in page


@pytest.mark.parametrize("files, message", [
    ({"../evil.txt": b"x"}, "would land outside the upload folder"),
    ({"/etc/evil.txt": b"x"}, None),  # made relative: lands inside
    ({"big.txt": b"x" * 5000}, "The upload is too large"),
    ({"a": b"x", "a/evil.txt": b"y"}, "needs a folder where the zip also has a file"),
])
def test_uploads_cannot_escape_their_folder_or_exceed_the_caps(indexed: Matter, settings: Any, tmp_path: Path,
                                                              files: dict[str, bytes], message: str | None) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.UPLOAD_MAX_BYTES = 4096
    settings.DATA_DIR = tmp_path / "data"
    editor = member(indexed, "ed", Role.EDITOR)
    response = editor.post("/m/lease/upload", {"files": [SimpleUploadedFile("u.zip", zip_of(files))]}, follow=True)
    page = response.content.decode()
    if message:
        assert message in page
    uploads = tmp_path / "data" / "uploads" / "lease"
    assert [p for p in tmp_path.rglob("evil.txt") if not p.is_relative_to(uploads)] == []
    assert not list(tmp_path.rglob("big.txt"))  # refused before a byte was written


def test_a_zip_from_a_mac_uploads_its_documents_and_leaves_its_hidden_entries_out(
        indexed: Matter, worker: None, settings: Any, tmp_path: Path) -> None:
    """Finder's "Compress" adds __MACOSX/ and .DS_Store: the whole zip was refused as landing
    "outside the upload folder"."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from docqa.actions import wait_for_run
    from docqa.models import IngestRun

    settings.DATA_DIR = tmp_path / "data"
    editor = member(indexed, "ed", Role.EDITOR)
    bundle = zip_of({"annex/a.txt": b"ANNEX A\n\nThe deposit is one month of rent.\n", ".DS_Store": b"\0\0\0\1Bud1",
                     "annex/.DS_Store": b"\0\0\0\1Bud1", "__MACOSX/annex/._a.txt": b"\0\5\26\7"})
    response = editor.post("/m/lease/upload", {"files": [SimpleUploadedFile("annex.zip", bundle)]})
    assert response.status_code == 302 and "/runs/" in response.url
    page = editor.get(response.url).content.decode()
    assert ("1 file uploaded; 3 hidden entries of the zip left out (.DS_Store, __MACOSX/): they hold no documents"
            in page)
    run = wait_for_run(IngestRun.objects.get(id=int(response.url.rstrip("/").rsplit("/", 1)[1])), timeout=120)
    assert run.counts["indexed"] == 1 and run.counts.get("skipped", 0) == 0
    uploads = tmp_path / "data" / "uploads" / "lease"
    assert sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.is_file()) == ["annex/a.txt"]


def test_a_refused_upload_writes_none_of_its_files(indexed: Matter, settings: Any, tmp_path: Path) -> None:
    """The files before the refused one were written (and synced by the next upload)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_DIR = tmp_path / "data"
    editor = member(indexed, "ed", Role.EDITOR)
    page = editor.post("/m/lease/upload", {"files": [
        SimpleUploadedFile("notice.txt", b"NOTICE\n"), SimpleUploadedFile("more.zip", zip_of({"b.txt": b"B\n"})),
        SimpleUploadedFile("bad.zip", zip_of({"../evil.txt": b"x"}))]}, follow=True).content.decode()
    assert "would land outside the upload folder" in page
    assert not (tmp_path / "data" / "uploads").exists() or not any((tmp_path / "data" / "uploads").rglob("*.txt"))
    page = editor.post("/m/lease/upload", {"files": [SimpleUploadedFile("notzip.zip", b"plain text")]},
                       follow=True).content.decode()
    assert "notzip.zip is not a readable zip file." in page  # a file name keeps its case


def test_the_runs_page_shows_no_error_a_link_brings_with_it(indexed: Matter) -> None:
    """An error box shows what the server said, kept in the session; words in the address
    ("?error=Your account is locked, call ...") are not shown."""
    editor = member(indexed, "ed", Role.EDITOR)

    page = editor.get("/m/lease/runs/?error=Your+account+is+locked.+Call+555-0100").content.decode()
    assert "Your account is locked" not in page and 'role="alert"' not in page

    response = editor.post("/m/lease/sync", {"root": "/nowhere/at/all"})
    assert response.status_code == 302 and "?" not in response["Location"]
    page = editor.get(response["Location"]).content.decode()
    assert 'class="error" role="alert"' in page and 'name="root" required value="/nowhere/at/all"' in page  # kept
    again = editor.get(response["Location"]).content.decode()
    assert 'role="alert"' not in again and 'required value=""' in again  # said once


def test_a_folder_syncs_only_under_the_matters_own_roots(indexed: Matter, worker: None, settings: Any,
                                                         tmp_path: Path) -> None:
    share = tmp_path / "share"
    for name in ("lease", "beta"):
        (share / name).mkdir(parents=True)
        (share / name / "memo.txt").write_text(f"MEMO {name}\n\nThe board approved the {name} renewal.\n")
    beta = Matter.objects.create(slug="beta", name="Beta")
    call_command("ingest", str(share / "beta"), "--matter", "beta", stdout=io.StringIO())
    editor = member(indexed, "ed", Role.EDITOR)

    refused = editor.post("/m/lease/sync", {"root": str(share / "lease")}, follow=True).content.decode()
    assert "is not under a folder this matter may sync from" in refused and "manage.py matter roots" in refused
    # An administrator sets the matter's folders; never over another matter's, nor under DOCQA_SOURCE_ROOTS' ceiling.
    settings.SOURCE_ROOTS = [str(share)]
    with pytest.raises(CommandError, match="holds .*beta of another matter: a matter.s folders stay apart"):
        call_command("matter", "roots", "lease", str(share), stdout=io.StringIO())
    with pytest.raises(CommandError, match="is not under DOCQA_SOURCE_ROOTS"):
        call_command("matter", "roots", "lease", str(tmp_path), stdout=io.StringIO())
    call_command("matter", "roots", "lease", str(share / "lease"), stdout=io.StringIO())
    shown = io.StringIO()
    call_command("matter", "roots", "lease", stdout=shown)  # no folders given: a look, not a change
    assert shown.getvalue() == f"lease may sync from: {share / 'lease'}\n"
    assert "may be added" in editor.get("/m/lease/runs/").content.decode()
    started = editor.post("/m/lease/sync", {"root": str(share / "lease")})
    assert started.status_code == 302 and "/runs/" in started.url
    # The ethical wall: another matter's folder, or one above it, cannot be named from here.
    for root in (share / "beta", share, share / "lease" / ".." / "beta", settings.DATA_DIR):
        page = editor.post("/m/lease/sync", {"root": str(root)}, follow=True).content.decode()
        assert "cannot be synced here" in page or "is not under a folder this matter may sync from" in page, root
    assert not indexed.documents.filter(path__contains="beta").exists()
    assert beta.sources.count() == 1
    assert member(indexed, "vic").post("/m/lease/sync", {"root": str(share / "lease")}).status_code == 404
    assert AuditEvent.objects.filter(action="matter.roots").count() == 1
    cleared = io.StringIO()
    call_command("matter", "roots", "lease", "--clear", stdout=cleared)
    assert cleared.getvalue() == "lease may sync from: uploads only\n"
    assert AuditEvent.objects.filter(action="matter.roots").count() == 2


SQLITE_CASE = """
import os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "docqa.settings"
django.setup()
from docqa.models import Document, Matter, Source, path_starts
m = Matter.objects.create(slug="m", name="m")
s = Source.objects.create(matter=m, root="/x")
for p in ("Contracts/a.txt", "contracts/b.txt", "Contracts-old/c.txt"):
    Document.objects.create(matter=m, source=s, path=p, kind="txt")
print(sorted(Document.objects.filter(path_starts("Contracts/")).values_list("path", flat=True)))
"""


def test_folders_are_told_apart_by_case_on_sqlite_too(tmp_path: Path) -> None:
    from tests.conftest import embedded_python

    run = embedded_python(tmp_path)
    assert run("manage.py", "migrate", "-v0").returncode == 0
    done = run("-c", SQLITE_CASE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['Contracts/a.txt']"


def test_an_error_docqa_did_not_raise_on_purpose_is_told_plainly_and_shown_to_staff(
        indexed: Matter, standin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug or a broken service under the answer path (here: an exception docqa does not know)
    is recorded with its own words for the operator, while the asker reads that docqa failed and
    which question to name; staff also see its words, in the page and in the stream."""
    from docqa import actions
    from docqa.faults import PLAIN
    from docqa.models import Answer

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("connection to 10.0.0.7:6334 reset by peer")

    monkeypatch.setattr(actions, "answer_question", broken)
    client = member(indexed)

    html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    failed = Answer.objects.get()
    assert failed.error_kind == "internal" and "10.0.0.7" in failed.error and failed.mode == "error"
    assert told("internal") in html and "10.0.0.7" not in html and f"under question {failed.question_id}" in html
    events = stream(client, "/m/lease/ask/stream", {"question": "What is the rent?", "effort": "low"})
    assert events[-1][0] == "error" and events[-1][1]["message"] == PLAIN["internal"]
    assert events[-1][1]["question"] and "10.0.0.7" not in str(events)
    event = AuditEvent.objects.filter(action="question.answer").latest("id")
    assert event.detail["error_kind"] == "internal" and "10.0.0.7" in event.detail["error"]

    staff = User.objects.create_user("sam", password="pw-123456", is_staff=True)
    Membership.objects.create(matter=indexed, user=staff, role=Role.VIEWER)
    client.force_login(staff)
    events = stream(client, "/m/lease/ask/stream", {"question": "What is the rent?", "effort": "low"})
    assert events[-1][1]["message"] == PLAIN["internal"] and "10.0.0.7" in events[-1][1]["detail"]
    block = client.get(f"/m/lease/q/{events[-1][1]['question']}/").content.decode()
    assert told("internal") in block and "For the administrator" in block and "10.0.0.7" in block


def test_a_reranker_set_up_wrong_is_told_plainly_and_an_auditor_sees_why(
        indexed: Matter, standin: Any, settings: Any, tmp_path: Path) -> None:
    """A setting for the operator (a reranker folder holding no model) fails the question: the
    lawyer is not shown the server's paths; an auditor, staff or not, is shown the reason."""
    from django.contrib.auth.models import Group, Permission

    from docqa.llm import get_reranker
    from docqa.models import Answer

    settings.RERANK_MODEL = str(tmp_path / "srv-secret-models")
    get_reranker.cache_clear()
    try:
        client = member(indexed)
        html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()
        assert told("search_setup") in html and "srv-secret-models" not in html
        assert Answer.objects.get().error_kind == "search_setup"
        auditors = Group.objects.create(name="auditors")
        auditors.permissions.add(Permission.objects.get(codename="view_auditevent"))
        aud = User.objects.create_user("aud", password="pw-123456")  # not staff
        aud.groups.add(auditors)
        Membership.objects.create(matter=indexed, user=aud, role=Role.VIEWER)
        client.force_login(aud)
        html = client.post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()
        assert told("search_setup") in html and "For the administrator" in html and "srv-secret-models" in html
        failed = Answer.objects.latest("id")
        assert f'href="/audit/?question={failed.question_id}"' in html  # an auditor goes straight to its events
    finally:
        settings.RERANK_MODEL = ""
        get_reranker.cache_clear()


def test_an_error_with_no_message_is_still_a_failure_told_plainly(indexed: Matter, standin: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from docqa import actions
    from docqa.models import Answer

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError

    monkeypatch.setattr(actions, "answer_question", broken)
    html = member(indexed).post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    failed = Answer.objects.get()
    assert failed.error == "AssertionError" and failed.error_kind == "internal" and failed.mode == "error"
    assert told("internal") in html and "The answer cites no source" not in html


def test_a_server_that_never_answers_its_first_contact_is_told_as_not_available(indexed: Matter, standin: Any,
                                                                                 settings: Any) -> None:
    """No reply even to /v1/models: nothing was asked of the model, so the lawyer is not advised
    to lower the effort or narrow the question (the timeout is the operator's to read)."""
    from docqa.models import Answer

    standin.mode, settings.LLM_TIMEOUT = "dead", 1
    html = member(indexed).post("/m/lease/", {"question": "What is the rent?", "effort": "low"}, follow=True).content.decode()

    failed = Answer.objects.get()
    assert failed.error_kind == "unavailable" and "time" in failed.error
    assert told("unavailable") in html and told("timeout") not in html
