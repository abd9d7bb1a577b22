"""Narrow the one change the audit triggers allow (0010): an expiry, of question events only.

The update must keep every column but `detail`; keep every detail key but the content ones
(`text`, `answer`, `citations`, `history`); add `expired_at`; and touch only `question.ask` and
`question.answer` events. On PostgreSQL the new `text` and `answer` must also be the sha256 of
the old ones, computed by the database itself: a forged "expiry" that swaps the content for other
content is refused outright, not only caught later by `audit_verify`.
"""

from django.db import migrations

from docqa.migrations import _audit_triggers as triggers


class Migration(migrations.Migration):
    dependencies = [("docqa", "0012_matter_source_roots")]
    operations = [migrations.RunPython(triggers.apply(triggers.PG_NARROW, triggers.SQLITE_NARROW),
                                       triggers.apply(triggers.PG_0010, triggers.SQLITE_0010))]
