"""Refuse UPDATE and DELETE of audit events at the database (PostgreSQL).

The model refuses them too; this also stops raw SQL and QuerySet.update()/delete(). TRUNCATE
is left to privileges (the application's role should not own the table in production), since
Django's own flush, used by the test suite, truncates every table.
SQLite has no such triggers worth the name here, so the embedded default relies on the model
and on the hash chain (`manage.py verify_audit`) to reveal edits.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION docqa_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER docqa_audit_no_update_delete BEFORE UPDATE OR DELETE ON docqa_auditevent
    FOR EACH ROW EXECUTE FUNCTION docqa_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS docqa_audit_no_update_delete ON docqa_auditevent;
DROP FUNCTION IF EXISTS docqa_audit_append_only();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("docqa", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
