"""Retention and legal hold: the audit trail's one allowed change.

Retention replaces the content of old events (questions, answers, quotes) by its sha256 and marks
the event with `expired_at`. The hash chain covers content by its sha256 (models.sealed), so the
chain still verifies. The triggers now let exactly that through: an UPDATE that keeps every
column but `detail`, adds `expired_at` to a detail that had none. Anything else is refused as
before; a forged "expiry" that changes content is caught by `manage.py audit_verify`.
"""

from django.db import migrations, models

from docqa.migrations import _audit_triggers as triggers


class Migration(migrations.Migration):
    dependencies = [("docqa", "0009_answer_reasoning")]
    operations = [
        migrations.AddField("matter", "legal_hold", models.BooleanField(default=False)),
        migrations.AddField("matter", "legal_hold_reason", models.TextField(blank=True), preserve_default=False),
        migrations.AddField("question", "expired_at", models.DateTimeField(blank=True, null=True)),
        migrations.RunPython(triggers.apply(triggers.PG_0010, triggers.SQLITE_0010),
                             triggers.apply(triggers.PG_0002, triggers.SQLITE_0008)),
    ]
