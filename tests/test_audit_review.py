"""Audit review for auditors: filters, search, answer replay and streamed, audited exports."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from docqa.actions import record_answer, record_audit
from docqa.faults import PLAIN
from docqa.models import Answer, AuditEvent, Matter, Membership, Question, Role
from inference.answer import AnswerResult
from inference.citations import CheckedCitation
from inference.pack import PackedSource, Packing

pytestmark = pytest.mark.django_db

PASSAGE = "Either party may terminate this agreement on ninety days' written notice."


@pytest.fixture
def trail() -> dict[str, object]:
    return make_trail()


def make_trail() -> dict[str, object]:
    """A matter with a viewer, an auditor, one answered question and an ingest event."""
    acme = Matter.objects.create(slug="acme", name="Acme")
    ann = User.objects.create_user("ann", password="pw-123456")
    Membership.objects.create(matter=acme, user=ann, role=Role.VIEWER)
    auditors = Group.objects.create(name="auditors")
    auditors.permissions.add(Permission.objects.get(codename="view_auditevent"))
    aud = User.objects.create_user("aud", password="pw-123456", is_staff=True)
    aud.groups.add(auditors)
    question = Question.objects.create(matter=acme, user=ann, actor="web:ann", text="Can either party terminate?",
                                       effort="low", budget=16384)
    source = PackedSource(label="S1", document_id=7, path="msa.txt", page=None, start=0, end=len(PASSAGE),
                          text=PASSAGE, score=1.0, tokens=15, version="v1")
    result = AnswerResult("llm", 'Yes: "may terminate this agreement on ninety days\' written notice" [S1].',
                          Packing([source], [], 20, 16000), model="gpt-oss-120b",
                          usage={"prompt_tokens": 300, "completion_tokens": 40, "cached_tokens": 0},
                          citations=[CheckedCitation("S1", "may terminate this agreement on ninety days' written notice",
                                                     "quote verified", "found in S1")])
    record_answer(question, result, time.monotonic())
    record_audit("cli:ops", "ingest.finish", acme, {"counts": {"indexed": 3}})
    event = AuditEvent.objects.get(action="question.answer")
    return {"acme": acme, "ann": ann, "aud": aud, "event": event}


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_only_auditors_reach_the_review_pages(trail: dict) -> None:
    urls = ["/audit/", f"/audit/{trail['event'].id}/", "/audit/export.csv", "/audit/export.jsonl"]
    for url in urls:
        response = client_for(None).get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")
        assert client_for(trail["ann"]).get(url).status_code == 403  # a matter member is not an auditor
        assert client_for(trail["aud"]).get(url).status_code == 200


def test_filters_and_full_text_search(trail: dict) -> None:
    auditor = client_for(trail["aud"])

    def ids(**query: str) -> set[int]:
        return {e.id for e in auditor.get("/audit/", query).context["page"]}

    answer = trail["event"].id
    assert answer in ids(q="terminate") and answer in ids(actor="ann") and answer in ids(matter="acme")
    assert ids(action="ingest.") == set(AuditEvent.objects.filter(action="ingest.finish").values_list("id", flat=True))
    assert answer not in ids(q="assignment")
    assert ids(until="2001-01-01") == set()
    assert answer in ids(since="2001-01-01")
    # One question's events, as its asker names it ("under question 42"): asked, answered, stopped.
    question = trail["event"].detail["question"]
    assert ids(question=str(question)) == {answer} and ids(question=str(question + 1)) == set()
    assert ids(question=f"#{question}") == {answer} and ids(question=f"question {question}") == {answer}
    assert ids(question="not a number") == set()  # no number: no question's events, not the whole trail


def test_every_event_says_what_it_recorded_in_the_list_and_on_its_own_page(trail: dict) -> None:
    """Not only questions: a document view names the document and the characters read, a run its
    counts, a sign-in its address; each event's number opens its page, with its fields and hash."""
    acme = trail["acme"]
    viewed = record_audit("web:ann", "document.view", acme, {"document": 7, "path": "msa.txt", "version": "v1",
                                                             "start": 120, "end": 480})
    record_audit("web:ann", "login.success", None, {"address": "10.1.2.3"})
    auditor = client_for(trail["aud"])

    listed = auditor.get("/audit/").content.decode()

    assert "path msa.txt · document 7 · chars 120-480" in listed
    assert "address 10.1.2.3" in listed and "counts indexed 3" in listed
    record_audit("retention", "retention.expire", None, {"cutoff": "2026-01-01", "questions": 4})
    record_audit("web:ann", "question.stop", acme, {"question": 12, "conversation": 3})
    listed = auditor.get("/audit/").content.decode()
    assert "cutoff 2026-01-01 · questions 4" in listed and "question 12 · conversation 3" in listed
    assert f'<a href="/audit/{viewed.id}/">{viewed.id}</a>' in listed
    page = auditor.get(f"/audit/{viewed.id}/").content.decode()
    assert "document.view (event" in page and "msa.txt" in page and "matches its hash" in page
    assert "<td>start</td><td><pre class=\"recorded\">120</pre>" in page
    assert AuditEvent.objects.filter(action="audit.replay", detail__event=viewed.id).exists()
    assert client_for(trail["ann"]).get(f"/audit/{viewed.id}/").status_code == 403
    assert auditor.get("/audit/999999/").status_code == 404


