"""An upload that got an error is never lost: retrying it with the same `Idempotency-Key` queues a
job that never reached the broker (failed `queue.unavailable`), and a job queued, under way or
finished is answered as it is, queued again never (issue 10, item 3)."""

from __future__ import annotations

import httpx

from tests.gateway import samples
from tests.gateway.conftest import make_settings
from tests.gateway.fakes import FakeReports, InMemoryPublisher


def _one(key: str) -> dict[str, object]:
    return {"files": {"file": ("a.jpg", samples.jpeg(), "image/jpeg")}, "headers": {"Idempotency-Key": key}}


async def test_a_single_upload_retried_after_a_broker_outage_is_queued_then(
    client: httpx.AsyncClient, publisher: InMemoryPublisher, reports: FakeReports
) -> None:
    publisher.down = True
    first = await client.post("/v1/images", **_one("retry-1"))  # type: ignore[arg-type]
    assert first.status_code == 503
    [job_id] = reports.jobs
    assert reports.jobs[job_id]["status"] == "failed"

    publisher.down = False
    retry = await client.post("/v1/images", **_one("retry-1"))  # type: ignore[arg-type]

    assert retry.status_code == 202
    assert retry.headers["Idempotent-Replay"] == "true"
    assert retry.json()["job_id"] == job_id and retry.json()["status"] == "queued"
    assert reports.jobs[job_id]["status"] == "queued"
    assert [t.job_id for t in publisher.tasks] == [job_id]


async def test_registrations_tell_reports_how_long_the_gateway_waits(
    client: httpx.AsyncClient, reports: FakeReports
) -> None:
    await client.post("/v1/images", **_one("patience"))  # type: ignore[arg-type]

    [job] = reports.jobs.values()
    # The test settings' reports timeout less the margin: reports calls a registration late
    # before this gateway has given up on it, never after.
    assert 0 < job["body"]["register_within_ms"] < 1000 * make_settings().reports_timeout_seconds


async def test_an_upload_whose_registration_committed_too_late_is_queued_by_its_retry(
    client: httpx.AsyncClient, publisher: InMemoryPublisher, reports: FakeReports
) -> None:
    first = await client.post("/v1/images", **_one("late-1"))  # type: ignore[arg-type]
    job_id = first.json()["job_id"]
    publisher.tasks.clear()
    # What reports records when the first registration committed after the gateway gave up.
    reports.jobs[job_id].update(status="failed", error_code="registration.timeout")

    retry = await client.post("/v1/images", **_one("late-1"))  # type: ignore[arg-type]

    assert (retry.status_code, retry.json()["status"]) == (202, "queued")
    assert [t.job_id for t in publisher.tasks] == [job_id]


async def test_a_retry_of_a_running_or_finished_job_queues_nothing(
    client: httpx.AsyncClient, publisher: InMemoryPublisher, reports: FakeReports
) -> None:
    first = await client.post("/v1/images", **_one("retry-2"))  # type: ignore[arg-type]
    job_id = first.json()["job_id"]
    for status in ("queued", "running", "done"):
        reports.jobs[job_id]["status"] = status
        retry = await client.post("/v1/images", **_one("retry-2"))  # type: ignore[arg-type]
        assert retry.json()["job_id"] == job_id
    assert [t.job_id for t in publisher.tasks] == [job_id]  # the first request's task only


async def test_a_batch_retried_after_a_broker_outage_queues_every_job_and_says_so(
    client: httpx.AsyncClient, publisher: InMemoryPublisher, reports: FakeReports
) -> None:
    files = [("files", (f"{i}.jpg", samples.jpeg(size=(64 + i, 48)), "image/jpeg")) for i in range(3)]
    headers = {"Idempotency-Key": "batch-retry"}
    publisher.down = True
    assert (await client.post("/v1/batches", files=files, headers=headers)).status_code == 503
    assert {job["status"] for job in reports.jobs.values()} == {"failed"}

    publisher.down = False
    retry = await client.post("/v1/batches", files=files, headers=headers)

    assert retry.status_code == 202
    assert retry.json()["accepted"] == 3
    assert {job["status"] for job in reports.jobs.values()} == {"queued"}
    assert sorted(t.job_id for t in publisher.tasks) == sorted(reports.jobs)
