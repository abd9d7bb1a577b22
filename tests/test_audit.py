"""The audit trail: every ingest and answer is recorded, hash-chained and append-only."""

from __future__ import annotations

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


def test_audit_hash_reveals_an_edit_made_behind_the_model() -> None:
    event = record_audit("tester", "test.event", None, {"answer": "original"})
    AuditEvent.objects.filter(id=event.id).update(detail={"answer": "edited"})

    assert AuditEvent.objects.get(id=event.id).compute_hash() != event.hash
