"""Retention and legal hold: the audit trail's one allowed change.

Retention replaces the content of old events (questions, answers, quotes) by its sha256 and marks
the event with `expired_at`. The hash chain covers content by its sha256 (models.sealed), so the
chain still verifies. The triggers now let exactly that through: an UPDATE that keeps every
column but `detail`, adds `expired_at` to a detail that had none. Anything else is refused as
before; a forged "expiry" that changes content is caught by `manage.py audit_verify`.
"""

from django.db import migrations, models

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION docqa_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.id = OLD.id AND NEW.created_at = OLD.created_at AND NEW.actor = OLD.actor
       AND NEW.matter_id IS NOT DISTINCT FROM OLD.matter_id AND NEW.action = OLD.action
       AND NEW.prev_hash = OLD.prev_hash AND NEW.hash = OLD.hash
       AND NEW.detail ? 'expired_at' AND NOT (OLD.detail ? 'expired_at') THEN
        RETURN NEW;  -- retention's expiry, once per row
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""
PG_FUNCTION_BEFORE = """
CREATE OR REPLACE FUNCTION docqa_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""
SQLITE_UPDATE = (
    "CREATE TRIGGER docqa_audit_no_update BEFORE UPDATE ON docqa_auditevent "
    "WHEN NOT (NEW.id = OLD.id AND NEW.created_at = OLD.created_at AND NEW.actor = OLD.actor "
    "AND NEW.matter_id IS OLD.matter_id AND NEW.action = OLD.action AND NEW.prev_hash = OLD.prev_hash "
    "AND NEW.hash = OLD.hash AND json_type(NEW.detail, '$.expired_at') IS NOT NULL "
    "AND json_type(OLD.detail, '$.expired_at') IS NULL) "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END"
)
SQLITE_UPDATE_BEFORE = (
    "CREATE TRIGGER docqa_audit_no_update BEFORE UPDATE ON docqa_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END"
)


def triggers(pg_function: str, sqlite_update: str):  # type: ignore[no-untyped-def]
    def apply(apps, schema_editor):  # type: ignore[no-untyped-def]
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            schema_editor.execute(pg_function, params=None)
        elif vendor == "sqlite":
            schema_editor.execute("DROP TRIGGER IF EXISTS docqa_audit_no_update", params=None)
            schema_editor.execute(sqlite_update, params=None)
    return apply


class Migration(migrations.Migration):
    dependencies = [("docqa", "0009_answer_reasoning")]
    operations = [
        migrations.AddField("matter", "legal_hold", models.BooleanField(default=False)),
        migrations.AddField("matter", "legal_hold_reason", models.TextField(blank=True), preserve_default=False),
        migrations.AddField("question", "expired_at", models.DateTimeField(blank=True, null=True)),
        migrations.RunPython(triggers(PG_FUNCTION, SQLITE_UPDATE),
                             triggers(PG_FUNCTION_BEFORE, SQLITE_UPDATE_BEFORE)),
    ]
