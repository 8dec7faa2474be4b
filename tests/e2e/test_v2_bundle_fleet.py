"""The whole fleet on a format-2 bundle (tests/fixtures/tiny_bundle.py's `write_tiny_bundle_v2`):
letterboxed non-square input, clinical metadata fused into the logits, and an OOD detector whose
rule uses the outlier-exposure score `oe`. One upload with clinical metadata and one without,
each checked in the reports database itself. Embedded backends only: the production shape's
plumbing is the same and already runs in test_fleet.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from bench.fleet_runner import Fleet
from model_bundle.loader import load_manifest
from services.reports.db.engine import make_engine
from services.reports.db.models import Report
from tests.e2e.fleet import EMBEDDED, TENANTS, running_fleet
from tests.e2e.gateway_calls import bearer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def v2_fleet(tiny_bundle_v2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(EMBEDDED, tiny_bundle_v2_dir, tmp_path_factory.mktemp("fleet-v2")) as started:
        yield started


def _upload(fleet: Fleet, image: Path, **form: str) -> dict[str, Any]:
    """POST /v1/images and wait for the finished job."""
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as gateway:
        response = gateway.post(
            "/v1/images",
            files={"file": (image.name, image.read_bytes(), "image/jpeg")},
            data=form,
            headers=bearer(fleet.api_keys[TENANTS[0]], Prefer="wait=30"),
        )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def _stored(fleet: Fleet, job_id: str) -> Report:
    engine = make_engine(fleet.database_url, poolclass=NullPool)
    try:
        with Session(engine) as session:
            report = session.get(Report, job_id)
            assert report is not None
            return report
    finally:
        engine.dispose()


def test_v2_fleet_fuses_clinical_metadata_and_scores_oe(
    v2_fleet: Fleet, tiny_bundle_v2_dir: Path, ham_images: list[Path]
) -> None:
    manifest = load_manifest(tiny_bundle_v2_dir)
    assert manifest.ood_detector is not None

    with_metadata = _upload(
        v2_fleet, ham_images[0], patient_ref="pat-1", age="63", sex="male", body_site="arm"
    )
    image_only = _upload(v2_fleet, ham_images[0])

    for job in (with_metadata, image_only):
        assert job["status"] == "done", job
        assert job["result"]["model"] == {
            "name": manifest.name,
            "version": "2.0.0",
            "sha256": manifest.onnx_sha256,
        }
        assert job["result"]["has_heatmap"] is True
    assert with_metadata["result"]["prediction"]["metadata_used"] == ["age", "sex", "body_site"]
    assert image_only["result"]["prediction"]["metadata_used"] == []

    fused, alone = _stored(v2_fleet, with_metadata["job_id"]), _stored(v2_fleet, image_only["job_id"])
    assert fused.metadata_used == ["age", "sex", "body_site"]
    assert alone.metadata_used == []
    assert fused.probabilities != alone.probabilities  # same image: only the metadata differs
    for report in (fused, alone):
        assert report.ood is not None
        assert {"mahalanobis", "oe"} <= set(report.ood["scores"])
        assert report.ood["thresholds"]["oe_max"] == manifest.ood_detector.thresholds["oe"]
