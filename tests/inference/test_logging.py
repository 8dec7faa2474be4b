"""Worker log lines: one JSON object each, never the task payload."""

from __future__ import annotations

import json
import logging

from services.inference.json_logging import JsonFormatter


def _record(logger: str, message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": logger, "msg": message, "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.__dict__.update(extra)
    return record


def test_log_line_is_one_json_object_with_extra_fields() -> None:
    line = JsonFormatter("inference").format(_record("services.inference.tasks", "task.start", job_id="j-1"))

    body = json.loads(line)
    assert "\\n" not in line
    assert (body["message"], body["job_id"], body["service"]) == ("task.start", "j-1", "inference")


def test_celery_task_log_lines_drop_the_payload() -> None:
    data = {
        "id": "j-1",
        "name": "inference.predict",
        "kwargs": "{'payload': {'image': 'AAAA'}}",
        "args": "()",
    }

    body = json.loads(
        JsonFormatter("inference").format(_record("celery.worker.strategy", "received", data=data))
    )

    assert body["data"] == {"id": "j-1", "name": "inference.predict"}