def test_replay_shows_what_the_model_was_given_and_checks_it(trail: dict) -> None:
    event = trail["event"]
    page = client_for(trail["aud"]).get(f"/audit/{event.id}/").content.decode()
    assert "Can either party terminate?" in page and "gpt-oss-120b" in page
    assert "text matches its SHA-256" in page and "matches the stored answer" in page
    assert PASSAGE not in page  # the auditor is not a member of the matter: records, not passages

    Membership.objects.create(matter=trail["acme"], user=trail["aud"], role=Role.VIEWER)
    assert PASSAGE.replace("'", "&#x27;") in client_for(trail["aud"]).get(f"/audit/{event.id}/").content.decode()

    answer = Answer.objects.get()
    answer.sources = [{**answer.sources[0], "text": "Neither party may terminate."}]
    answer.save()
    assert "text does not match its SHA-256" in client_for(trail["aud"]).get(f"/audit/{event.id}/").content.decode()
    assert AuditEvent.objects.filter(action="audit.replay", actor="web:aud").count() == 3


def replayed(trail: dict) -> tuple[AuditEvent, str, str]:
    """The latest answer's audit event, its replay page and the audit list of answers, as the auditor sees them."""
    event = AuditEvent.objects.filter(action="question.answer").latest("id")
    auditor = client_for(trail["aud"])
    return (event, auditor.get(f"/audit/{event.id}/").content.decode(),
            auditor.get("/audit/", {"action": "question.answer"}).content.decode())


def second_question(trail: dict) -> tuple[Question, PackedSource]:
    """Another question of ann's, and the passage its answer is packed with."""
    question = Question.objects.create(matter=trail["acme"], user=trail["ann"], actor="web:ann",
                                       text="Who may terminate?", effort="low", budget=16384)
    return question, PackedSource(label="S1", document_id=7, path="msa.txt", page=None, start=0, end=len(PASSAGE),
                                  text=PASSAGE, score=1.0, tokens=15, version="v1")


