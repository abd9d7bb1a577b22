"""Retention: after DOCQA_RETENTION_DAYS, content is replaced by its sha256; legal holds suspend it.

What expires: a question's text, its answer, the model's reasoning, the citations' quotes and the
text of the sources as sent, in the database rows and in the audit events that recorded them.
What stays: who asked, when, in which matter, with which model and parameters, which document
versions were packed (with their hashes), each citation's verification, and the hash chain,
which still verifies because it always covered content by its hash (models.sealed). A replay of
an expired answer can still prove that a given text was the one asked or answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from docqa.actions import record_audit
from docqa.models import EXPIRED_MARK, AuditEvent, Citation, Matter, Question, expired, sha256_text

CONTENT_ACTIONS = ("question.ask", "question.answer")
RESEAL = "audit.reseal"
BATCH = 500


def digest(text: str) -> str:
    """What an expired text field holds."""
    return "sha256:" + sha256_text(text)


def is_digest(text: str) -> bool:
    return text.startswith("sha256:") and len(text) == 71


@dataclass
class Expiry:
    cutoff: datetime
    questions: int = 0
    events: int = 0
    unverifiable: list[int] = field(default_factory=list)  # events whose hash did not verify: left alone
    held: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat(), "questions": self.questions, "events": self.events,
                "unverifiable": self.unverifiable[:100], "held": self.held}


def expire_content(*, days: int | None = None, now: datetime | None = None, dry_run: bool = False) -> Expiry:
    """Expire what is older than `days` (default: the setting) outside matters under legal hold."""
    days = settings.RETENTION_DAYS if days is None else days
    if days <= 0:
        raise ValueError("retention is off (DOCQA_RETENTION_DAYS is 0): nothing expires")
    report = Expiry(cutoff=(now or timezone.now()) - timedelta(days=days))
    report.held = list(Matter.objects.filter(legal_hold=True).order_by("slug").values_list("slug", flat=True))
    questions = (Question.objects.filter(created_at__lt=report.cutoff, expired_at__isnull=True)
                 .exclude(matter__legal_hold=True).order_by("id"))
    events = (AuditEvent.objects.filter(created_at__lt=report.cutoff, action__in=CONTENT_ACTIONS)
              .exclude(matter__legal_hold=True).exclude(detail__has_key=EXPIRED_MARK).order_by("id"))
    if dry_run:
        report.questions, report.events = questions.count(), events.count()
        return report
    while batch := list(questions.select_related("answer")[:BATCH]):
        with transaction.atomic():
            for question in batch:
                expire_question(question)
        report.questions += len(batch)
    stamp = timezone.now().isoformat()
    after = 0
    while batch := list(events.filter(id__gt=after)[:BATCH]):
        with transaction.atomic():
            # Events written before content was sealed hash their content as text. Before their
            # text goes, a checkpoint event commits to their sealed hashes, so they still verify.
            legacy = {e.id: e.compute_hash() for e in batch if e.hash != e.compute_hash() and e.hash == e.legacy_hash()}
            if legacy:
                record_audit("retention", RESEAL, None, {"events": {str(i): h for i, h in legacy.items()}})
            for event in batch:
                if event.hash != event.compute_hash() and event.id not in legacy:  # tampered: keep as it is
                    report.unverifiable.append(event.id)
                    continue
                kept = expired(event.detail)
                assert isinstance(kept, dict)
                AuditEvent.objects.filter(pk=event.pk).update(detail={**kept, EXPIRED_MARK: stamp})
                report.events += 1
        after = batch[-1].id
    return report


def resealed() -> dict[int, str]:
    """Event id -> sealed hash, from every checkpoint retention wrote for pre-sealing events."""
    sealed_hashes: dict[int, str] = {}
    for detail in AuditEvent.objects.filter(action=RESEAL).values_list("detail", flat=True):
        sealed_hashes.update({int(i): str(h) for i, h in (detail.get("events") or {}).items()})
    return sealed_hashes


def expire_question(question: Question) -> None:
    question.text = digest(question.text)
    question.expired_at = timezone.now()
    question.save(update_fields=["text", "expired_at"])
    answer = getattr(question, "answer", None)
    if answer is None:
        return
    answer.text = digest(answer.text)
    answer.reasoning = digest(answer.reasoning) if answer.reasoning else ""
    # The sources as sent: each one's text goes; its sha256 (the one in the audit event) stays.
    answer.sources = [{**s, "text": digest(str(s.get("text", "")))} for s in answer.sources]
    answer.save(update_fields=["text", "reasoning", "sources"])
    for citation in Citation.objects.filter(answer=answer).exclude(quote=""):
        citation.quote = digest(citation.quote)
        citation.save(update_fields=["quote"])


def stored_text_sha256(text: object, expired: bool) -> str:
    """The sha256 of a stored text, whether still held or (`expired`) replaced by its digest."""
    value = str(text)
    return value[len("sha256:"):] if expired and is_digest(value) else sha256_text(value)
