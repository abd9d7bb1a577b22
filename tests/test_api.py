"""The JSON API and the OpenAI-compatible endpoint: tokens, the web UI's authorization, real answers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from docqa.actions import do_create_token
from docqa.faults import PLAIN
from docqa.models import Answer, AuditEvent, Matter, Membership, Role
from inference.answer import stopped_note
from tests.test_authorization import USERS, build_world

pytestmark = pytest.mark.django_db


def bearer(token: str | None) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    built = build_world(tmp_path)
    built["tokens"] = {name: do_create_token(user, "test", "test") for name, user in built["users"].items()}
    built["tokens"]["anonymous"] = None
    return built


def call(world: dict[str, Any], user: str, method: str, path: str, body: Any = None) -> Any:
    client = Client()
    url = path.format(**world)
    headers = bearer(world["tokens"][user])
    if method == "GET":
        return client.get(url, **headers)
    return client.post(url, json.dumps(body or {}), content_type="application/json", **headers)


OK, GONE, FORBIDDEN, DENIED, BAD = 200, 404, 403, 401, 400
READ = {"anonymous": DENIED, "viewer": OK, "editor": OK, "manager": OK, "auditor": GONE, "excluded": GONE,
        "outsider": GONE}
EDIT = {**READ, "viewer": GONE}
AUDIT = {"anonymous": DENIED, "viewer": FORBIDDEN, "editor": FORBIDDEN, "manager": FORBIDDEN, "auditor": OK,
         "excluded": FORBIDDEN, "outsider": FORBIDDEN}
MATRIX = [
    ("GET", "/api/v1/matters/acme/sources", READ),
    ("POST", "/api/v1/matters/acme/sources", {**EDIT, "editor": BAD, "manager": BAD}),  # no root given: 400
    ("GET", "/api/v1/matters/acme/runs", READ),
    ("GET", "/api/v1/matters/acme/runs/{acme_run}", READ),
    ("GET", "/api/v1/matters/acme/runs/{acme_run}/failures", READ),
    ("POST", "/api/v1/matters/acme/runs/{acme_run}/cancel", EDIT),
    ("POST", "/api/v1/matters/acme/runs/{acme_run}/retry", {**EDIT, "editor": BAD, "manager": BAD}),  # none failed
    ("POST", "/api/v1/matters/acme/runs/{acme_run}/resume", {**EDIT, "editor": BAD, "manager": BAD}),  # none left
    ("GET", "/api/v1/matters/acme/documents", READ),
    ("GET", "/api/v1/matters/acme/documents/{acme_doc}", READ),
    ("GET", "/api/v1/matters/acme/questions", READ),  # each reader's own questions only
    ("GET", "/api/v1/matters/acme/questions/999999", {**READ, "viewer": GONE, "editor": GONE, "manager": GONE}),
    ("POST", "/api/v1/matters/acme/questions/999999/stop", {**READ, "viewer": GONE, "editor": GONE, "manager": GONE}),
    ("GET", "/api/v1/audit/events", AUDIT),
    ("GET", "/api/v1/audit/export.jsonl", AUDIT),
    # Ids of one matter asked for under another the user may read: nothing.
    ("GET", "/api/v1/matters/beta/runs/{acme_run}", {**READ, "viewer": GONE, "editor": GONE, "manager": GONE}),
    ("GET", "/api/v1/matters/acme/documents/{beta_doc}", {**READ, "viewer": GONE, "editor": GONE, "manager": GONE}),
]


@pytest.mark.parametrize("method, path, expected", MATRIX, ids=[f"{m} {p}" for m, p, _ in MATRIX])
@pytest.mark.parametrize("user", USERS)
def test_every_api_call_against_every_user(world: dict[str, Any], method: str, path: str, expected: dict,
                                           user: str) -> None:
    body = {"root": ""} if path.endswith("/sources") and method == "POST" else None
    response = call(world, user, method, path, body)
    assert response.status_code == expected[user], (user, path, response.status_code, response.content[:200])


def test_matters_and_models_list_only_what_the_token_may_read(world: dict[str, Any]) -> None:
    for user, visible in (("viewer", ["acme"]), ("excluded", []), ("auditor", []), ("outsider", ["beta"])):
        listed = call(world, user, "GET", "/api/v1/matters").json()
        assert [m["slug"] for m in listed] == visible, user
        models = call(world, user, "GET", "/v1/models").json()["data"]
        assert [m["id"] for m in models] == [f"docqa/{s}" for s in visible], user
    assert call(world, "anonymous", "GET", "/v1/models").json()["error"]["code"] == "invalid_api_key"


def test_tokens_are_created_listed_and_revoked_by_command(world: dict[str, Any]) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("token", "create", "--user", "viewer", "--name", "laptop", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith("dq_") and "shown once" in err.getvalue()
    client = Client()
    assert client.get("/api/v1/matters", **bearer(token)).status_code == 200
    listing = io.StringIO()
    call_command("token", "list", "--user", "viewer", stdout=listing)
    line = next(li for li in listing.getvalue().splitlines() if "laptop" in li)
    assert token not in listing.getvalue() and "active" in line and "last used" in line
    call_command("token", "revoke", line.split()[0], stdout=io.StringIO())
    assert client.get("/api/v1/matters", **bearer(token)).status_code == 401
    assert client.get("/api/v1/matters", **bearer(token[:-1] + "x")).status_code == 401
    actions = list(AuditEvent.objects.filter(action__startswith="token.").values_list("action", flat=True))
    assert actions[-2:] == ["token.create", "token.revoke"]
    with pytest.raises(CommandError, match="no user 'ghost'"):  # listed nothing, as for a user without tokens
        call_command("token", "list", "--user", "ghost", stdout=io.StringIO())
    User.objects.create_user("newcomer")
    empty, said = io.StringIO(), io.StringIO()
    call_command("token", "list", "--user", "newcomer", stdout=empty, stderr=said)
    assert empty.getvalue() == "" and "no tokens for newcomer; `manage.py token create --user NAME` makes one" in said.getvalue()


def test_the_audit_api_filters_and_exports(world: dict[str, Any]) -> None:
    page = call(world, "auditor", "GET", "/api/v1/audit/events?action=question&limit=5").json()
    assert page["count"] == 1 and page["items"][0]["action"] == "question.answer"
    one = call(world, "auditor", "GET", f"/api/v1/audit/events?question={page['items'][0]['detail']['question']}")
    assert one.json()["count"] == 1 and call(world, "auditor", "GET", "/api/v1/audit/events?question=1234567").json()[
        "count"] == 0
    export = call(world, "auditor", "GET", "/api/v1/audit/export.jsonl?action=question")
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["action"] == "question.answer"
    assert AuditEvent.objects.filter(action="audit.export", actor="api:auditor").exists()


@pytest.fixture
def lease(data_dir: Path, tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lease.txt").write_text(
        "LEASE AGREEMENT\n\nThe tenant may terminate this lease on sixty (60) days' written notice.\n\n"
        "The monthly rent is two thousand dollars, payable on the first day of each month.\n")
    call_command("ingest", str(folder), "--matter", "lease", stdout=io.StringIO())
    ann = User.objects.create_user("ann", password="pw-123456")
    bob = User.objects.create_user("bob", password="pw-123456")
    for user in (ann, bob):
        Membership.objects.create(matter=Matter.objects.get(slug="lease"), user=user, role=Role.VIEWER)
    return {"ann": do_create_token(ann, "t", "t"), "bob": do_create_token(bob, "t", "t"), "folder": folder}


QUESTION = "How much notice does the tenant need to terminate?"


@pytest.mark.django_db(transaction=True)
def test_ask_through_the_api_with_citations_and_private_answers(lease: dict[str, Any], standin: Any) -> None:
    client = Client()
    answer = client.post("/api/v1/matters/lease/questions", json.dumps({"question": QUESTION, "effort": "low"}),
                         content_type="application/json", **bearer(lease["ann"])).json()
    assert answer["mode"] == "llm" and "sixty (60) days" in answer["answer"]
    assert answer["citations"][0]["status"] == "quote verified" and answer["citations"][0]["path"] == "lease.txt"
    assert answer["sources"][0]["path"] == "lease.txt" and answer["usage"]["prompt_tokens"] > 0
    again = client.get(f"/api/v1/matters/lease/questions/{answer['question']}", **bearer(lease["ann"])).json()
    assert again["answer"] == answer["answer"]
    assert set(again["citations"][0]) >= {"document", "version", "page", "section", "start", "end"}
    assert again["notes"] == []
    assert client.get(f"/api/v1/matters/lease/questions/{answer['question']}", **bearer(lease["bob"])).status_code == 404
    follow = client.post("/api/v1/matters/lease/questions",
                         json.dumps({"question": "And the rent?", "conversation": answer["conversation"]}),
                         content_type="application/json", **bearer(lease["bob"]))
    assert follow.status_code == 404  # someone else's conversation
    stream = client.post("/api/v1/matters/lease/questions/stream", json.dumps({"question": QUESTION, "effort": "low"}),
                         content_type="application/json", **bearer(lease["ann"]))
    body = b"".join(stream.streaming_content).decode()
    assert "event: status" in body and body.count("event: token") > 3 and "event: done" in body
    docs = client.get("/api/v1/matters/lease/documents", **bearer(lease["ann"])).json()
    text = client.get(f"/api/v1/matters/lease/documents/{docs['items'][0]['id']}", **bearer(lease["ann"])).json()
    assert "sixty (60) days" in text["text"]
    assert AuditEvent.objects.filter(action="document.view", actor="api:ann").exists()
    assert AuditEvent.objects.filter(action="question.answer", actor="api:ann").count() == 2


def asked_in_a_thread(path: str, body: dict[str, Any], token: str, standin: Any) -> tuple[Any, list[Any]]:
    """POST a whole-answer question from a thread of its own, and wait until the model writes:
    the thread, and the list its reply lands in."""
    import threading
    import time

    from django.db import connections

    replies: list[Any] = []

    def ask() -> None:
        try:
            replies.append(Client().post(path, json.dumps(body), content_type="application/json", **bearer(token)))
        finally:
            connections.close_all()  # this thread's own

    asking = threading.Thread(target=ask)
    asking.start()
    deadline = time.monotonic() + 20
    while not standin.requests and time.monotonic() < deadline:  # the model is writing
        time.sleep(0.05)
    return asking, replies


@pytest.mark.django_db(transaction=True)
def test_a_question_is_stopped_through_the_api_by_its_asker_only(lease: dict[str, Any], standin: Any) -> None:
    """The stop call reaches an answer in another request (here the whole-answer POST, waiting in
    a thread): it hangs up on the model and comes back with what was written, mode `stopped`."""
    from docqa.models import Question

    standin.mode, standin.delay = "slow", 0.2
    asking, answered = asked_in_a_thread("/api/v1/matters/lease/questions", {"question": QUESTION, "effort": "low"},
                                         lease["ann"], standin)
    asked = Question.objects.get(text=QUESTION)
    client = Client()
    # The asker finds it from another connection, as the whole-answer POST has not returned its id.
    pending = client.get("/api/v1/matters/lease/questions?pending=true", **bearer(lease["ann"])).json()
    assert pending["count"] == 1 and pending["items"][0]["question"] == asked.id
    assert pending["items"][0]["mode"] == "pending" and not pending["items"][0]["stop_requested"]
    assert client.get("/api/v1/matters/lease/questions", **bearer(lease["bob"])).json() == {"count": 0, "items": []}
    path = f"/api/v1/matters/lease/questions/{asked.id}/stop"
    assert client.post(path, **bearer(lease["bob"])).status_code == 404  # not bob's question
    assert client.post(path, **bearer(lease["ann"])).json() == {
        "detail": "stopping", "question": asked.id, "conversation": asked.conversation_id}
    asking.join(20)
    stopped = answered[0].json()
    assert answered[0].status_code == 200 and stopped["mode"] == "stopped" and stopped["sources"]
    # Said as it stood: what was written is incomplete, or (stopped before the first token) none was.
    assert stopped["notes"] == [stopped_note("Stopped by the asker", bool(stopped["answer"]))]
    assert client.post(path, **bearer(lease["ann"])).status_code == 409  # nothing left to stop
    assert AuditEvent.objects.get(action="question.stop").actor == "api:ann"
    listed = client.get(f"/api/v1/matters/lease/questions?conversation={asked.conversation_id}",
                        **bearer(lease["ann"])).json()
    assert [(q["question"], q["mode"], q["stop_requested"]) for q in listed["items"]] == [(asked.id, "stopped", True)]
    assert client.get("/api/v1/matters/lease/questions?pending=true", **bearer(lease["ann"])).json()["count"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["down", "timeout"])
def test_when_the_model_fails_the_passages_found_come_with_the_error(lease: dict[str, Any], standin: Any,
                                                                    settings: Any, fault: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Down before anything is sent, or timing out after: the question fails (502/504, a non-zero
    exit) and names itself, and what the search found is kept and shown, said to be no answer."""
    if fault == "down":
        standin.stop()
    else:
        standin.mode, standin.delay, settings.LLM_TIMEOUT = "slow", 1.0, 0.5
    client = Client()

    response = client.post("/api/v1/matters/lease/questions", json.dumps({"question": QUESTION, "effort": "low"}),
                           content_type="application/json", **bearer(lease["ann"]))

    assert response.status_code == (502 if fault == "down" else 504)
    failed = response.json()
    assert failed["question"] and failed["conversation"]
    stored = client.get(f"/api/v1/matters/lease/questions/{failed['question']}", **bearer(lease["ann"])).json()
    assert stored["mode"] == "error" and stored["error"] == failed["detail"] and stored["answer"] == ""
    # The operator's message, and the plain words the web page shows its asker, by kind of fault.
    kind = "unavailable" if fault == "down" else "timeout"
    assert failed["kind"] == stored["error_kind"] == kind and failed["plain"] == stored["error_plain"] == PLAIN[kind]
    assert stored["sources"][0]["path"] == "lease.txt" and "sixty (60) days" in stored["sources"][0]["text"]
    assert stored["citations"] == [] and stored["notes"][0].startswith(
        "The model could not be asked" if fault == "down" else "The model gave no answer")
    answered = AuditEvent.objects.filter(action="question.answer").latest("id").detail
    assert answered["sources_sent"] is (fault == "timeout") and bool(answered["model"]) is (fault == "timeout")
    out = io.StringIO()
    with pytest.raises(CommandError, match="unreachable" if fault == "down" else "in time|within"):
        call_command("ask", "--matter", "lease", "--json", "--budget", "2000", QUESTION, stdout=out)
    shown = json.loads(out.getvalue())
    assert shown["error"] and shown["mode"] == "error" and shown["sources"][0]["label"] == "S1"
    assert shown["error_kind"] == kind
    assert shown["usage"]["budget"] == 2000 and shown["conversation"]
    text = io.StringIO()
    with pytest.raises(CommandError):
        call_command("ask", "--matter", "lease", QUESTION, stdout=text)
    assert "Note: The model " in text.getvalue() and "[S1] lease.txt" in text.getvalue()
    assert not text.getvalue().startswith("\n")  # no empty answer line before the note
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTION + "\n"))
    batch = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 questions failed"):  # after every line is written
        call_command("ask", "--matter", "lease", "--batch", stdout=batch)
    line = json.loads(batch.getvalue())
    assert line["id"] == 1 and line["error"] and line["sources"][0]["path"] == "lease.txt"