@pytest.mark.parametrize("sent", [True, False])
def test_replay_of_a_failed_answer_says_whether_the_model_was_sent_its_passages(trail: dict, sent: bool) -> None:
    question, source = second_question(trail)
    found = AnswerResult("error", "", Packing([source], [], 20, 16000), model="gpt-oss-120b" if sent else "",
                         notes=["The model did not answer"])
    record_answer(question, None, time.monotonic(), error="the language model timed out", found=found, was_sent=sent,
                  error_kind="timeout")

    event, page, listed = replayed(trail)

    assert event.detail["sources_sent"] is sent and event.detail["sources"][0]["path"] == "msa.txt"
    assert listed.count('class="badge bad" title="the language model timed out">failed</span>') == 1  # not the answered one
    assert listed.count('<span class="muted">timeout: the language model timed out</span>') == 1  # not only on hover
    assert "Failed (timeout):</strong> the language model timed out" in page and "text matches its SHA-256" in page
    assert f"The asker was told: “{PLAIN['timeout']}”" in page  # the plain words beside the operator's
    assert "<strong>Answer</strong> none was written" in page and "none is stored either" in page
    assert f'question {question.id} (<a href="/audit/?question={question.id}">all its events</a>)' in page
    if sent:
        assert "What the model was sent before it failed" in page and "model gpt-oss-120b" in page
    else:
        assert "Passages found, not sent to the model (shown in place of an answer)" in page
        assert "passages not sent to the model" in page


@pytest.mark.parametrize("sent", [True, False])
def test_replay_of_a_stopped_answer_shows_what_was_written_and_what_was_sent(trail: dict, sent: bool) -> None:
    question, source = second_question(trail)
    note = ("Stopped by the asker before the model finished: the answer is incomplete." if sent else
            "Stopped by the asker before the model was asked: nothing was sent to it.")
    stopped = AnswerResult("stopped", "Either party may" if sent else "", Packing([source], [], 20, 16000),
                           model="gpt-oss-120b" if sent else "", notes=[note])
    record_answer(question, stopped, time.monotonic(), was_sent=sent)

    event, page, listed = replayed(trail)

    assert event.detail["mode"] == "stopped" and event.detail["sources_sent"] is sent and not event.detail["error"]
    assert listed.count(f'class="badge" title="{note}">stopped</span>') == 1 and "failed</span>" not in listed
    assert f'<span class="badge">stopped</span> {note}' in page and "Failed:" not in page
    assert ("matches the stored answer" if sent else "none is stored either") in page
    assert "text matches its SHA-256" in page and "The asker was told" not in page
    if sent:
        assert "What the model was sent before it was stopped" in page and "model gpt-oss-120b" in page
    else:
        assert "Passages found, not sent to the model (shown in place of an answer)" in page
        assert "nothing sent to the model" in page


def test_replay_checks_a_turn_sent_before_it_had_an_answer_and_names_one_gone(trail: dict) -> None:
    from docqa.actions import NO_ANSWER
    from docqa.models import sha256_text

    earlier, source = second_question(trail)  # never answered: a follow-up sent it as NO_ANSWER
    later = Question.objects.create(matter=trail["acme"], user=trail["ann"], actor="web:ann", text="And then?",
                                    effort="low", budget=16384)
    result = AnswerResult("llm", "Either party may [S1].", Packing([source], [], 20, 16000), model="gpt-oss-120b")
    turns = [{"question": earlier.id, "question_sha256": sha256_text(earlier.text), "answer_sha256": sha256_text(NO_ANSWER)},
             {"question": 999999, "question_sha256": "0" * 64, "answer_sha256": "0" * 64}]
    record_answer(later, result, time.monotonic(), turns=turns)

    event, page, _ = replayed(trail)
    assert event.detail["turns_sent"] == turns and "Earlier turns sent with the question (2)" in page
    assert "question 999999" in page and page.count("no longer stored</span>") == 1
    assert "does not match its SHA-256" not in page and page.count("matches its SHA-256</span>") == 2  # + the source


