"""One JSON object per log line on stdout, configured once per process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}
# Celery's worker logs a task's args/kwargs in `extra={"data": ...}`: here that is the whole
# payload, image included, which must never reach a log.
_CELERY_DATA_KEYS = frozenset({"id", "name", "runtime", "exc", "description", "eta", "expires"})
_configured = False


def _without_payload(value: object) -> object:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in _CELERY_DATA_KEYS}
    return value


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, logger, message and `extra` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        body: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if "data" in extras and record.name.startswith("celery"):
            extras["data"] = _without_payload(extras["data"])
        body.update(extras)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Route every logger, Celery's included, through one JSON handler on stdout (idempotent)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter("inference"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One line per HTTP call is noise; the task logs its boundaries and failures itself.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True
