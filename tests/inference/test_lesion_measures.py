"""What comparing images of one lesion needs, sent by the worker with the done report of an image of
a tracked lesion (`InferenceTask.track_lesion`; single jobs and micro-batches): the pooled embedding
as float16 and the segmented lesion's area. A rejected image carries neither, nor does an image
outside a lesion (it can never be compared, so the worker spares the segmentation). The tiny
bundle and real HAM10000 images; respx at the HTTP seam."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import respx

from contracts.jobs import InferenceTask
from model_bundle.segmentation import segment_lesion
from services.inference.domain.pipeline import decode_image, run_chunk, run_job
from services.inference.resources import WorkerResources
from tests.inference.conftest import OOD_URL, REPORTS_URL, TENANT_ID, store_image, verdict


def _put_body(mocked: respx.MockRouter) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(mocked["report_put"].calls.last.request.content)
    return body


@pytest.fixture
def lesion_job(job: InferenceTask) -> InferenceTask:
    """The job, as the task of an image of a tracked lesion."""
    return job.model_copy(update={"track_lesion": True})


def test_a_done_report_carries_the_float16_embedding_and_the_lesion_area(
    lesion_job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    job = lesion_job
    run_job(job, resources.predictor, resources.ood, resources.reports)

    body = _put_body(mocked)
    image = decode_image(job.image)
    raw = resources.predictor.run([image])[0]
    sent = np.frombuffer(base64.b64decode(body["embedding_f16_b64"]), dtype="<f2")
    assert sent.shape == raw.embedding.shape
    np.testing.assert_allclose(sent.astype(np.float32), raw.embedding, rtol=2e-3, atol=1e-3)
    assert 0.0 < body["lesion_area_fraction"] < 1.0
    assert body["lesion_area_fraction"] == pytest.approx(segment_lesion(image).area_fraction)


def test_a_done_image_outside_a_lesion_carries_no_embedding_or_area(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    assert job.track_lesion is False  # the default: tasks queued before lesions too
    run_job(job, resources.predictor, resources.ood, resources.reports)

    body = _put_body(mocked)
    assert body["status"] == "done"
    assert body["embedding_f16_b64"] is None
    assert body["lesion_area_fraction"] is None


def test_a_rejected_report_carries_no_embedding_or_area(
    lesion_job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    mocked["ood"].respond(200, json=verdict("rejected_ood", rule="msp", reasons=["msp_below_min"]))

    run_job(lesion_job, resources.predictor, resources.ood, resources.reports)

    body = _put_body(mocked)
    assert body["embedding_f16_b64"] is None
    assert body["lesion_area_fraction"] is None


def test_every_lesion_report_of_a_micro_batch_carries_its_own_embedding_and_area(
    ham_images: list[Path], resources: WorkerResources
) -> None:
    tasks = [
        InferenceTask(
            job_id=f"job-{i}",
            tenant_id=TENANT_ID,
            image=store_image(ham_images[i]),
            submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
            track_lesion=i < 3,
        )
        for i in range(4)
    ]
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{REPORTS_URL}/internal/v1/jobs/running").respond(200, json={"changed": 3})
        router.post(f"{OOD_URL}/v1/score/batch").respond(
            200, json={"results": [{"verdict": verdict()} for _ in tasks]}
        )
        put = router.put(f"{REPORTS_URL}/internal/v1/reports").respond(
            200, json={"results": [{"job_id": t.job_id, "status": "done"} for t in tasks]}
        )

        run_chunk(tasks, resources.predictor, resources.ood, resources.reports)

    reports = json.loads(put.calls.last.request.content)["reports"]
    untracked = reports.pop()
    assert (untracked["embedding_f16_b64"], untracked["lesion_area_fraction"]) == (None, None)
    for task, report in zip(tasks[:3], reports, strict=True):
        image = decode_image(task.image)
        assert report["lesion_area_fraction"] == pytest.approx(segment_lesion(image).area_fraction)
        sent = np.frombuffer(base64.b64decode(report["embedding_f16_b64"]), dtype="<f2")
        expected = resources.predictor.run([image])[0].embedding
        np.testing.assert_allclose(sent.astype(np.float32), expected, rtol=2e-3, atol=1e-3)
    assert len({report["embedding_f16_b64"] for report in reports}) == 3
