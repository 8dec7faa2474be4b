"""The OOD detector through the whole fleet: a tiny real bundle WITH a fitted `ood_detector`, whose
statistics are fitted here on the tiny model's embeddings of 20 HAM10000 images. A held-out HAM
image comes back done; a photo of a rocket launch (not skin, but colourful and sharp, so it passes
the quality gate) comes back `rejected_ood` naming the detector's rule, and is stored as rejected.
Tenant b is configured (OOD_TENANT_ACCEPTANCE, keyed by the tenant's id as the reports database
issues it) for the grid's lenient 0.99 level, whose thresholds let even the rocket through, so the
tenant id is seen to travel from the gateway through the worker to the verdict.

The tiny model's weights are random, so its embeddings separate skin from non-skin only roughly:
skimage's rocket lies far from the HAM cluster, while its astronaut and coffee photos do not, and
the fixture checks that premise before the fleet starts so a change in the model fails clearly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench.fleet_runner import Fleet
from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from model_bundle.predictor import Predictor
from scripts.run_fleet import reports_cli, run_migrations
from services.ood.domain.scoring import knn_score, mahalanobis_score
from services.reports.db.models import Report
from tests.e2e.fleet import EMBEDDED, PRODUCTION, TENANTS, backends
from tests.e2e.gateway_calls import bearer, submit_image
from tests.fixtures.tiny_bundle import write_tiny_bundle

pytestmark = pytest.mark.e2e

FIT_IMAGES = 20
KNN_K = 3
RULE = ("mahalanobis", "knn")
# 20 images are too few to read a 95th percentile off, so each threshold is the largest score
# among the fitting images times this margin; the held-out HAM images stay below it.
MARGIN = 1.5
SHRINKAGE = 0.2  # towards a scaled identity: 20 embeddings barely determine an 8 x 8 covariance
LENIENT = 0.99


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rocket_jpeg() -> bytes:
    """A colour photo of a rocket launch, 640 x 427: nothing like a dermoscopic image."""
    return _jpeg(Image.fromarray(skimage.data.rocket()))


def _embeddings(predictor: Predictor, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    outputs = predictor.run(images)
    embeddings = np.stack([o.embedding for o in outputs]).astype(np.float64)
    return embeddings, np.stack([o.logits for o in outputs]).argmax(axis=1)


def _scores(
    embedding: np.ndarray, means: np.ndarray, precision: np.ndarray, reference: np.ndarray
) -> list[float]:
    return [mahalanobis_score(embedding, means, precision), knn_score(embedding, reference, KNN_K)]


@pytest.fixture(scope="module")
def detector_bundle_dir(
    tmp_path_factory: pytest.TempPathFactory, ham_images: list[Path], rocket_jpeg: bytes
) -> Path:
    """The tiny bundle plus ood_stats.npz and an ood_detector fitted on 20 HAM images."""
    directory = write_tiny_bundle(tmp_path_factory.mktemp("ood-bundle") / "tiny-test" / "0.0.1")
    predictor = Predictor(directory)
    fit = [Image.open(path).convert("RGB") for path in ham_images[:FIT_IMAGES]]
    embeddings, labels = _embeddings(predictor, fit)
    classes = len(predictor.manifest.classes)
    overall = embeddings.mean(axis=0)
    means = np.stack(
        [embeddings[labels == c].mean(axis=0) if (labels == c).any() else overall for c in range(classes)]
    )
    centred = embeddings - means[labels]
    covariance = centred.T @ centred / len(centred)
    dim = covariance.shape[0]
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.trace(covariance) / dim * np.eye(dim)
    precision = np.linalg.inv(covariance)
    reference = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    fitted = np.asarray([_scores(e, means, precision, reference) for e in embeddings])
    thresholds = dict(zip(RULE, (MARGIN * fitted.max(axis=0)).tolist(), strict=True))
    rocket, _ = _embeddings(predictor, [Image.open(io.BytesIO(rocket_jpeg)).convert("RGB")])
    rocket_scores = dict(zip(RULE, _scores(rocket[0], means, precision, reference), strict=True))
    assert rocket_scores["mahalanobis"] > 2 * thresholds["mahalanobis"], (
        f"premise: the tiny model puts the rocket far from HAM ({rocket_scores} vs {thresholds})"
    )

    np.savez(
        directory / "ood_stats.npz",
        class_means=means.astype(np.float32),
        precision=precision.astype(np.float32),
        knn_reference=reference.astype(np.float32),
    )
    body = json.loads((directory / "bundle.json").read_text())
    body["ood_detector"] = {
        "fitted_on_sha256": body["onnx_sha256"],
        "knn_k": KNN_K,
        "rule": list(RULE),
        "target_acceptance": 0.95,
        "thresholds": thresholds,
        "acceptance_grid": {f"{LENIENT:.2f}": {name: 2 * rocket_scores[name] for name in RULE}},
        "selection": f"e2e test: max over {FIT_IMAGES} HAM images x {MARGIN}",
    }
    (directory / "bundle.json").write_text(json.dumps(body, indent=2))
    load_manifest(directory)
    return directory


@pytest.fixture(scope="module")
def manifest(detector_bundle_dir: Path) -> BundleManifest:
    return load_manifest(detector_bundle_dir)


class LenientTenantFleet(Fleet):
    """A fleet whose OOD service runs tenant b at the LENIENT acceptance. OOD_TENANT_ACCEPTANCE
    is keyed by tenant id, which the reports database issues, so the tenant is created (and its
    id read) after the migrations and before any service starts; Fleet.start then finds it."""

    def start(self) -> None:
        run_migrations(self.env)
        tenant_id = reports_cli(self.env, "create-tenant", TENANTS[1]).strip().splitlines()[-1]
        self.env["OOD_TENANT_ACCEPTANCE"] = json.dumps({tenant_id: LENIENT})
        super().start()


@pytest.fixture(scope="module", params=[PRODUCTION, EMBEDDED])
def fleet(
    request: pytest.FixtureRequest, detector_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The fleet on the tiny bundle with a detector and tenant b at the lenient level
    (overrides conftest's tiny-bundle fleet)."""
    workdir = tmp_path_factory.mktemp(f"fleet-ood-{request.param}")
    with (
        backends(request.param, workdir) as chosen,
        LenientTenantFleet(chosen, detector_bundle_dir, workdir, TENANTS) as started,
    ):
        yield started
        started.check_alive()


