"""Retention and legal hold: old content becomes its hash, the chain still verifies, holds keep all."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from docqa.actions import conversation_history, do_expire, do_hold, record_answer
from docqa.models import Answer, AuditEvent, Citation, Matter, Question, sha256_text
from docqa.retention import expire_content
from tests.test_audit_review import PASSAGE, client_for, make_trail

pytestmark = pytest.mark.django_db
LATER = timezone.now() + timedelta(days=40)


@pytest.fixture
def trail() -> dict[str, object]:
    return make_trail()


def second_matter_answer(held: bool) -> Question:
    """Another matter's answered question, like the fixture's; under legal hold when `held`."""
    beta = Matter.objects.create(slug="beta", name="Beta")
    if held:
        do_hold(beta, "litigation expected (ref. 2026-14)", "cli:gc")
    question = Question.objects.create(matter=beta, actor="web:bo", text="Who owns the IP?", effort="low", budget=1000)
    original = Answer.objects.get(question__matter__slug="acme")
    record_answer(question, None, time.monotonic(), error="")
    Answer.objects.filter(question=question).update(text="Beta owns it [S1].", sources=original.sources)
    return question


def verify() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def test_expiry_replaces_content_by_its_hash_and_the_chain_still_verifies(trail: dict) -> None:
    held = second_matter_answer(held=True)
    question = Question.objects.get(matter__slug="acme")
    asked, answered = question.text, question.answer.text
    before = {e.id: e.hash for e in AuditEvent.objects.all()}

    report = expire_content(days=30, now=LATER)

    assert report.questions == 1 and report.held == ["beta"] and not report.unverifiable
    question.refresh_from_db()
    answer = Answer.objects.get(question=question)
    assert question.expired_at is not None
    assert question.text == f"sha256:{sha256_text(asked)}" and answer.text == f"sha256:{sha256_text(answered)}"
    assert answer.sources[0]["text"] == f"sha256:{sha256_text(PASSAGE)}"
    assert all(c.quote.startswith("sha256:") for c in Citation.objects.filter(answer=answer))
    event = AuditEvent.objects.get(action="question.answer", matter__slug="acme")
    assert event.detail["text"] == {"sha256": sha256_text(asked)}
    assert event.detail["answer"] == {"sha256": sha256_text(answered)}
    assert "expired_at" in event.detail and "terminate" not in str(event.detail)
    assert event.detail["citations"][0]["status"] == "quote verified"  # the verification stays
    # Nothing of the matter under legal hold changed, and no hash changed anywhere.
    held.refresh_from_db()
    assert held.expired_at is None and held.text == "Who owns the IP?"
    assert Answer.objects.get(question=held).text == "Beta owns it [S1]."
    assert {e.id: e.hash for e in AuditEvent.objects.filter(id__in=before)} == before
    assert "chain verified" in verify()
    # A second run finds nothing more; the follow-up context no longer carries expired turns.
    assert expire_content(days=30, now=LATER).questions == 0
    assert conversation_history(question.conversation) == []


def test_expiry_is_audited_and_off_by_default(trail: dict, settings: object) -> None:
    off = io.StringIO()
    call_command("retention", stdout=off)  # exit 0: a daily cron job with retention off is not an error
    assert off.getvalue() == "retention is off (DOCQA_RETENTION_DAYS is 0): nothing expires\n"
    with pytest.raises(CommandError, match="--days must be 1 to 36,500 \\(a hundred years\\), not -3"):
        call_command("retention", "--days", "-3", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--days must be 1 to 36,500 .*, not 100,000,000"):  # was an OverflowError
        call_command("retention", "--days", "100000000", stdout=io.StringIO())
    out = io.StringIO()
    call_command("retention", "--days", "1", "--dry-run", stdout=out)
    assert "would expire: 0 question(s)" in out.getvalue()  # nothing is a day old yet
    settings.RETENTION_DAYS = 30  # type: ignore[attr-defined]
    report = do_expire("cli:ops")
    assert report.questions == 0
    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None and event.action == "retention.expire" and event.detail["questions"] == 0


def test_legal_hold_is_managed_by_command_and_audited(trail: dict) -> None:
    from django.contrib.auth.models import User

    User.objects.create_superuser("gc", password="pw-123456")
    with pytest.raises(CommandError, match="needs a reason"):
        call_command("matter", "hold", "acme", stdout=io.StringIO())
    call_command("matter", "hold", "acme", "--reason", "subpoena 17", "--actor", "gc", stdout=io.StringIO())
    listing = io.StringIO()
    call_command("matter", "list", stdout=listing)
    assert "LEGAL HOLD: subpoena 17" in listing.getvalue()
    assert expire_content(days=30, now=LATER).questions == 0  # held: nothing goes
    call_command("matter", "release", "acme", "--actor", "gc", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not under legal hold"):
        call_command("matter", "release", "acme", stdout=io.StringIO())
    assert expire_content(days=30, now=LATER).questions == 1  # released: expiry resumes
    actions = list(AuditEvent.objects.filter(actor="cli:gc").values_list("action", "detail"))
    assert actions == [("matter.hold", {"reason": "subpoena 17"}), ("matter.release", {})]


def test_the_database_allows_only_a_one_time_expiry_and_verify_catches_a_forged_one(trail: dict) -> None:
    from docqa.actions import record_audit

    record_audit("web:ann", "question.ask", trail["acme"], {"text": "Can either party terminate?"})
    expire_content(days=30, now=LATER)
    event = AuditEvent.objects.get(action="question.answer")
    # Once expired, a row cannot be changed again; nor can any hashed column change.
    for change in ({"detail": {**event.detail, "answer": "rewritten"}}, {"actor": "someone else"}):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            AuditEvent.objects.filter(id=event.id).update(**change)
    ask = AuditEvent.objects.get(action="question.ask")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():  # not marked as an expiry
        AuditEvent.objects.filter(id=ask.id).update(detail={"text": {"sha256": "0" * 64}})
    # PostgreSQL computes the sha256 itself: a forged "expiry" that swaps the content is refused,
    # and so is one that changes any other field, or touches an event that holds no question.
    fresh = record_audit("web:ann", "question.ask", trail["acme"], {"text": "what is the fee?", "effort": "low"})
    other = record_audit("cli:gc", "matter.exclude", trail["acme"], {"user": "cat", "reason": "conflict"})
    for target, detail in (
        (fresh, {"text": {"sha256": sha256_text("what is the penalty?")}, "effort": "low", "expired_at": "x"}),
        (fresh, {"text": {"sha256": sha256_text("what is the fee?")}, "effort": "high", "expired_at": "x"}),
        (other, {"expired_at": "x"}),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            AuditEvent.objects.filter(id=target.id).update(detail=detail)
    AuditEvent.objects.filter(id=fresh.id).update(  # the real expiry passes
        detail={"text": {"sha256": sha256_text("what is the fee?")}, "effort": "low", "expired_at": "x"})
    assert "chain verified" in verify()
    # Past the trigger (a database superuser, triggers off), a forged one is caught by the chain.
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE docqa_auditevent SET detail = %s WHERE id = %s",
                       ['{"user": "dan", "reason": "conflict"}', other.id])
        cursor.execute("SET session_replication_role = DEFAULT")
    with pytest.raises(CommandError, match=f"BROKEN at event {other.id} "):
        call_command("audit_verify", stdout=io.StringIO(), stderr=io.StringIO())


def test_a_replay_of_an_expired_answer_still_checks_every_hash(trail: dict) -> None:
    expire_content(days=30, now=LATER)
    page = client_for(trail["aud"]).get(f"/audit/{trail['event'].id}/").content.decode()
    assert "expired" in page and "terminate" not in page
    assert "matches the stored answer" in page and "text matches its SHA-256" in page
    review = client_for(trail["aud"]).get("/audit/?action=question").content.decode()
    assert "[expired; sha256" in review and "Can either party" not in review


def test_events_written_before_content_was_sealed_verify_and_expire(trail: dict) -> None:
    """Trails from before retention hashed content as text: audit_verify accepts those hashes, and
    retention expires them too, after a checkpoint event records their sealed hashes."""
    from docqa.actions import GENESIS

    with connection.cursor() as cursor:  # drop the trail and write one old-style event by hand
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("DELETE FROM docqa_auditevent")
        cursor.execute("SET session_replication_role = DEFAULT")
    old = AuditEvent(actor="web:ann", action="question.ask", matter=None, detail={"text": "old"}, prev_hash=GENESIS)
    old.hash = old.legacy_hash()
    old.save()
    assert "1 events, chain verified" in verify()
    report = expire_content(days=30, now=LATER)
    # A checkpoint event commits to its sealed hash first; then its text goes, and it still verifies.
    assert report.events == 1 and report.unverifiable == []
    old.refresh_from_db()
    assert old.detail["text"] == {"sha256": sha256_text("old")} and "2 events, chain verified" in verify()
    checkpoint = AuditEvent.objects.get(action="audit.reseal")
    assert checkpoint.detail == {"events": {str(old.id): old.compute_hash()}}
    # A tampered event is no legacy one: it is left as it is and named.
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE docqa_auditevent SET detail = %s WHERE id = %s", ['{"text": "changed"}', old.id])
        cursor.execute("SET session_replication_role = DEFAULT")
    with pytest.raises(CommandError, match=f"BROKEN at event {old.id} "):
        verify()


SQLITE_RETENTION = """
import os, sqlite3, django
from datetime import timedelta
os.environ["DJANGO_SETTINGS_MODULE"] = "docqa.settings"
django.setup()
from django.conf import settings
from django.utils import timezone
from docqa.actions import record_audit
from docqa.retention import expire_content
record_audit("web:ann", "question.ask", None, {"text": "Can either party terminate?", "effort": "low"})
record_audit("web:ann", "question.answer", None, {"text": "Can either party terminate?", "answer": "Yes [S1].",
             "citations": [{"label": "S1", "quote": "may terminate", "verified": True}]})
