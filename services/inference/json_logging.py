"""The worker's extension of the shared JSON log lines (`services/common/json_logging.py`): its
own fields, and Celery's `data` field scrubbed so that a task's payload (the image) never reaches
a log."""

from __future__ import annotations

import logging

from services.common.json_logging import JsonFormatter

# The worker's own `extra=` log fields, beside services.common.json_logging.COMMON_FIELDS.
LOG_FIELDS = (
    "data",
    "decision",
    "timings_ms",
    "model",
    "version",
    "sha256",
    "bundle_dir",
    "ort_threads",
    "declared",
    "decoded",
    "jobs",
    "statuses",
)
# Celery's worker logs a task's receipt, success and failure with `extra={"data": context}`; the
# context holds the task's args/kwargs, here the whole payload, image included. Only these keys
# of it are kept.
_CELERY_DATA_KEYS = frozenset({"id", "name", "runtime", "exc", "description", "eta", "expires"})


class WorkerJsonFormatter(JsonFormatter):
    """The shared JSON line, with `data` reduced to Celery's task identity and outcome."""

    def __init__(self) -> None:
        super().__init__("inference", fields=LOG_FIELDS)

    def extra_fields(self, record: logging.LogRecord) -> dict[str, object]:
        """The listed fields, `data` scrubbed (dropped when it is not Celery's context dict)."""
        fields = super().extra_fields(record)
        data = fields.pop("data", None)
        if isinstance(data, dict):
            fields["data"] = {key: value for key, value in data.items() if key in _CELERY_DATA_KEYS}
        return fields
