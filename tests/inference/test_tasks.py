"""The Celery task run in-process (eager `apply`), with respx at the HTTP seam."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from celery.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_retry

from services.inference import tasks
from services.inference.domain.errors import UpstreamUnavailableError
from services.inference.resources import WorkerResources
from services.inference.tasks import failure_code, predict, retry_delay
from tests.inference.conftest import JOB_ID, REPORTS_URL, TENANT_ID, verdict


def _apply(payload: dict[str, Any]) -> Any:
    return predict.apply(kwargs={"payload": payload}, task_id=payload.get("job_id", "job-x"))


def _failure(mocked: respx.MockRouter) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(mocked["job_fail"].calls.last.request.content)
    return body


@pytest.fixture
def retries() -> Iterator[list[Any]]:
    """Reasons of every task_retry signal sent while the test runs."""
    seen: list[Any] = []

    def record(reason: Any = None, **_: Any) -> None:
        seen.append(reason)

    task_retry.connect(record, weak=False)
    yield seen
    task_retry.disconnect(record)


def test_task_upserts_a_done_report(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    result = _apply(payload)

    assert result.successful()
    assert result.result == {"job_id": JOB_ID, "status": "done"}
    assert mocked["report_put"].call_count == 1
    assert not mocked["job_fail"].called


def test_redelivered_task_does_not_duplicate_report(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _apply(payload)
    _apply(payload)

    puts = mocked["report_put"].calls
    assert len(puts) == 2
    assert {str(call.request.url) for call in puts} == {f"{REPORTS_URL}/internal/v1/reports/{JOB_ID}"}
    reports_calls = {
        (call.request.method, str(call.request.url))
        for call in mocked.calls
        if str(call.request.url).startswith(REPORTS_URL)
    }
    assert reports_calls == {
        ("PUT", f"{REPORTS_URL}/internal/v1/reports/{JOB_ID}"),
        ("POST", f"{REPORTS_URL}/internal/v1/jobs/running"),
    }


def test_unreachable_ood_makes_the_task_retry(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter, retries: list[Any]
) -> None:
    mocked["ood"].side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=verdict())]

    result = _apply(payload)

    assert len(retries) == 1
    assert isinstance(retries[0], Retry)
    assert isinstance(retries[0].exc, UpstreamUnavailableError)
    assert result.successful()
    assert mocked["ood"].call_count == 2
    assert mocked["report_put"].call_count == 1


def test_ood_timeout_and_5xx_are_retried(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter, retries: list[Any]
) -> None:
    mocked["ood"].side_effect = [
        httpx.ReadTimeout("slow"),
        httpx.Response(503, json={"error": {"code": "service.not_ready", "message": "loading"}}),
        httpx.Response(200, json=verdict()),
    ]

    result = _apply(payload)

    assert len(retries) == 2
    assert result.successful()


def test_reports_5xx_on_upsert_is_retried_and_the_same_report_is_put_again(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter, retries: list[Any]
) -> None:
    mocked["report_put"].side_effect = [httpx.Response(500), httpx.Response(200, json={})]

    result = _apply(payload)

    assert result.successful()
    assert len(retries) == 1
    assert mocked["report_put"].call_count == 2


class SteppingClock:
    """Unix time that moves `step` seconds on at every reading (eager retries do not wait)."""

    def __init__(self, start: float, step: float) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_unreachable_ood_is_retried_until_the_window_is_spent_then_reported_failed(
    payload: dict[str, Any],
    resources: WorkerResources,
    mocked: respx.MockRouter,
    retries: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mocked["ood"].side_effect = httpx.ConnectError("refused")
    clock = SteppingClock(start=1_000_000.0, step=45.0)
    monkeypatch.setattr(tasks, "clock", clock)

    result = _apply(payload)

    assert result.failed()
    window = tasks.settings.retry_window_seconds
    # One reading per attempt, 45 s apart: the retries fit in the window, and no more would have.
    assert window // 45 - 1 <= len(retries) <= window // 45
    assert mocked["ood"].call_count == len(retries) + 1
    # Every retry counts from the first attempt, not from itself.
    assert {retry.sig.kwargs["first_attempt_at"] for retry in retries} == {1_000_045.0}
    assert not mocked["report_put"].called
    assert mocked["job_fail"].call_count == 1
    failure = _failure(mocked)
    assert failure["job_id"] == JOB_ID
    assert failure["tenant_id"] == TENANT_ID
    assert failure["error_code"] == "upstream.unavailable"
    assert str(mocked["job_fail"].calls.last.request.url) == f"{REPORTS_URL}/internal/v1/jobs/{JOB_ID}/fail"


@pytest.mark.parametrize("retries_so_far", [0, 1, 3, 6, 40])
def test_retry_delays_double_up_to_the_cap_and_keep_at_least_half(retries_so_far: int) -> None:
    capped = min(30.0, 1.0 * 2**retries_so_far)

    delays = [retry_delay(retries_so_far, 1.0, 30.0) for _ in range(200)]

    assert all(capped / 2 <= delay <= capped for delay in delays)
    assert len(set(delays)) > 1  # jittered


def test_ood_4xx_fails_the_job_at_once_with_the_downstream_code(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter, retries: list[Any]
) -> None:
    mocked["ood"].respond(409, json={"error": {"code": "ood.model_mismatch", "message": "other model"}})

    result = _apply(payload)

    assert result.failed()
    assert retries == []
    assert mocked["ood"].call_count == 1
    assert _failure(mocked)["error_code"] == "ood.model_mismatch"


def test_corrupt_payload_fails_at_once_with_task_payload_invalid(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter, retries: list[Any]
) -> None:
    del payload["image"]

    result = _apply(payload)

    assert result.failed()
    assert retries == []
    assert not mocked["ood"].called
    assert _failure(mocked)["error_code"] == "task.payload_invalid"


def test_corrupt_image_fails_at_once_with_image_corrupt(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter, retries: list[Any]
) -> None:
    payload["image"]["data_b64"] = "not base64 at all!"

    result = _apply(payload)

    assert result.failed()
    assert retries == []
    assert _failure(mocked)["error_code"] == "image.corrupt"


def test_task_headers_request_id_is_forwarded_when_payload_has_none(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    payload["request_id"] = None

    predict.apply(kwargs={"payload": payload}, task_id=JOB_ID, headers={"request_id": "hdr-42"})

    assert mocked["ood"].calls.last.request.headers["X-Request-ID"] == "hdr-42"
    assert mocked["report_put"].calls.last.request.headers["X-Request-ID"] == "hdr-42"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SoftTimeLimitExceeded(), "task.timeout"),
        (TimeLimitExceeded(90), "task.timeout"),
        (UpstreamUnavailableError("ood", "ood timed out"), "upstream.unavailable"),
        (RuntimeError("/srv/secret/path exploded"), "internal"),
    ],
)
def test_final_failures_map_to_error_codes_without_internals(error: BaseException, code: str) -> None:
    recorded_code, message = failure_code(error)

    assert recorded_code == code
    assert "secret" not in message