print("EXPIRED", expire_content(days=1, now=timezone.now() + timedelta(days=2)).events)
record_audit("web:ann", "question.ask", None, {"text": "What is the fee?"})
db = sqlite3.connect(settings.DATABASES["default"]["NAME"])
for sql in ("UPDATE docqa_auditevent SET detail = json_set(detail, '$.answer', 'No') WHERE id = 2",
            "UPDATE docqa_auditevent SET actor = 'x' WHERE id = 1",
            "UPDATE docqa_auditevent SET detail = json_set(detail, '$.effort', 'high', '$.expired_at', 'x') WHERE id = 3",
            "UPDATE docqa_auditevent SET detail = '{\\"text\\": {\\"sha256\\": \\"0\\"}, \\"expired_at\\": \\"x\\"}' WHERE id = 3"):
    try:
        db.execute(sql)
        print("ALLOWED", sql)
    except sqlite3.DatabaseError as exc:
        print("REFUSED", exc)
db.commit()
"""


def test_the_embedded_sqlite_database_expires_content_and_refuses_other_edits(tmp_path: Path) -> None:
    from tests.conftest import embedded_python

    run = embedded_python(tmp_path)
    assert run("manage.py", "migrate", "-v0").returncode == 0
    done = run("-c", SQLITE_RETENTION)
    assert done.returncode == 0, done.stderr
    assert "EXPIRED 2" in done.stdout
    assert done.stdout.count("REFUSED audit events are append-only (UPDATE refused)") == 3, done.stdout
    assert "ALLOWED" in done.stdout.splitlines()[-1]
    verified = run("manage.py", "audit_verify")
    # The third statement had the expiry's shape: the database let it through, the chain did not.
    assert verified.returncode == 1 and "BROKEN at event 3 " in verified.stderr, verified.stderr


def test_turns_a_client_sent_expire_with_the_question(trail: dict) -> None:
    from docqa.actions import record_audit

    sent = record_audit("api:ann", "question.ask", trail["acme"], {
        "question": 99, "text": "And the rent?", "effort": "low",
        "history": [{"text": "How much notice?", "answer": "Sixty days [S1]."}]})
    expire_content(days=30, now=LATER)
    sent.refresh_from_db()
    assert sent.detail["history"] == [{"text": {"sha256": sha256_text("How much notice?")},
                                       "answer": {"sha256": sha256_text("Sixty days [S1].")}}]
    assert "chain verified" in verify()
