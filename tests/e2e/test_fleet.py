"""The whole fleet as separate processes, driven through the public gateway only, with what the
services stored checked in the database itself. Runs on PostgreSQL + Redis and on the embedded
SQLite + SQLite-broker default (the `fleet` fixture), with the tiny real bundle."""

from __future__ import annotations

import io
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bench.fleet_runner import Fleet
from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from services.reports.db.models import Job, Report
from tests.conftest import DATA_ROOT
from tests.e2e.gateway_calls import bearer, error_code, submit_batch, submit_image, wait_for_batch

pytestmark = pytest.mark.e2e

TRIAGE_LEVELS = {"urgent", "routine", "monitor"}
REJECTED = {"rejected_ood", "rejected_quality"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BATCH_SIZE = 20


@pytest.fixture(scope="module")
def manifest(tiny_bundle_dir: Path) -> BundleManifest:
    return load_manifest(tiny_bundle_dir)


@pytest.fixture(scope="module")
def chest_xray() -> Path:
    """A chest X-ray: not skin. With the tiny bundle's random weights only the quality gate can
    reject reliably, and this grey 64 px radiograph fails it whatever the logits say."""
    images = sorted((DATA_ROOT / "ood" / "medical" / "nih_cxr_64px").glob("*.jpg"))
    if not images:
        pytest.fail(f"no chest X-rays under {DATA_ROOT / 'ood' / 'medical'}; set SKINTRIAGE_DATA_ROOT")
    return images[0]


def _jobs_of(database: Engine, **where: object) -> list[Job]:
    with Session(database) as session:
        return list(session.scalars(select(Job).filter_by(**where)))


def _job_count(database: Engine) -> int:
    with Session(database) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_a_ham_image_with_prefer_wait_comes_back_done_with_triage_and_a_heatmap(
    gateway: httpx.Client, key_a: str, ham_images: list[Path], manifest: BundleManifest
) -> None:
    path = ham_images[0]

    response = submit_image(gateway, key_a, path.name, path.read_bytes(), Prefer="wait=30")

    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=30"
    job = response.json()
    assert job["status"] == "done"
    result = job["result"]
    prediction = result["prediction"]
    classes = {c.code for c in manifest.classes}
    assert set(prediction["probabilities"]) == classes
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["triage_level"] in TRIAGE_LEVELS
    assert result["triage_level"] == prediction["triage_level"]
    assert prediction["conformal_set"] and set(prediction["conformal_set"]) <= classes
    assert result["ood"]["decision"] == "accepted"
    assert result["model"]["sha256"] == manifest.onnx_sha256
    assert result["has_heatmap"] is True

    heatmap = gateway.get(f"/v1/jobs/{job['job_id']}/heatmap.png", headers=bearer(key_a))
    assert heatmap.status_code == 200
    assert heatmap.headers["content-type"] == "image/png"
    assert heatmap.content.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(heatmap.content)).format == "PNG"


def test_concurrent_waited_images_each_get_the_result_they_get_alone_some_run_as_one_micro_batch(
    fleet: Fleet, gateway: httpx.Client, key_a: str, ham_images: list[Path]
) -> None:
    # Issue 9: single submissions that arrive while others of the tenant are being registered
    # are registered and queued together, and the worker runs them as one micro-batch.
    paths = ham_images[:8]
    alone = {}
    for path in paths:
        answer = submit_image(gateway, key_a, path.name, path.read_bytes(), Prefer="wait=30")
        assert answer.status_code == 200, answer.text
        alone[path.name] = answer.json()["result"]

    def submit(path: Path) -> tuple[str, httpx.Response]:
        with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as client:
            return path.name, submit_image(client, key_a, path.name, path.read_bytes(), Prefer="wait=30")

    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(submit, paths * 3))

    chunked = 0
    for name, answer in answers:
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["status"] == alone[name]["status"]
        assert result["triage_level"] == alone[name]["triage_level"]
        probabilities = (result["prediction"] or {}).get("probabilities", {})
        expected = (alone[name]["prediction"] or {}).get("probabilities", {})
        assert probabilities == pytest.approx(expected, abs=1e-5)  # its own image's, never a neighbour's
        chunked += result["timings_ms"].get("chunk_jobs", 1) >= 2
    assert len({answer.json()["job_id"] for _, answer in answers}) == len(answers)
    assert chunked > 0, "no concurrent submission ran in a micro-batch"


