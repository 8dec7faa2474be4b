"""The shared JSON log line: fixed fields, listed extras only, request id, traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from services.common.json_logging import JsonFormatter, configure_logging
from services.common.request_id import bound_request_id

JsonLines = Callable[[], list[dict[str, Any]]]
IMAGE_B64 = "/9j/4AAQSkZJRgABAQAAAQABAAD"  # the first bytes of a JPEG, base64-encoded


def _record(message: str = "task.start", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": "services.tiny.tasks",
            "msg": message,
            "levelno": level,
            "levelname": logging.getLevelName(level),
        }
    )
    record.__dict__.update(extra)
    return record


def test_line_is_one_json_object_with_the_fixed_fields() -> None:
    line = JsonFormatter("tiny").format(_record(job_id="j-1", status=None))

    assert "\n" not in line
    body = json.loads(line)
    assert set(body) == {"ts", "level", "service", "logger", "message", "job_id"}
    assert (body["level"], body["service"], body["logger"]) == ("INFO", "tiny", "services.tiny.tasks")
    assert body["ts"].endswith("+00:00")


def test_only_listed_extra_fields_are_logged() -> None:
    record = _record(job_id="j-1", decision="accepted", patient_ref="MRN-0042", image=IMAGE_B64)

    body = json.loads(JsonFormatter("tiny", fields=("decision",)).format(record))

    assert (body["job_id"], body["decision"]) == ("j-1", "accepted")
    assert "patient_ref" not in body
    assert "image" not in body


def test_a_celery_payload_image_never_reaches_a_line() -> None:
    # Celery's worker passes a task's kwargs with `extra={"data": ...}`; the payload holds the image.
    context = {
        "id": "j-1",
        "name": "inference.predict",
        "kwargs": {"payload": {"image": {"data_b64": IMAGE_B64}}},
    }
    record = logging.makeLogRecord(
        {"name": "celery.worker.strategy", "msg": "Task %(name)s[%(id)s] received", "args": context}
    )
    record.__dict__.update(data=context, payload=context["kwargs"])

    line = JsonFormatter("tiny").format(record)

    assert IMAGE_B64 not in line
    assert json.loads(line)["message"] == "Task inference.predict[j-1] received"


def test_request_id_comes_from_the_bound_context_unless_given() -> None:
    formatter = JsonFormatter("tiny")

    with bound_request_id("req-ctx"):
        from_context = json.loads(formatter.format(_record()))
        explicit = json.loads(formatter.format(_record(request_id="req-explicit")))
    unbound = json.loads(formatter.format(_record()))

    assert from_context["request_id"] == "req-ctx"
    assert explicit["request_id"] == "req-explicit"
    assert "request_id" not in unbound


def test_traceback_is_logged_under_exc() -> None:
    try:
        raise ValueError("bad bundle")
    except ValueError:
        record = _record("worker.bundle_invalid", logging.ERROR)
        record.exc_info = __import__("sys").exc_info()

    body = json.loads(JsonFormatter("tiny").format(record))

    assert body["level"] == "ERROR"
    assert "ValueError: bad bundle" in body["exc"]


def test_non_ascii_is_escaped_so_a_value_cannot_split_the_line() -> None:
    line = JsonFormatter("tiny").format(_record("note\u2028forged line", error="é"))

    assert line.isascii()
    assert json.loads(line)["message"] == "note\u2028forged line"


def test_a_field_named_like_a_record_attribute_is_refused() -> None:
    with pytest.raises(ValueError, match="args"):
        JsonFormatter("tiny", fields=("args",))


def test_configured_logging_writes_json_to_stdout_once_per_line(json_lines: JsonLines) -> None:
    logging.getLogger("services.tiny.worker").info("worker.ready", extra={"attempt": 1})
    logging.getLogger("httpx").info("HTTP Request: GET http://reports/internal/v1/reports?patient_ref=MRN-1")

    lines = json_lines()
    assert [(line["message"], line["attempt"]) for line in lines] == [("worker.ready", 1)]


def test_configuring_again_replaces_the_json_handler_instead_of_adding_one(json_lines: JsonLines) -> None:
    configure_logging(JsonFormatter("tiny-again"))
    logging.getLogger("services.tiny.worker").warning("once")

    lines = json_lines()
    assert [(line["message"], line["service"]) for line in lines] == [("once", "tiny-again")]
