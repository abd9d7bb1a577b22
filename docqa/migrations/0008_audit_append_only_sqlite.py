"""Refuse UPDATE and DELETE of audit events in the embedded default's SQLite database too.

PostgreSQL has had its trigger since 0002. With these, raw SQL against var/docqa.sqlite3 cannot
edit or remove an event either; whoever drops the triggers first is still caught by the hash
chain (`manage.py audit_verify`). `manage.py flush` no longer empties an embedded database.
"""

from django.db import migrations

CREATE = [
    "CREATE TRIGGER IF NOT EXISTS docqa_audit_no_update BEFORE UPDATE ON docqa_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END",
    "CREATE TRIGGER IF NOT EXISTS docqa_audit_no_delete BEFORE DELETE ON docqa_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END",
]
DROP = ["DROP TRIGGER IF EXISTS docqa_audit_no_update", "DROP TRIGGER IF EXISTS docqa_audit_no_delete"]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in CREATE:
            schema_editor.execute(statement, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in DROP:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("docqa", "0007_groups_and_ethical_walls")]
    operations = [migrations.RunPython(create, drop)]
