"""The audit table's UPDATE rules, shared by the migrations that set them (0010, 0013)."""

PG_0010 = """
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

SQLITE_0010 = (
    "CREATE TRIGGER docqa_audit_no_update BEFORE UPDATE ON docqa_auditevent "
    "WHEN NOT (NEW.id = OLD.id AND NEW.created_at = OLD.created_at AND NEW.actor = OLD.actor "
    "AND NEW.matter_id IS OLD.matter_id AND NEW.action = OLD.action AND NEW.prev_hash = OLD.prev_hash "
    "AND NEW.hash = OLD.hash AND json_type(NEW.detail, '$.expired_at') IS NOT NULL "
    "AND json_type(OLD.detail, '$.expired_at') IS NULL) "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END"
)

PG_0002 = """
CREATE OR REPLACE FUNCTION docqa_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""

SQLITE_0008 = (
    "CREATE TRIGGER docqa_audit_no_update BEFORE UPDATE ON docqa_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END"
)

CONTENT_OK = """(
    (jsonb_typeof(OLD.detail->'{key}') IS DISTINCT FROM 'string' AND NEW.detail->'{key}' IS NOT DISTINCT FROM OLD.detail->'{key}')
    OR NEW.detail->'{key}' = jsonb_build_object('sha256', encode(sha256(convert_to(OLD.detail->>'{key}', 'UTF8')), 'hex'))
)"""

PG_NARROW = """
CREATE OR REPLACE FUNCTION docqa_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.id = OLD.id AND NEW.created_at = OLD.created_at AND NEW.actor = OLD.actor
       AND NEW.matter_id IS NOT DISTINCT FROM OLD.matter_id AND NEW.action = OLD.action
       AND NEW.prev_hash = OLD.prev_hash AND NEW.hash = OLD.hash
       AND OLD.action IN ('question.ask', 'question.answer')
       AND NEW.detail ? 'expired_at' AND NOT (OLD.detail ? 'expired_at')
       AND (NEW.detail - 'text' - 'answer' - 'citations' - 'history' - 'expired_at')
           = (OLD.detail - 'text' - 'answer' - 'citations' - 'history')
       AND jsonb_array_length(COALESCE(NEW.detail->'citations', '[]')) = jsonb_array_length(COALESCE(OLD.detail->'citations', '[]'))
       AND jsonb_array_length(COALESCE(NEW.detail->'history', '[]')) = jsonb_array_length(COALESCE(OLD.detail->'history', '[]'))
       AND """ + CONTENT_OK.format(key="text") + """
       AND """ + CONTENT_OK.format(key="answer") + """ THEN
        RETURN NEW;  -- retention's expiry of a question's content, once per row
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""

SQLITE_NARROW = (
    "CREATE TRIGGER docqa_audit_no_update BEFORE UPDATE ON docqa_auditevent "
    "WHEN NOT (NEW.id = OLD.id AND NEW.created_at = OLD.created_at AND NEW.actor = OLD.actor "
    "AND NEW.matter_id IS OLD.matter_id AND NEW.action = OLD.action AND NEW.prev_hash = OLD.prev_hash "
    "AND NEW.hash = OLD.hash AND OLD.action IN ('question.ask', 'question.answer') "
    "AND json_type(NEW.detail, '$.expired_at') IS NOT NULL AND json_type(OLD.detail, '$.expired_at') IS NULL "
    "AND json_remove(NEW.detail, '$.text', '$.answer', '$.citations', '$.history', '$.expired_at') "
    "= json_remove(OLD.detail, '$.text', '$.answer', '$.citations', '$.history') "
    "AND coalesce(json_array_length(NEW.detail, '$.citations'), 0) = coalesce(json_array_length(OLD.detail, '$.citations'), 0) "
    "AND coalesce(json_array_length(NEW.detail, '$.history'), 0) = coalesce(json_array_length(OLD.detail, '$.history'), 0)) "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END"
)


def apply(pg_function: str, sqlite_update: str):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            schema_editor.execute(pg_function, params=None)
        elif vendor == "sqlite":
            schema_editor.execute("DROP TRIGGER IF EXISTS docqa_audit_no_update", params=None)
            schema_editor.execute(sqlite_update, params=None)
    return run