@pytest.mark.django_db(transaction=True)
def test_a_whole_openai_answer_is_found_as_pending_and_stopped_through_the_api(lease: dict[str, Any],
                                                                               standin: Any) -> None:
    """A non-streaming OpenAI-compatible call returns nothing until the answer is whole: its asker
    finds it with the REST API's pending list and stops it there; the reply says it was stopped."""
    import time

    standin.mode, standin.delay = "slow", 0.2
    asking, replies = asked_in_a_thread("/v1/chat/completions", {
        "model": "docqa/lease", "messages": [{"role": "user", "content": QUESTION}], "reasoning_effort": "low"},
        lease["ann"], standin)
    pending = Client().get("/api/v1/matters/lease/questions?pending=true", **bearer(lease["ann"])).json()
    assert pending["count"] == 1
    asked = pending["items"][0]["question"]
    assert Client().post(f"/api/v1/matters/lease/questions/{asked}/stop", **bearer(lease["ann"])).status_code == 202
    asking.join(20)
    reply = replies[0].json()
    content = reply["choices"][0]["message"]["content"]
    assert replies[0].status_code == 200 and reply["docqa"]["question"] == asked and reply["docqa"]["mode"] == "stopped"
    assert "Stopped by the asker before the model" in content
    deadline = time.monotonic() + 10
    while not standin.hangups and time.monotonic() < deadline:  # the model server sees the hang-up when it writes
        time.sleep(0.05)
    assert standin.hangups == 1


