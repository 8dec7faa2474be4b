"""One JSON object per log line on stdout, configured once per process, the same in every service.

A line is `{"ts", "level", "service", "logger", "message", "request_id"?, ...fields, "exc"?}`.
Only listed fields are copied from a record's `extra=`: a list rather than "everything extra", so
that an `extra=` can never smuggle image bytes, patient references or secrets into a log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from services.common.request_id import current_request_id

# Fields any service may log: the request context and a job's identity and outcome. Each service
# adds its own (`JsonFormatter(service, fields=...)`).
COMMON_FIELDS = frozenset(
    {
        "request_id",
        "method",
        "route",
        "status",
        "duration_ms",
        "tenant_id",
        "job_id",
        "task_id",
        "attempt",
        "error_code",
        "error",
        "dependency",  # services.common.errors: which dependency an outage answer names
    }
)
# Attributes every LogRecord has: a field named like one would log the record's own value.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_HANDLER_NAME = "skintriage-json"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with the fixed fields and the listed `extra=` fields."""

    def __init__(self, service: str, fields: Iterable[str] = ()) -> None:
        super().__init__()
        self.service = service
        self.fields = COMMON_FIELDS | frozenset(fields)
        clashing = self.fields & _RECORD_ATTRIBUTES
        if clashing:
            raise ValueError(f"log fields named like LogRecord attributes: {sorted(clashing)}")

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line; ASCII only, so no Unicode line separator in a
        value can split it for a log shipper."""
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        line.update(self.extra_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)

    def extra_fields(self, record: logging.LogRecord) -> dict[str, object]:
        """The listed fields the record was given with `extra=`, None values left out.
        A service extends this to scrub a field it must log only in part."""
        return {
            key: value
            for key, value in vars(record).items()
            if key in self.fields and key != "request_id" and value is not None
        }


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stdout` is when a record is emitted, so redirection works."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def configure_logging(formatter: JsonFormatter, level: str | int = "INFO") -> None:
    """Send every logger, uvicorn's and Celery's included, through one JSON handler on stdout.
    Calling it again replaces that handler (one per process), never another one."""
    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(existing)
    handler = _StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # httpx logs every request URL at INFO; query strings may carry patient references (PHI).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's own lines go through the JSON handler; its access line is off because it repeats
    # the path with its query string: the request-context middleware logs the route template.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
