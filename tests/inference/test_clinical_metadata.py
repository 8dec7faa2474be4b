"""Clinical metadata through the worker: a format-2 bundle's model is given the task's age, sex
and body site and the report records which of them it used; an image-only bundle ignores them.
Real ONNX Runtime sessions on the tiny bundles, respx at the HTTP seam."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import respx
from PIL import Image

from contracts.jobs import ClinicalMetadata, InferenceTask
from contracts.reports import HeatmapSource, ReportUpsert
from model_bundle.heatmap import render_heatmap
from services.inference.domain.clinical import metadata_used
from services.inference.domain.pipeline import run_job
from services.inference.resources import WorkerResources, close_resources, init_resources
from services.inference.tasks import predict
from tests.inference.conftest import store_image, worker_settings
from training.data import metadata_encoding

EVERYTHING = ClinicalMetadata(age=54, sex="female", body_site="back")


@pytest.fixture
def v2_resources(tiny_bundle_v2_dir: Path) -> Iterator[WorkerResources]:
    """The worker's resources on the format-2 tiny bundle."""
    yield init_resources(worker_settings(tiny_bundle_v2_dir))
    close_resources()


def _run(job: InferenceTask, resources: WorkerResources, clinical: ClinicalMetadata | None) -> ReportUpsert:
    return run_job(
        job.model_copy(update={"clinical": clinical}), resources.predictor, resources.ood, resources.reports
    )


def _ood_logits(mocked: respx.MockRouter) -> list[np.ndarray]:
    """The logits of every OOD request so far: what the model output, per job."""
    return [np.asarray(json.loads(call.request.content)["logits"]) for call in mocked["ood"].calls]


def _stored(mocked: respx.MockRouter) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(mocked["report_put"].calls.last.request.content)
    return body


def test_clinical_metadata_changes_what_a_v2_model_outputs(
    job: InferenceTask, v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, v2_resources, None)
    _run(job, v2_resources, EVERYTHING)

    without, with_metadata = _ood_logits(mocked)
    assert not np.allclose(without, with_metadata)


def test_v2_report_records_every_recognised_field_as_used(
    job: InferenceTask, v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, v2_resources, EVERYTHING)

    assert _stored(mocked)["prediction"]["metadata_used"] == ["age", "sex", "body_site"]


def test_v2_report_without_clinical_metadata_records_none_used(
    job: InferenceTask, v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, v2_resources, None)

    assert _stored(mocked)["prediction"]["metadata_used"] == []


def test_body_site_outside_the_vocabulary_is_reported_and_treated_as_not_used(
    job: InferenceTask, v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, v2_resources, ClinicalMetadata(age=54, sex="female"))
    _run(job, v2_resources, ClinicalMetadata(age=54, sex="female", body_site="oral mucosa"))

    assert _stored(mocked)["prediction"]["metadata_used"] == ["age", "sex"]
    without_site, unknown_site = _ood_logits(mocked)
    np.testing.assert_array_equal(without_site, unknown_site)


def test_body_site_alias_counts_as_used(
    job: InferenceTask, v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, v2_resources, ClinicalMetadata(body_site="Lower-Limb"))

    assert _stored(mocked)["prediction"]["metadata_used"] == ["body_site"]


def test_image_only_bundle_ignores_clinical_metadata_and_records_no_use(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources, None)
    _run(job, resources, EVERYTHING)

    without, with_metadata = _ood_logits(mocked)
    np.testing.assert_array_equal(without, with_metadata)
    assert _stored(mocked)["prediction"]["metadata_used"] is None


def test_v2_heatmap_covers_the_whole_letterboxed_image(
    job: InferenceTask,
    v2_resources: WorkerResources,
    mocked: respx.MockRouter,
    ham_images: list[Path],
    tmp_path: Path,
) -> None:
    # 200 x 80 is far wider than the 32 x 24 input: the letterbox pads above and below it, where a
    # centre crop would have cut its sides off (and left the overlay's sides transparent).
    with Image.open(ham_images[1]) as source:
        source.convert("RGB").resize((200, 80)).save(tmp_path / "wide.jpg")
    wide = job.model_copy(update={"image": store_image(tmp_path / "wide.jpg")})

    _run(wide, v2_resources, None)

    png = render_heatmap(HeatmapSource.model_validate(_stored(mocked)["heatmap"]))
    with Image.open(io.BytesIO(png)) as heatmap:
        alpha = np.asarray(heatmap.convert("RGBA"))[..., 3]
    assert alpha.shape == (80, 200)
    assert (alpha > 0).all()


def test_a_task_with_a_clinical_part_reaches_a_v2_model_through_the_celery_task(
    payload: dict[str, Any], v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    payload["clinical"] = {"age": 70, "sex": "male", "body_site": "face"}

    result = predict.apply(kwargs={"payload": payload}, task_id=payload["job_id"])

    assert result.successful()
    assert _stored(mocked)["prediction"]["metadata_used"] == ["age", "sex", "body_site"]


def test_a_task_queued_before_the_clinical_part_existed_is_still_valid(
    payload: dict[str, Any], v2_resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    del payload["clinical"]

    result = predict.apply(kwargs={"payload": payload}, task_id=payload["job_id"])

    assert result.result["status"] == "done"
    assert _stored(mocked)["prediction"]["metadata_used"] == []


@pytest.mark.parametrize(
    ("clinical", "used"),
    [
        (ClinicalMetadata(age=0), ["age"]),
        (ClinicalMetadata(sex="other"), []),
        (ClinicalMetadata(sex="unknown", body_site="TRUNK"), ["body_site"]),
        (ClinicalMetadata(sex="male", body_site="  upper  limb "), ["sex", "body_site"]),
    ],
)
def test_metadata_used_follows_the_bundles_vocabulary(clinical: ClinicalMetadata, used: list[str]) -> None:
    assert metadata_used(metadata_encoding(), clinical) == used
