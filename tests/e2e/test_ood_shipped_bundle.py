"""The OOD detector of the shipped bundle (models/skintriage-effnet-lite0/2.0.1) through the
whole fleet, production shape: photos that are not skin come back `rejected_ood` by the
detector's own rule and are stored as rejected, while a real lesion photo is triaged.

The detector is required, not optional: a shipped bundle without `ood_detector` fails here (it
never skips), because the release's OOD claims rest on it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import skimage.data
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench.fleet_runner import Fleet
from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from scripts.run_fleet import DEFAULT_BUNDLE, REPO_ROOT
from services.reports.db.models import Report
from tests.e2e.fleet import PRODUCTION, TENANTS, running_fleet
from tests.e2e.gateway_calls import submit_image

pytestmark = [pytest.mark.e2e, pytest.mark.shipped_bundle]

SHIPPED_BUNDLE = REPO_ROOT / DEFAULT_BUNDLE
NON_SKIN = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="module")
def shipped_manifest() -> BundleManifest:
    """The shipped bundle's manifest, which must carry a fitted OOD detector."""
    try:
        manifest = load_manifest(SHIPPED_BUNDLE)
    except Exception as exc:
        pytest.fail(f"the shipped bundle {DEFAULT_BUNDLE} is missing or invalid: {exc}", pytrace=False)
    if manifest.ood_detector is None:
        pytest.fail(
            f"the shipped bundle {DEFAULT_BUNDLE} has no ood_detector: fit it (make fit-ood) and "
            "ship ood_stats.npz with the bundle",
            pytrace=False,
        )
    return manifest


@pytest.fixture(scope="module", params=[PRODUCTION])
def fleet(
    request: pytest.FixtureRequest, shipped_manifest: BundleManifest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The fleet on the shipped bundle (overrides conftest's tiny-bundle fleet in this module)."""
    workdir = tmp_path_factory.mktemp("fleet-ood-shipped")
    with running_fleet(request.param, SHIPPED_BUNDLE, workdir) as started:
        yield started


def _jpeg(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(getattr(skimage.data, name)()).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.mark.parametrize("name", NON_SKIN)
def test_a_non_skin_photo_is_rejected_ood_by_the_shipped_detector_and_stored_as_rejected(
    fleet: Fleet, gateway: httpx.Client, database: Engine, shipped_manifest: BundleManifest, name: str
) -> None:
    assert shipped_manifest.ood_detector is not None
    rule = set(shipped_manifest.ood_detector.rule)

    response = submit_image(gateway, fleet.api_keys[TENANTS[0]], f"{name}.jpg", _jpeg(name), Prefer="wait=30")

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "rejected"
    ood = job["result"]["ood"]
    assert ood["decision"] == "rejected_ood", ood
    assert set(ood["rule"].split("+")) <= rule
    assert {"msp", "entropy", "energy", "mahalanobis", "knn"} <= set(ood["scores"])
    with Session(database) as session:
        report = session.get(Report, job["job_id"])
    assert report is not None
    assert (report.status, report.ood_decision, report.triage_level) == ("rejected", "rejected_ood", None)


def test_a_ham_lesion_photo_is_accepted_by_the_shipped_detector(
    fleet: Fleet, gateway: httpx.Client, ham_images: list[Path]
) -> None:
    path = ham_images[-1]

    response = submit_image(
        gateway, fleet.api_keys[TENANTS[0]], path.name, path.read_bytes(), Prefer="wait=30"
    )

    assert response.status_code == 200, response.text
    assert response.json()["result"]["ood"]["decision"] == "accepted", response.json()["result"]["ood"]
