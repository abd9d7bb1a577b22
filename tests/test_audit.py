"""The audit trail: every ingest and answer is recorded, hash-chained and append-only."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from docqa.actions import GENESIS, record_audit
from docqa.models import AuditEvent, Matter

pytestmark = pytest.mark.django_db


def test_audit_events_chain_each_hash_to_the_previous() -> None:
    matter = Matter.objects.create(slug="m", name="m")
    for i in range(3):
        record_audit("tester", "test.event", matter, {"i": i})

    events = list(AuditEvent.objects.order_by("id"))

    assert events[0].prev_hash == GENESIS
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    assert all(e.hash == e.compute_hash() for e in events)


def test_audit_events_refuse_update_and_delete() -> None:
    event = record_audit("tester", "test.event", None, {})
    event.detail = {"changed": True}

    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()


def test_database_refuses_to_update_or_delete_audit_events() -> None:
    from django.db import DatabaseError, transaction

    event = record_audit("tester", "test.event", None, {"answer": "original"})

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(id=event.id).update(detail={"answer": "edited"})
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(id=event.id).delete()


def test_verify_audit_reports_an_edit_made_with_the_trigger_disabled() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    for i in range(3):
        record_audit("tester", "test.event", None, {"i": i})
    call_command("verify_audit", stdout=io.StringIO())
    edited = AuditEvent.objects.order_by("id")[1]
    with connection.cursor() as cursor:  # what only a database superuser could do
        cursor.execute("SET session_replication_role = replica")  # user triggers off
        cursor.execute("UPDATE docqa_auditevent SET detail = '{\"i\": 99}' WHERE id = %s", [edited.id])
        cursor.execute("SET session_replication_role = DEFAULT")

    with pytest.raises(CommandError, match="BROKEN"):
        call_command("verify_audit", stdout=io.StringIO(), stderr=io.StringIO())


def test_audit_verify_names_the_row_after_a_deleted_one() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    for i in range(4):
        record_audit("tester", "test.event", None, {"i": i})
    gone, after = AuditEvent.objects.order_by("id")[1:3]
    with connection.cursor() as cursor:  # a database superuser, triggers off
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("DELETE FROM docqa_auditevent WHERE id = %s", [gone.id])
        cursor.execute("SET session_replication_role = DEFAULT")

    with pytest.raises(CommandError, match=f"BROKEN at event {after.id} "):
        call_command("audit_verify", stdout=io.StringIO(), stderr=io.StringIO())


def test_newest_events_cut_off_are_caught_against_a_head_kept_elsewhere() -> None:
    """A hash chain cannot show its own end cut off: the head a check prints, kept elsewhere,
    is given back to a later check, which fails when that event is gone."""
    import re

    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    for i in range(4):
        record_audit("tester", "test.event", None, {"i": i})
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    head = re.search(r"; head (\d+:[0-9a-f]{64}) ", out.getvalue()).group(1)  # type: ignore[union-attr]
    call_command("audit_verify", "--head", head, stdout=io.StringIO())  # still there
    with connection.cursor() as cursor:  # a database superuser, triggers off, removes the newest two
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("DELETE FROM docqa_auditevent WHERE id >= %s", [AuditEvent.objects.order_by("-id")[1].id])
        cursor.execute("SET session_replication_role = DEFAULT")

    call_command("audit_verify", stdout=io.StringIO())  # the chain alone still verifies
    with pytest.raises(CommandError, match=f"BROKEN at event {head.split(':')[0]} "):
        call_command("audit_verify", "--head", head, stdout=io.StringIO(), stderr=io.StringIO())


SQLITE_TAMPER = """
import os, sqlite3, sys, django
os.environ["DJANGO_SETTINGS_MODULE"] = "docqa.settings"
django.setup()
from django.conf import settings
from docqa.actions import record_audit
for i in range(3):
    record_audit("tester", "test.event", None, {"i": i})
db = sqlite3.connect(settings.DATABASES["default"]["NAME"])
for sql in ("UPDATE docqa_auditevent SET actor = 'x' WHERE id = 2", "DELETE FROM docqa_auditevent WHERE id = 2"):
    try:
        db.execute(sql)
        print("ALLOWED", sql)
    except sqlite3.DatabaseError as exc:
        print("REFUSED", exc)
db.execute("DROP TRIGGER docqa_audit_no_update")  # what someone with the file could do
db.execute("UPDATE docqa_auditevent SET detail = '{\\"i\\": 99}' WHERE id = " + sys.argv[1])
db.commit()
"""


def test_the_embedded_sqlite_database_refuses_edits_and_audit_verify_catches_them(tmp_path: Path) -> None:
    from tests.conftest import embedded_python

    run = embedded_python(tmp_path)
    assert run("manage.py", "migrate", "-v0").returncode == 0
    tampered = run("-c", SQLITE_TAMPER, "2")
    assert tampered.returncode == 0, tampered.stderr
    assert tampered.stdout.count("REFUSED audit events are append-only") == 2, tampered.stdout

    verified = run("manage.py", "audit_verify")
    assert verified.returncode == 1
    assert "BROKEN at event 2 " in verified.stderr