def test_exports_stream_the_filtered_rows_and_are_audited(trail: dict) -> None:
    auditor = client_for(trail["aud"])

    as_csv = auditor.get("/audit/export.csv", {"matter": "acme"})
    rows = list(csv.reader(io.StringIO(b"".join(as_csv.streaming_content).decode())))
    as_jsonl = auditor.get("/audit/export.jsonl", {"q": "terminate"})
    records = [json.loads(line) for line in b"".join(as_jsonl.streaming_content).decode().splitlines()]

    assert as_csv.streaming and rows[0][:5] == ["id", "created_at", "actor", "matter", "action"]
    assert {r[4] for r in rows[1:]} >= {"question.answer", "ingest.finish"} and all(r[3] == "acme" for r in rows[1:])
    # Newest first; the export's own event comes first, written before the rows are read.
    assert [r["action"] for r in records] == ["audit.export", "question.answer"]
    assert records[1]["detail"]["sources"][0]["sha256"] and records[1]["hash"]
    exports = AuditEvent.objects.filter(action="audit.export").values_list("detail", flat=True)
    assert list(exports) == [{"format": "csv", "filters": {"matter": "acme"}},
                             {"format": "jsonl", "filters": {"q": "terminate"}}]


def test_export_and_paging_links_carry_the_filters_encoded_and_a_bad_date_is_refused(trail: dict) -> None:
    """A search for "Smith & Co #4" exported everything (the link cut it at "&", the "#" started
    a fragment), and a date that is not one was dropped, listing and exporting the whole trail."""
    from urllib.parse import parse_qs, urlsplit

    from docqa.actions import do_create_token

    auditor = client_for(trail["aud"])
    page = auditor.get("/audit/", {"q": "Smith & Co #4", "matter": "acme"})
    links = [a for a in page.content.decode().split('href="') if a.startswith("/audit/export.csv")]
    href = links[0].split('"')[0].replace("&amp;", "&")
    assert parse_qs(urlsplit(href).query) == {"matter": ["acme"], "q": ["Smith & Co #4"]}
    exported = b"".join(auditor.get(href).streaming_content).decode().splitlines()
    assert len(exported) == 1  # the header: nothing recorded says "Smith & Co #4"

    for _ in range(60):  # two pages: "older" keeps the filter
        record_audit("cli:ops", "ingest.finish", trail["acme"], {"counts": {"indexed": 1}})
    listed = auditor.get("/audit/", {"action": "ingest.finish"}).content.decode()
    assert 'href="?action=ingest.finish&amp;page=2"' in listed

    api = Client(headers={"Authorization": f"Bearer {do_create_token(trail['aud'], 'audit', 'test')}"})
    before = AuditEvent.objects.count()
    refused = auditor.get("/audit/", {"since": "last tuesday"})
    assert refused.status_code == 200 and refused.context["page"].paginator.count == 0
    assert "From (since): &#x27;last tuesday&#x27; is not a date; write it as YYYY-MM-DD" in refused.content.decode()
    assert 'value="last tuesday"' in refused.content.decode()  # kept, to be corrected
    export = auditor.get("/audit/export.jsonl", {"until": "2026-13-40"})
    assert export.status_code == 400 and b"To (until): '2026-13-40' is not a date" in export.content
    for url in ("/api/v1/audit/events", "/api/v1/audit/export.jsonl"):
        response = api.get(url, {"since": "yesterday"})
        assert response.status_code == 400 and "is not a date" in response.json()["detail"]
    assert AuditEvent.objects.count() == before  # a refused export is not recorded as one


@pytest.mark.parametrize("store", [False, True])
def test_reasoning_is_kept_only_when_allowed_and_never_in_the_trail(settings: object, store: bool) -> None:
    settings.STORE_REASONING = store  # type: ignore[attr-defined]
    acme = Matter.objects.create(slug="acme", name="Acme")
    question = Question.objects.create(matter=acme, actor="web:ann", text="Who pays?", effort="high", budget=16384)
    source = PackedSource(label="S1", document_id=7, path="msa.txt", page=None, start=0, end=9, text="Beta pays.",
                          score=1.0, tokens=3, version="v1")
    result = AnswerResult("llm", "Beta pays [S1].", Packing([source], [], 10, 16000), model="gpt-oss-120b",
                          reasoning="The user asks who pays; S1 says Beta.")
    record_answer(question, result, time.monotonic())

    assert Answer.objects.get().reasoning == ("The user asks who pays; S1 says Beta." if store else "")
    assert "who pays; S1" not in json.dumps(list(AuditEvent.objects.values_list("detail", flat=True)))