@pytest.mark.django_db(transaction=True)
def test_an_openai_client_without_a_model_gets_the_passages_in_the_text(lease: dict[str, Any], settings: Any) -> None:
    """A chat client shows only the text: a search-only reply lists the passages its note speaks of."""
    settings.LLM_BASE_URL = ""
    reply = Client().post("/v1/chat/completions", json.dumps({"model": "docqa/lease", "messages": [
        {"role": "user", "content": QUESTION}]}), content_type="application/json", **bearer(lease["ann"])).json()

    content = reply["choices"][0]["message"]["content"]
    assert reply["docqa"]["mode"] == "search" and content.startswith("No language model is connected")
    assert "DOCQA_LLM_BASE_URL" not in content  # an operator's setting, not the asker's business
    assert "\n\nPassages:\n[S1] lease.txt § LEASE AGREEMENT\nLEASE AGREEMENT The tenant" in content and "sixty (60) days" in content


@pytest.mark.django_db(transaction=True)
def test_scope_is_a_list_of_paths_or_one_path_as_a_string(lease: dict[str, Any], settings: Any) -> None:
    settings.LLM_BASE_URL = ""
    client = Client()
    for scope in (["lease.txt"], "lease.txt"):
        found = client.post("/api/v1/matters/lease/questions", json.dumps({"question": QUESTION, "scope": scope}),
                            content_type="application/json", **bearer(lease["ann"]))
        assert found.status_code == 200 and [s["path"] for s in found.json()["sources"]] == ["lease.txt"]
        assert found.json()["scope"] == ["lease.txt"]  # and GET says so, as the web page does
        again = client.get(f"/api/v1/matters/lease/questions/{found.json()['question']}", **bearer(lease["ann"]))
        assert again.json()["scope"] == ["lease.txt"]
    nowhere = client.post("/api/v1/matters/lease/questions", json.dumps({"question": QUESTION, "scope": "annex"}),
                          content_type="application/json", **bearer(lease["ann"]))
    assert nowhere.status_code == 400 and "is under annex" in nowhere.json()["detail"]


