"""The domain pipeline on the tiny bundle and a real HAM10000 image, with respx at the HTTP seam."""

from __future__ import annotations

import base64
import io
import json
import threading
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from contracts.jobs import InferenceTask, JobStatus
from contracts.ood_extra import QualityMeasurements
from contracts.reports import HeatmapSource, ReportUpsert
from model_bundle.heatmap import render_heatmap
from services.inference.domain.errors import ImageCorruptError
from services.inference.domain.pipeline import AlreadyFinishedError, decode_image, run_job
from services.inference.resources import WorkerResources
from tests.inference.conftest import JOB_ID, REPORTS_URL, REQUEST_ID, TENANT_ID, TOKEN, verdict


def _run(job: InferenceTask, resources: WorkerResources) -> ReportUpsert:
    return run_job(job, resources.predictor, resources.ood, resources.reports)


def _put_body(mocked: respx.MockRouter) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(mocked["report_put"].calls.last.request.content)
    return body


def test_accepted_image_report_has_calibrated_probabilities_summing_to_one(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    prediction = _put_body(mocked)["prediction"]
    probabilities = prediction["probabilities"]
    assert list(probabilities) == list(resources.predictor.manifest.class_codes)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction["top_class"] == max(probabilities, key=probabilities.get)


def test_accepted_image_report_has_triage_level_and_conformal_set(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    body = _put_body(mocked)
    assert body["status"] == "done"
    assert body["prediction"]["triage_level"] in {"urgent", "routine", "monitor"}
    conformal = body["prediction"]["conformal_set"]
    assert conformal and set(conformal) <= set(body["prediction"]["probabilities"])
    assert body["prediction"]["top_class"] in conformal
    assert body["ood"]["decision"] == "accepted"


def test_accepted_image_report_carries_a_heatmap_map_that_renders_to_a_png_of_the_image_size(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    body = _put_body(mocked)
    assert body["heatmap_png_b64"] is None  # no PNG is encoded per job any more
    png = render_heatmap(HeatmapSource.model_validate(body["heatmap"]))
    with Image.open(io.BytesIO(png)) as heatmap:
        assert heatmap.format == "PNG"
        assert heatmap.size == (job.image.width, job.image.height)


def test_the_lazily_rendered_heatmap_is_byte_identical_to_the_eagerly_rendered_one(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    body = _put_body(mocked)
    predictor = resources.predictor
    image = decode_image(job.image)
    raw = predictor.run([image])[0]
    top_class = body["prediction"]["top_class"]
    eager = predictor.heatmap(raw, top_class, *image.size)
    lazy = render_heatmap(HeatmapSource.model_validate(body["heatmap"]))
    assert lazy == eager
    # Guard against a vacuous pass: another class's map draws a different picture.
    other = next(c for c in predictor.manifest.class_codes if c != top_class)
    assert predictor.heatmap(raw, other, *image.size) != eager


def test_report_names_the_model_and_its_sha_and_carries_timings(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    body = _put_body(mocked)
    manifest = resources.predictor.manifest
    assert body["model"] == {
        "name": manifest.name,
        "version": manifest.version,
        "sha256": manifest.onnx_sha256,
    }
    assert {"decode", "inference", "ood", "total"} <= set(body["timings_ms"])
    assert body["timings_ms"]["total"] >= body["timings_ms"]["inference"] >= 0


def test_report_is_put_to_the_job_url_with_internal_headers(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    request = mocked["report_put"].calls.last.request
    assert str(request.url) == f"{REPORTS_URL}/internal/v1/reports/{JOB_ID}"
    assert request.headers["X-Internal-Token"] == TOKEN
    assert request.headers["X-Tenant-Id"] == TENANT_ID
    assert request.headers["X-Request-ID"] == REQUEST_ID


def test_ood_request_carries_bundle_sha_logits_embedding_and_quality(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    request = mocked["ood"].calls.last.request
    body = json.loads(request.content)
    manifest = resources.predictor.manifest
    assert body["model_sha256"] == manifest.onnx_sha256
    assert len(body["logits"]) == len(manifest.classes)
    assert len(body["embedding"]) == manifest.io.embedding_dim
    quality = QualityMeasurements.model_validate(body["quality"])
    assert (quality.width, quality.height) == (job.image.width, job.image.height)
    assert request.headers["X-Internal-Token"] == TOKEN
    assert request.headers["X-Tenant-Id"] == TENANT_ID


def test_job_is_marked_running_before_ood_is_asked(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    _run(job, resources)

    order = [call.request.url.path for call in mocked.calls]
    assert order == ["/internal/v1/jobs/running", "/v1/score", f"/internal/v1/reports/{JOB_ID}"]


@pytest.mark.parametrize("decision", ["rejected_ood", "rejected_quality"])
def test_rejected_verdict_stores_rejected_report_without_triage(
    decision: str, job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    mocked["ood"].respond(200, json=verdict(decision, rule="msp", reasons=["msp_below_min"]))

    _run(job, resources)

    body = _put_body(mocked)
    assert body["status"] == JobStatus.rejected
    assert body["prediction"] is None
    assert body["heatmap_png_b64"] is None
    assert body["heatmap"] is None
    assert body["ood"]["decision"] == decision
    assert body["ood"]["scores"]["msp"] == pytest.approx(0.15)


def test_undecodable_image_fails_with_image_corrupt_before_calling_ood(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    broken = job.image.model_copy(
        update={"data_b64": base64.b64encode(b"\xff\xd8\xff\xe0 not a jpeg").decode()}
    )

    with pytest.raises(ImageCorruptError) as caught:
        _run(job.model_copy(update={"image": broken}), resources)

    assert caught.value.code == "image.corrupt"
    assert not mocked["ood"].called


def test_image_bytes_of_another_format_than_declared_fail_with_image_corrupt(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    mislabeled = job.image.model_copy(update={"media_type": "image/png"})

    with pytest.raises(ImageCorruptError):
        _run(job.model_copy(update={"image": mislabeled}), resources)


def test_the_job_is_marked_running_while_the_model_runs_not_before_it(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mark-running round trip overlaps the model: reports is asked while ONNX Runtime runs.
    # Were the call made first, the model would not have started when reports answers it.
    model_started = threading.Event()
    model_running_when_claimed: list[bool] = []
    predictor = resources.predictor
    run_model = predictor.run

    def run(*args: Any, **kwargs: Any) -> Any:
        model_started.set()
        return run_model(*args, **kwargs)

    def claim(request: httpx.Request) -> httpx.Response:
        model_running_when_claimed.append(model_started.wait(timeout=5.0))
        return httpx.Response(200, json={"changed": 1})

    monkeypatch.setattr(predictor, "run", run)
    mocked["job_running"].mock(side_effect=claim)

    _run(job, resources)

    assert model_running_when_claimed == [True]
    assert _put_body(mocked)["status"] == "done"


def test_a_claim_saying_the_job_already_ended_drops_the_model_output_unused(
    job: InferenceTask, resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    mocked["job_running"].respond(200, json={"changed": 0, "finished": {JOB_ID: "done"}})

    with pytest.raises(AlreadyFinishedError):
        _run(job, resources)

    assert not mocked["ood"].called and not mocked["report_put"].called
