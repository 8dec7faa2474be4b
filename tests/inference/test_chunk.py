"""Micro-batches (`inference.predict_chunk`): one ONNX Runtime run, one OOD call and one reports write
for several jobs, each job with its own correct report; a job that fails, fails alone. The tiny
bundle and real HAM10000 images; respx at the HTTP seam, answering per item as the services do."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from contracts.jobs import InferenceTask, JobStatus
from services.inference import tasks as inference_tasks
from services.inference.domain.errors import TransientError
from services.inference.domain.pipeline import run_chunk, run_job
from services.inference.resources import WorkerResources
from services.inference.tasks import predict_chunk
from tests.inference.conftest import OOD_URL, REPORTS_URL, TENANT_ID, RecordingNotifier, store_image, verdict

BAD_EMBEDDING = {"code": "ood.bad_embedding", "message": "expected an embedding of length 1280"}


class Services:
    """The OOD and reports batch endpoints, answering per item; records what they were sent."""

    def __init__(self) -> None:
        self.ood_error_for: set[int] = set()  # item positions OOD refuses
        self.ood_down = False  # answer 503 to every call
        self.finished: dict[str, str] = {}  # job id -> the result reports already has
        self.report_error_for: set[str] = set()  # job ids reports refuses
        self.scored: list[dict[str, Any]] = []
        self.stored: list[dict[str, Any]] = []
        self.running: list[list[str]] = []
        self.failed: list[dict[str, Any]] = []

    def ood_batch(self, request: httpx.Request) -> httpx.Response:
        if self.ood_down:
            return httpx.Response(503, json={"error": {"code": "internal", "message": "down"}})
        items = json.loads(request.content)["items"]
        self.scored.extend(items)
        results = [
            {"error": BAD_EMBEDDING} if i in self.ood_error_for else {"verdict": verdict()}
            for i in range(len(items))
        ]
        return httpx.Response(200, json={"results": results})

    def reports_batch(self, request: httpx.Request) -> httpx.Response:
        reports = json.loads(request.content)["reports"]
        results = []
        for report in reports:
            if report["job_id"] in self.report_error_for:
                results.append(
                    {"job_id": report["job_id"], "error": {"code": "job.not_found", "message": "no"}}
                )
            else:
                self.stored.append(report)
                result = {"job_id": report["job_id"], "status": report["status"]}
                if report.get("return_job"):  # as reports answers: the stored job's view
                    now = "2026-01-01T00:00:00+00:00"
                    result["job"] = {
                        "job_id": report["job_id"],
                        "status": report["status"],
                        "metadata": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                results.append(result)
        return httpx.Response(200, json={"results": results})

    def jobs_running(self, request: httpx.Request) -> httpx.Response:
        self.running.append(json.loads(request.content)["job_ids"])
        finished = {j: s for j, s in self.finished.items() if j in self.running[-1]}
        return httpx.Response(
            200, json={"changed": len(self.running[-1]) - len(finished), "finished": finished}
        )

    def job_fail(self, request: httpx.Request) -> httpx.Response:
        self.failed.append(json.loads(request.content))
        return httpx.Response(200, json={})


@pytest.fixture
def services() -> Iterator[Services]:
    fake = Services()
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{OOD_URL}/v1/score/batch").mock(side_effect=fake.ood_batch)
        router.post(f"{REPORTS_URL}/internal/v1/jobs/running").mock(side_effect=fake.jobs_running)
        router.put(f"{REPORTS_URL}/internal/v1/reports").mock(side_effect=fake.reports_batch)
        router.post(url__regex=rf"{REPORTS_URL}/internal/v1/jobs/[^/]+/fail$").mock(side_effect=fake.job_fail)
        # The single-job routes, for the reference run of each image on its own.
        router.post(f"{OOD_URL}/v1/score").respond(200, json=verdict())
        router.post(url__regex=rf"{REPORTS_URL}/internal/v1/jobs/[^/]+/running$").respond(200, json={})
        router.put(url__regex=rf"{REPORTS_URL}/internal/v1/reports/[^/]+$").respond(200, json={})
        yield fake


def _task(job_id: str, path: Path) -> InferenceTask:
    return InferenceTask(
        job_id=job_id,
        tenant_id=TENANT_ID,
        request_id="b" * 32,
        image=store_image(path),
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.fixture
def tasks(ham_images: list[Path]) -> list[InferenceTask]:
    """Four jobs, each a different HAM10000 image."""
    return [_task(f"job-{i}", ham_images[i]) for i in range(4)]


def _corrupt(task: InferenceTask) -> InferenceTask:
    image = task.image.model_copy(update={"data_b64": base64.b64encode(b"\xff\xd8 not a jpeg").decode()})
    return task.model_copy(update={"image": image})


def test_each_job_of_a_chunk_gets_the_report_its_own_image_gets_alone(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    outcomes = run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    assert [o.job_id for o in outcomes] == [t.job_id for t in tasks]
    assert all(o.status is JobStatus.done for o in outcomes)
    assert services.running == [[t.job_id for t in tasks]]  # one call for the whole chunk
    assert len(services.scored) == len(tasks)  # one OOD call ...
    stored = {report["job_id"]: report for report in services.stored}  # ... and one reports write
    assert len(stored) == len(tasks)
    for task in tasks:
        alone = run_job(task, resources.predictor, resources.ood, resources.reports)
        assert alone.prediction is not None
        # The model runs image by image in a chunk too: exactly the numbers of the job alone.
        assert stored[task.job_id]["prediction"]["probabilities"] == dict(alone.prediction.probabilities)
        assert stored[task.job_id]["heatmap"] == alone.heatmap.model_dump(mode="json")  # type: ignore[union-attr]
    # The images differ, so crossed ids could not go unnoticed.
    assert len(
        {json.dumps(r["prediction"]["probabilities"], sort_keys=True) for r in stored.values()}
    ) == len(tasks)


def test_a_corrupt_job_fails_alone(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    tasks[1] = _corrupt(tasks[1])

    outcomes = run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    assert [o.status for o in outcomes] == [JobStatus.done, JobStatus.failed, JobStatus.done, JobStatus.done]
    assert outcomes[1].error_code == "image.corrupt"
    assert [f["job_id"] for f in services.failed] == ["job-1"]
    assert services.failed[0]["error_code"] == "image.corrupt"
    assert sorted(r["job_id"] for r in services.stored) == ["job-0", "job-2", "job-3"]
    assert services.running == [["job-0", "job-2", "job-3"]]


def test_a_job_ood_refuses_fails_alone_with_the_ood_code(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    services.ood_error_for = {2}

    outcomes = run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    assert outcomes[2].status is JobStatus.failed and outcomes[2].error_code == "ood.bad_embedding"
    assert [o.status for i, o in enumerate(outcomes) if i != 2] == [JobStatus.done] * 3
    assert [f["job_id"] for f in services.failed] == ["job-2"]


def test_a_report_reports_refuses_fails_alone(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    services.report_error_for = {"job-3"}

    outcomes = run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    assert outcomes[3].status is JobStatus.failed and outcomes[3].error_code == "job.not_found"
    assert [o.status for o in outcomes[:3]] == [JobStatus.done] * 3


def test_the_chunk_task_runs_a_chunk_payload(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    payload = {"tasks": [t.model_dump(mode="json") for t in tasks[:2]]}

    result = predict_chunk.apply(kwargs={"payload": payload}).get()

    assert result == {"jobs": 2, "statuses": {"done": 2}}
    assert sorted(r["job_id"] for r in services.stored) == ["job-0", "job-1"]


def test_a_chunk_of_two_tenants_is_refused_and_each_job_recorded_failed(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    other = tasks[1].model_copy(update={"tenant_id": "another-tenant"})
    payload = {"tasks": [tasks[0].model_dump(mode="json"), other.model_dump(mode="json")]}

    predict_chunk.apply(kwargs={"payload": payload})

    assert services.stored == []
    assert sorted((f["job_id"], f["error_code"]) for f in services.failed) == [
        ("job-0", "task.payload_invalid"),
        ("job-1", "task.payload_invalid"),
    ]


def test_a_transient_ood_outage_raises_for_a_retry_of_the_whole_chunk(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    services.ood_down = True

    with pytest.raises(TransientError):
        run_chunk(tasks, resources.predictor, resources.ood, resources.reports)
    assert services.stored == [] and services.failed == []  # nothing recorded: the retry will


def test_jobs_that_already_have_their_result_are_not_run_again(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    services.finished = {"job-0": "done", "job-2": "rejected"}

    outcomes = run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    assert [o.status for o in outcomes] == [
        JobStatus.done,
        JobStatus.done,
        JobStatus.rejected,
        JobStatus.done,
    ]
    assert len(services.scored) == 2  # only job-1 and job-3 were run
    assert sorted(r["job_id"] for r in services.stored) == ["job-1", "job-3"]


def test_a_chunk_whose_jobs_are_all_finished_runs_nothing(
    tasks: list[InferenceTask], resources: WorkerResources, services: Services
) -> None:
    services.finished = {t.job_id: "done" for t in tasks}

    outcomes = run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    assert all(o.status is JobStatus.done for o in outcomes)
    assert services.scored == [] and services.stored == []


def test_a_chunk_notifies_each_awaited_job_with_its_stored_view_and_the_others_without(
    tasks: list[InferenceTask],
    resources: WorkerResources,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Concurrent single submissions grouped by the gateway: a waiting request is answered from
    # the notification, so its job travels in it; a batch's jobs (nobody waits) travel without.
    notifier = RecordingNotifier()
    monkeypatch.setattr(
        inference_tasks, "get_resources", lambda: dataclasses.replace(resources, finished=notifier)
    )
    awaited = [task.model_copy(update={"awaited": True}) for task in tasks[:2]]
    payload = {"tasks": [t.model_dump(mode="json") for t in [*awaited, *tasks[2:]]]}

    predict_chunk.apply(kwargs={"payload": payload}).get()

    assert [report.get("return_job", False) for report in services.stored] == [True, True, False, False]
    sent = {message.job_id: message for message in notifier.sent}
    assert sorted(sent) == [task.job_id for task in tasks]
    for task in tasks[:2]:
        job = sent[task.job_id].job
        assert job is not None and job.job_id == task.job_id and job.status == JobStatus.done
    assert sent["job-2"].job is None and sent["job-3"].job is None