def test_a_stop_that_came_as_the_answer_was_finished_is_told_to_an_openai_client() -> None:
    from types import SimpleNamespace

    from docqa.actions import LATE_STOP_NOTE
    from docqa.openai_compat import stopped_notes

    assert stopped_notes(SimpleNamespace(mode="llm", notes=["Other.", LATE_STOP_NOTE])) == f"\n\n{LATE_STOP_NOTE}"
    assert stopped_notes(SimpleNamespace(mode="llm", notes=["Other."])) == ""


@pytest.mark.django_db(transaction=True)
def test_an_openai_client_asks_a_matter_and_gets_the_citations(lease: dict[str, Any], standin: Any) -> None:
    client = Client()
    request = {"model": "docqa/lease", "messages": [{"role": "user", "content": QUESTION}],
               "reasoning_effort": "low"}
    reply = client.post("/v1/chat/completions", json.dumps(request), content_type="application/json",
                        **bearer(lease["ann"])).json()
    content = reply["choices"][0]["message"]["content"]
    assert reply["object"] == "chat.completion" and reply["model"] == "docqa/lease"
    assert "sixty (60) days" in content and "\n\nSources:\n[S1] lease.txt: “" in content and "(quote verified)" in content
    assert reply["citations"][0]["verified"] and reply["usage"]["total_tokens"] > 0
    assert reply["docqa"]["mode"] == "llm" and reply["id"] == f"chatcmpl-docqa-{reply['docqa']['question']}"

    streamed = client.post("/v1/chat/completions", json.dumps({**request, "stream": True,
                                                                "messages": [*request["messages"],
                                                                             {"role": "assistant", "content": content},
                                                                             {"role": "user", "content": "And the rent?"}]}),
                           content_type="application/json", **bearer(lease["ann"]))
    events = [line[6:] for line in b"".join(streamed.streaming_content).decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks) and len(chunks) > 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "citations" in chunks[-1]
    assert chunks[-1]["docqa"]["mode"] == "llm" and chunks[-1]["docqa"]["question"]
    assert "Sources:" in "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    asked = AuditEvent.objects.filter(action="question.ask", actor="api:ann").order_by("-id").first()
    assert asked is not None and asked.detail["history"] == [{"text": QUESTION, "answer": content}]  # what it was sent
    # The answer's record proves which turns went with it; a replay checks them against that event.
    from docqa.audit_views import replayed_turns
    from docqa.models import sha256_text

    answered = AuditEvent.objects.filter(action="question.answer", actor="api:ann").latest("id")
    assert answered.detail["turns_sent"] == [{"question": None, "question_sha256": sha256_text(QUESTION),
                                              "answer_sha256": sha256_text(content)}]
    replayed = replayed_turns(answered.detail, answered.matter, may_read=True)
    assert replayed == [{"question": None, "event": None, "matches": True, "text": QUESTION, "answer": content,
                         "expired": False, "missing": False}]

    too_long = {**request, "messages": [{"role": "user", "content": "Who pays? " + " " * 20_000 + "; b?"}]}
    for bad, status, code in (({**request, "model": "docqa/nope"}, 404, "model_not_found"),
                              ({**request, "messages": []}, 400, None),
                              (too_long, 400, None)):
        response = client.post("/v1/chat/completions", json.dumps(bad), content_type="application/json",
                               **bearer(lease["ann"]))
        assert response.status_code == status and response.json()["error"]["code"] == code


