"""Structured logs: one JSON object per line (DOCQA_LOG_FORMAT=json), for a log shipper to read.

Each line carries time, level, logger, message, the fields passed with `extra=` and, on an
error, the exception and its traceback. Question text, answers and document text never go to
the log (the audit trail holds them, under retention); events name ids, counts and timings.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RefusalsWithoutTraceback(logging.Filter):
    """A page refused (403) or not found (404) is one line in the log: Django attaches the
    PermissionDenied's traceback, which says nothing about a server fault and buries real ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) in (403, 404):
            record.exc_info, record.exc_text = None, None
        return True