def test_a_batch_of_ham_images_finishes_and_every_report_is_stored_with_the_bundles_model(
    gateway: httpx.Client,
    database: Engine,
    key_a: str,
    ham_images: list[Path],
    manifest: BundleManifest,
) -> None:
    accepted = submit_batch(gateway, key_a, ham_images[:BATCH_SIZE])
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["accepted"] == BATCH_SIZE and body["rejected"] == []
    job_ids = {item["job_id"] for item in body["items"]}

    batch = wait_for_batch(gateway, key_a, body["batch_id"])

    assert batch["counts"]["total"] == BATCH_SIZE
    assert batch["counts"]["done"] == BATCH_SIZE, batch["counts"]
    assert {job.id for job in _jobs_of(database, batch_id=body["batch_id"])} == job_ids
    with Session(database) as session:
        reports = list(session.scalars(select(Report).where(Report.job_id.in_(job_ids))))
    assert len(reports) == BATCH_SIZE
    for report in reports:
        assert report.status == "done"
        assert report.probabilities is not None
        assert sum(report.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert report.triage_level in TRIAGE_LEVELS
        assert report.model_sha256 == manifest.onnx_sha256
        assert report.model_name == manifest.name and report.model_version == manifest.version


def test_a_zip_of_ham_images_becomes_a_batch_that_finishes(
    gateway: httpx.Client, key_a: str, ham_images: list[Path]
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in ham_images[:3]:
            zipped.writestr(f"lesions/{path.name}", path.read_bytes())
        zipped.writestr("__MACOSX/._ignored.jpg", b"resource fork")
    files = {"archive": ("lesions.zip", archive.getvalue(), "application/zip")}

    accepted = gateway.post("/v1/batches", files=files, headers=bearer(key_a))

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["accepted"] == 3 and body["rejected"] == []
    batch = wait_for_batch(gateway, key_a, body["batch_id"])
    assert batch["counts"]["done"] == 3, batch["counts"]
    assert {item["job_id"] for item in batch["items"]} == {item["job_id"] for item in body["items"]}


def test_a_chest_xray_is_rejected_and_stored_without_a_triage_level(
    gateway: httpx.Client, database: Engine, key_a: str, chest_xray: Path
) -> None:
    response = submit_image(gateway, key_a, chest_xray.name, chest_xray.read_bytes(), Prefer="wait=30")

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "rejected"
    assert job["result"]["ood"]["decision"] in REJECTED
    assert job["result"]["triage_level"] is None and job["result"]["prediction"] is None
    with Session(database) as session:
        report = session.get(Report, job["job_id"])
    assert report is not None
    assert report.status == "rejected"
    assert report.ood_decision in REJECTED
    assert report.triage_level is None and report.probabilities is None and not report.has_heatmap
    heatmap = gateway.get(f"/v1/jobs/{job['job_id']}/heatmap.png", headers=bearer(key_a))
    assert heatmap.status_code == 404


def test_tenant_b_gets_404_for_tenant_a_job(
    gateway: httpx.Client, key_a: str, key_b: str, ham_images: list[Path]
) -> None:
    submitted = submit_image(gateway, key_a, "a.jpg", ham_images[1].read_bytes())
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]

    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/image", f"/v1/jobs/{job_id}/heatmap.png"):
        other = gateway.get(path, headers=bearer(key_b))
        assert other.status_code == 404, (path, other.text)
    assert error_code(gateway.get(f"/v1/jobs/{job_id}", headers=bearer(key_b))) == "job.not_found"
    assert gateway.get(f"/v1/jobs/{job_id}", headers=bearer(key_a)).status_code == 200


def test_a_retry_with_the_same_idempotency_key_returns_the_same_job_and_stores_one(
    gateway: httpx.Client, database: Engine, key_a: str, ham_images: list[Path]
) -> None:
    key = f"e2e-{uuid.uuid4().hex}"
    data = ham_images[2].read_bytes()

    first = submit_image(gateway, key_a, "retry.jpg", data, **{"Idempotency-Key": key})
    again = submit_image(gateway, key_a, "retry.jpg", data, **{"Idempotency-Key": key})

    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replay"] == "true"
    assert [job.id for job in _jobs_of(database, idempotency_key=key)] == [first.json()["job_id"]]


def test_a_text_file_named_jpg_is_refused_with_415_and_creates_no_job(
    gateway: httpx.Client, database: Engine, key_a: str
) -> None:
    filename = f"notes-{uuid.uuid4().hex[:8]}.jpg"
    before = _job_count(database)

    response = submit_image(gateway, key_a, filename, b"Patient notes, not an image.\n" * 20)

    assert response.status_code == 415, response.text
    assert error_code(response) == "image.unsupported_format"
    assert _job_count(database) == before
    assert _jobs_of(database, filename=filename) == []