def test_people_manage_their_own_tokens_in_the_web_ui(world: dict[str, Any]) -> None:
    viewer, outsider = Client(), Client()
    viewer.force_login(world["users"]["viewer"])
    outsider.force_login(world["users"]["outsider"])
    assert Client().get("/account/tokens/").status_code == 302  # sign in first
    page = viewer.post("/account/tokens/new", {"name": "chat client"}, follow=True).content.decode()
    token = page.split('<code id="new-token">')[1].split("</code>")[0]
    assert "copy it now" in page and "chat client" in page
    assert token not in viewer.get("/account/tokens/").content.decode()  # shown once only
    assert Client().get("/v1/models", **bearer(token)).json()["data"][0]["id"] == "docqa/acme"
    from docqa.models import ApiToken

    mine = ApiToken.objects.get(name="chat client")
    outsider.post(f"/account/tokens/{mine.id}/revoke")  # not theirs: nothing happens
    assert Client().get("/api/v1/matters", **bearer(token)).status_code == 200
    viewer.post(f"/account/tokens/{mine.id}/revoke")
    assert Client().get("/api/v1/matters", **bearer(token)).status_code == 401
    assert list(AuditEvent.objects.filter(actor="web:viewer", action__startswith="token.")
                .values_list("action", flat=True)) == ["token.create", "token.revoke"]


