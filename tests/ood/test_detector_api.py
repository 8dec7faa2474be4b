"""The OOD app on a tiny bundle with a fitted detector: the detector decides, tenants get their
own strictness, and statistics that do not match the bundle's model stop start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contracts.bundle import BundleManifest
from model_bundle.loader import BundleError, load_manifest
from services.ood.adapters.stats_file import OodStatsError
from services.ood.api.app import create_app
from services.ood.config import Settings
from services.ood.domain.strictness import UnknownAcceptanceError
from tests.ood.conftest import TOKEN
from tests.ood.detector_bundle import SPREAD, spread_stats, write_detector_bundle

AUTH = {"X-Internal-Token": TOKEN}
GRID = {"0.90": {"mahalanobis": 2.0}, "0.99": {"mahalanobis": 16.0}}


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_detector_bundle(tmp_path_factory.mktemp("detector") / "b", grid=GRID)


@pytest.fixture(scope="module")
def detector_manifest(detector_bundle: Path) -> BundleManifest:
    return load_manifest(detector_bundle)


@pytest.fixture
def client(detector_bundle: Path) -> Iterator[TestClient]:
    settings = Settings(
        bundle_dir=detector_bundle, internal_token=TOKEN, tenant_acceptance={"lenient": 0.99, "strict": 0.9}
    )
    with TestClient(create_app(settings)) as started:
        yield started


def _body(manifest: BundleManifest, distance: float, tenant: str | None = None) -> dict[str, Any]:
    """Confident logits and an embedding `distance` from the nv class mean (Mahalanobis
    distance**2 under the identity precision)."""
    embedding = SPREAD * np.eye(8)[5] + distance * np.eye(8)[7]
    return {
        "model_sha256": manifest.onnx_sha256,
        "logits": [0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0],
        "embedding": embedding.tolist(),
        "tenant_id": tenant,
    }


def _start(bundle: Path, **settings: Any) -> None:
    with TestClient(create_app(Settings(bundle_dir=bundle, internal_token=TOKEN, **settings))):
        pass


def test_embedding_near_a_class_mean_is_accepted(
    client: TestClient, detector_manifest: BundleManifest
) -> None:
    response = client.post("/v1/score", json=_body(detector_manifest, 1.0), headers=AUTH)

    assert response.status_code == 200
    assert response.json()["decision"] == "accepted"


def test_far_embedding_is_rejected_ood_naming_the_rule_with_every_score(
    client: TestClient, detector_manifest: BundleManifest
) -> None:
    response = client.post("/v1/score", json=_body(detector_manifest, 10.0), headers=AUTH)

    verdict = response.json()
    assert verdict["decision"] == "rejected_ood"
    assert verdict["rule"] == "mahalanobis"
    assert set(verdict["scores"]) == {"msp", "entropy", "energy", "mahalanobis", "knn"}
    assert verdict["thresholds"]["mahalanobis_max"] == 4.0


@pytest.mark.parametrize(
    ("tenant", "decision"),
    [("lenient", "accepted"), ("strict", "rejected_ood"), ("other", "rejected_ood"), (None, "rejected_ood")],
)
def test_tenant_acceptance_picks_the_grid_thresholds(
    client: TestClient, detector_manifest: BundleManifest, tenant: str | None, decision: str
) -> None:
    # distance 3 -> Mahalanobis 9: above the default (4.0) and 0.90 (2.0) thresholds, below 0.99's (16.0)
    response = client.post("/v1/score", json=_body(detector_manifest, 3.0, tenant), headers=AUTH)

    assert response.json()["decision"] == decision


def test_lenient_tenant_is_told_its_thresholds(client: TestClient, detector_manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(detector_manifest, 3.0, "lenient"), headers=AUTH)

    assert response.json()["thresholds"]["mahalanobis_max"] == 16.0
    assert response.json()["thresholds"]["target_acceptance"] == 0.99


def test_readyz_names_the_detectors_rule(client: TestClient) -> None:
    assert client.get("/readyz").json()["ood_rule"] == ["mahalanobis"]


def test_seed_only_bundle_reports_no_detector_rule(tiny_bundle_dir: Path) -> None:
    with TestClient(create_app(Settings(bundle_dir=tiny_bundle_dir, internal_token=TOKEN))) as client:
        assert client.get("/readyz").json()["ood_rule"] == []


@pytest.mark.parametrize(
    ("key", "shape"), [("class_means", (7, 4)), ("precision", (8, 7)), ("knn_reference", (14, 5))]
)
def test_stats_whose_shapes_do_not_match_the_model_refuse_to_load(
    tmp_path: Path, key: str, shape: tuple[int, int]
) -> None:
    stats = spread_stats() | {key: np.zeros(shape)}
    bundle = write_detector_bundle(tmp_path / "b", stats=stats)

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_fewer_knn_reference_rows_than_k_refuse_to_load(tmp_path: Path) -> None:
    bundle = write_detector_bundle(tmp_path / "b", knn_k=50)

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_missing_stats_file_refuses_to_load(tmp_path: Path) -> None:
    bundle = write_detector_bundle(tmp_path / "b")
    (bundle / "ood_stats.npz").unlink()

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_stats_lacking_an_array_refuse_to_load(tmp_path: Path) -> None:
    stats = {k: v for k, v in spread_stats().items() if k != "knn_reference"}
    bundle = write_detector_bundle(tmp_path / "b", stats=stats)

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_detector_fitted_on_another_model_refuses_to_load(tmp_path: Path) -> None:
    bundle = write_detector_bundle(tmp_path / "b", fitted_on_sha256="f" * 64)

    with pytest.raises(BundleError):
        _start(bundle)


def test_tenant_level_missing_from_the_grid_refuses_to_start(detector_bundle: Path) -> None:
    with pytest.raises(UnknownAcceptanceError):
        _start(detector_bundle, tenant_acceptance={"clinic-a": 0.97})


def test_tenant_acceptance_without_a_detector_refuses_to_start(tiny_bundle_dir: Path) -> None:
    with pytest.raises(UnknownAcceptanceError):
        _start(tiny_bundle_dir, tenant_acceptance={"clinic-a": 0.99})


def test_readyz_stays_503_when_the_stats_do_not_load(tmp_path: Path) -> None:
    bundle = write_detector_bundle(tmp_path / "b")
    (bundle / "ood_stats.npz").unlink()
    app = create_app(Settings(bundle_dir=bundle, internal_token=TOKEN))

    with pytest.raises(OodStatsError), TestClient(app):
        pass

    assert TestClient(app).get("/readyz").status_code == 503
