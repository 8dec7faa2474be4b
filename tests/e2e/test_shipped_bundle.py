"""The fleet on the shipped bundle (models/skintriage-effnet-lite0/2.0.1), production shape
(PostgreSQL + Redis): real images in, the trained model's results out.

The bundle is required, not optional: without it this fails (it never skips), because a release
whose default bundle is missing cannot serve. Deselect with `-m "not shipped_bundle"` while a
model is still being trained.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bench.fleet_runner import Fleet
from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from scripts.run_fleet import DEFAULT_BUNDLE, REPO_ROOT
from services.reports.db.models import Report
from tests.e2e.fleet import PRODUCTION, TENANTS, running_fleet
from tests.e2e.gateway_calls import bearer, submit_image

pytestmark = [pytest.mark.e2e, pytest.mark.shipped_bundle]

SHIPPED_BUNDLE = REPO_ROOT / DEFAULT_BUNDLE
IMAGES = 4


@pytest.fixture(scope="module")
def shipped_manifest() -> BundleManifest:
    """The shipped bundle's manifest; a missing or invalid bundle fails here, loudly."""
    if not (SHIPPED_BUNDLE / "bundle.json").is_file():
        pytest.fail(
            f"the shipped bundle {DEFAULT_BUNDLE} does not exist: train and build it "
            "(make train) before running the e2e suite",
            pytrace=False,
        )
    try:
        return load_manifest(SHIPPED_BUNDLE)
    except Exception as exc:
        pytest.fail(f"the shipped bundle {DEFAULT_BUNDLE} is invalid: {exc}", pytrace=False)


@pytest.fixture(scope="module", params=[PRODUCTION])
def fleet(
    request: pytest.FixtureRequest,
    shipped_manifest: BundleManifest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """The fleet on the shipped bundle (overrides conftest's tiny-bundle fleet in this module)."""
    workdir = tmp_path_factory.mktemp("fleet-shipped")
    with running_fleet(request.param, SHIPPED_BUNDLE, workdir) as started:
        yield started


def test_the_shipped_model_triages_real_ham_images_with_prefer_wait(
    fleet: Fleet,
    gateway: httpx.Client,
    database: Engine,
    ham_images: list[Path],
    shipped_manifest: BundleManifest,
) -> None:
    key = fleet.api_keys[TENANTS[0]]
    classes = {c.code for c in shipped_manifest.classes}

    jobs = [
        submit_image(gateway, key, path.name, path.read_bytes(), Prefer="wait=30")
        for path in ham_images[:IMAGES]
    ]

    for response in jobs:
        assert response.status_code == 200, response.text  # finished within the wait
        assert response.json()["status"] in {"done", "rejected"}
        assert response.json()["result"]["model"] == {
            "name": shipped_manifest.name,
            "version": shipped_manifest.version,
            "sha256": shipped_manifest.onnx_sha256,
        }
    # The OOD rule may reject a few in-distribution images (its val acceptance is below 1), so
    # not every image must be done, but a trained model accepts most HAM10000 lesions.
    done = [r.json() for r in jobs if r.json()["status"] == "done"]
    assert len(done) >= IMAGES - 1, [r.json()["result"]["ood"] for r in jobs]
    for job in done:
        prediction = job["result"]["prediction"]
        assert set(prediction["probabilities"]) == classes
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert job["result"]["triage_level"] in {"urgent", "routine", "monitor"}
        assert prediction["conformal_set"] and set(prediction["conformal_set"]) <= classes
        heatmap = gateway.get(f"/v1/jobs/{job['job_id']}/heatmap.png", headers=bearer(key))
        assert heatmap.status_code == 200
        assert Image.open(io.BytesIO(heatmap.content)).format == "PNG"

    with Session(database) as session:
        ids = [r.json()["job_id"] for r in jobs]
        stored = list(session.scalars(select(Report).where(Report.job_id.in_(ids))))
    assert len(stored) == IMAGES
    assert {r.model_sha256 for r in stored} == {shipped_manifest.onnx_sha256}