def test_a_held_out_ham_image_is_accepted_by_the_detector(
    gateway: httpx.Client, key_a: str, ham_images: list[Path], manifest: BundleManifest
) -> None:
    path = ham_images[FIT_IMAGES]

    response = submit_image(gateway, key_a, path.name, path.read_bytes(), Prefer="wait=30")

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "done", job
    ood = job["result"]["ood"]
    assert ood["decision"] == "accepted"
    assert {"msp", "entropy", "energy", "mahalanobis", "knn"} <= set(ood["scores"])
    assert manifest.ood_detector is not None
    assert ood["thresholds"]["mahalanobis_max"] == pytest.approx(
        manifest.ood_detector.thresholds["mahalanobis"]
    )


def test_a_non_skin_photo_is_rejected_ood_by_the_detector_and_stored_as_rejected(
    gateway: httpx.Client, database: Engine, key_a: str, rocket_jpeg: bytes
) -> None:
    response = submit_image(gateway, key_a, "rocket.jpg", rocket_jpeg, Prefer="wait=30")

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "rejected"
    ood = job["result"]["ood"]
    assert ood["decision"] == "rejected_ood"
    assert "mahalanobis" in ood["rule"].split("+")
    assert job["result"]["triage_level"] is None and job["result"]["prediction"] is None
    with Session(database) as session:
        report = session.get(Report, job["job_id"])
    assert report is not None
    assert report.status == "rejected"
    assert report.ood_decision == "rejected_ood"
    assert (
        report.ood is not None and report.ood["scores"]["mahalanobis"] > ood["thresholds"]["mahalanobis_max"]
    )
    assert report.triage_level is None and report.probabilities is None and not report.has_heatmap
    heatmap = gateway.get(f"/v1/jobs/{job['job_id']}/heatmap.png", headers=bearer(key_a))
    assert heatmap.status_code == 404


def test_a_tenant_at_a_lenient_acceptance_gets_that_levels_thresholds(
    gateway: httpx.Client, key_b: str, rocket_jpeg: bytes, manifest: BundleManifest
) -> None:
    response = submit_image(gateway, key_b, "rocket.jpg", rocket_jpeg, Prefer="wait=30")

    assert response.status_code == 200, response.text
    ood = response.json()["result"]["ood"]
    assert ood["decision"] == "accepted"
    assert ood["thresholds"]["target_acceptance"] == LENIENT
    assert manifest.ood_detector is not None
    lenient = manifest.ood_detector.acceptance_grid[f"{LENIENT:.2f}"]
    assert ood["thresholds"]["mahalanobis_max"] == pytest.approx(lenient["mahalanobis"])