def test_nul_characters_are_refused_clearly(world: dict[str, Any]) -> None:
    """PostgreSQL text cannot hold NUL: a question or filter with one is a 400, never a 500."""
    asked = call(world, "viewer", "POST", "/api/v1/matters/acme/questions", {"question": "rent\u0000?"})
    assert asked.status_code == 400 and "NUL" in asked.json()["detail"]
    assert call(world, "viewer", "GET", "/api/v1/matters/acme/documents?folder=a%00b").status_code == 400
    huge = call(world, "viewer", "GET", "/api/v1/matters/acme/runs/99999999999999999999999")
    assert huge.status_code in (404, 422)
    assert Client().get("/m/acme/runs/99999999999999999999999/").status_code in (302, 404)


@pytest.mark.django_db(transaction=True)
def test_a_window_too_small_for_the_effort_is_a_400_in_both_apis(lease: dict[str, Any], standin: Any) -> None:
    """The model's window leaves no room for the output reserved at that effort: a request the
    asker can change (a lower effort), so 400 in the REST API and the OpenAI-compatible one alike,
    with its kind and plain words beside the operator's message."""
    standin.max_model_len = 6000  # medium effort reserves 8,192 tokens for the output
    client = Client()
    rest = client.post("/api/v1/matters/lease/questions", json.dumps({"question": QUESTION, "effort": "medium"}),
                       content_type="application/json", **bearer(lease["ann"]))
    assert rest.status_code == 400 and rest.json()["kind"] == "setup" and rest.json()["plain"] == PLAIN["setup"]
    assert rest.json()["detail"] == ("the model's window (6,000 tokens) is 2,192 tokens too small for it once 8,192 "
                                     "are reserved for the output at medium effort (at least 512 are needed): lower "
                                     "DOCQA_LLM_RESERVED_OUTPUT or the effort")
    openai = client.post("/v1/chat/completions", json.dumps({"model": "docqa/lease", "reasoning_effort": "medium",
                                                             "messages": [{"role": "user", "content": QUESTION}]}),
                         content_type="application/json", **bearer(lease["ann"]))
    assert openai.status_code == 400 and "tokens too small for it" in openai.json()["error"]["message"]
    named = openai.json()["docqa"]  # the recorded question, whose stored answer holds the error
    assert named["mode"] == "error" and Answer.objects.get(question_id=named["question"]).error_kind == "setup"
    streamed = client.post("/v1/chat/completions", json.dumps({"model": "docqa/lease", "reasoning_effort": "medium",
                                                               "stream": True, "messages": [
                                                                   {"role": "user", "content": QUESTION}]}),
                           content_type="application/json", **bearer(lease["ann"]))
    failed = [json.loads(line[6:]) for line in b"".join(streamed.streaming_content).decode().splitlines()
              if line.startswith("data: {")][-1]
    assert "tokens too small for it" in failed["error"]["message"] and failed["docqa"]["question"] > named["question"]
    # The API's stream names the kind and the plain words too, with the operator's message.
    streamed = client.post("/api/v1/matters/lease/questions/stream",
                           json.dumps({"question": QUESTION, "effort": "medium"}),
                           content_type="application/json", **bearer(lease["ann"]))
    body = b"".join(streamed.streaming_content).decode()
    error = json.loads(body.split("event: error\ndata: ", 1)[1].split("\n", 1)[0])
    assert error["kind"] == "setup" and error["plain"] == PLAIN["setup"] and "tokens too small for it" in error["message"]
    assert "detail" not in error  # ann is not staff: the message already is the operator's, and nothing more
