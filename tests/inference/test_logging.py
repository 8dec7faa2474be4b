"""Worker log lines: one JSON object each, never the task payload, each with the request id."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import respx

from services.common.json_logging import configure_logging
from services.inference.json_logging import WorkerJsonFormatter
from services.inference.resources import WorkerResources
from services.inference.tasks import predict
from tests.inference.conftest import JOB_ID, REQUEST_ID


def _record(logger: str, message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": logger, "msg": message, "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.__dict__.update(extra)
    return record


def test_log_line_is_one_json_object_with_extra_fields() -> None:
    line = WorkerJsonFormatter().format(_record("services.inference.tasks", "task.start", job_id="j-1"))

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

    body = json.loads(WorkerJsonFormatter().format(_record("celery.worker.strategy", "received", data=data)))

    assert body["data"] == {"id": "j-1", "name": "inference.predict"}


def test_celery_data_that_is_not_its_context_dict_is_dropped() -> None:
    record = _record("celery.app.trace", "failed", data="{'payload': {'image': 'AAAA'}}")

    body = json.loads(WorkerJsonFormatter().format(record))

    assert "data" not in body


def test_a_task_run_logs_no_image_and_each_task_line_carries_the_request_id(
    payload: dict[str, Any],
    resources: WorkerResources,
    mocked: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(WorkerJsonFormatter())
    try:
        predict.apply(kwargs={"payload": payload}, task_id=JOB_ID)
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "skintriage-json"]:
            root.removeHandler(handler)

    out = capsys.readouterr().out
    assert payload["image"]["data_b64"][:64] not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    task_lines = [line for line in lines if line["logger"] == "services.inference.tasks"]
    assert [line["message"] for line in task_lines] == ["task.done"]  # one line per job
    assert all(line["request_id"] == REQUEST_ID for line in task_lines)
