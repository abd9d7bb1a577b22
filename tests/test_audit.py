"""The audit trail: every ingest and answer is recorded, hash-chained and append-only."""

from __future__ import annotations

import io

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
