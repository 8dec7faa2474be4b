"""The outlier-exposure score `oe` of format-2 bundles: the same formula as training's, served in
every response of a bundle whose statistics hold the head, and required (with the right shapes)
before the service starts on a bundle whose detector's rule uses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_bundle.loader import BundleError, load_manifest
from services.ood.adapters.stats_file import OodStatsError
from services.ood.api.app import create_app
from services.ood.config import Settings
from services.ood.domain.scoring import DetectorStats, oe_score, score_output
from tests.fixtures.tiny_bundle import V2_THRESHOLDS, build_tiny_onnx, v2_ood_arrays, write_tiny_bundle_v2
from tests.ood.conftest import TOKEN
from training.ood import oe_score as training_oe_score

AUTH = {"X-Internal-Token": TOKEN}


@pytest.fixture
def client(tiny_bundle_v2_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(bundle_dir=tiny_bundle_v2_dir, internal_token=TOKEN))) as started:
        yield started


def _head(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(bundle / "ood_stats.npz") as npz:
        return npz["oe_weight"], npz["oe_bias"]


def _body(bundle: Path, embedding: np.ndarray) -> dict[str, Any]:
    return {
        "model_sha256": load_manifest(bundle).onnx_sha256,
        "logits": [0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0],
        "embedding": embedding.tolist(),
    }


def _start(bundle: Path) -> None:
    with TestClient(create_app(Settings(bundle_dir=bundle, internal_token=TOKEN))):
        pass


def _oe_at(bundle: Path, target: float) -> np.ndarray:
    """An embedding along the head's weight whose oe score is `target`."""
    weight, bias = (a.astype(np.float64) for a in _head(bundle))
    return weight * (target - float(bias[0])) / float(weight @ weight)


def test_oe_is_the_heads_logit_and_training_scores_batches_alike() -> None:
    rng = np.random.default_rng(7)
    embeddings = rng.normal(0, 3, (50, 16))
    weight, bias = rng.normal(0, 1, 16).astype(np.float32), rng.normal(0, 1, 1).astype(np.float32)

    served = [oe_score(e, weight, bias) for e in embeddings]

    expected = embeddings @ weight.astype(np.float64) + float(bias[0])
    np.testing.assert_allclose(served, expected, rtol=1e-9)
    np.testing.assert_allclose(training_oe_score(embeddings, weight, bias), expected, rtol=1e-9)


def test_oe_is_scored_only_when_the_statistics_hold_the_head() -> None:
    plain = DetectorStats(class_means=np.zeros((3, 2)), precision=np.eye(2), knn_reference=np.eye(2))
    with_head = DetectorStats(
        class_means=np.zeros((3, 2)),
        precision=np.eye(2),
        knn_reference=np.eye(2),
        oe_weight=np.asarray([1.0, -2.0]),
        oe_bias=np.asarray([0.5]),
    )

    without = score_output(np.zeros(3), np.asarray([3.0, 1.0]), 1.0, plain, knn_k=1)
    scored = score_output(np.zeros(3), np.asarray([3.0, 1.0]), 1.0, with_head, knn_k=1)

    assert without.oe is None and "oe" not in without.as_dict()
    assert scored.oriented()["oe"] == pytest.approx(3.0 - 2.0 + 0.5)


def test_v2_bundle_response_carries_oe_equal_to_trainings_formula(
    client: TestClient, tiny_bundle_v2_dir: Path
) -> None:
    embedding = np.random.default_rng(3).uniform(0, 0.6, 8)

    verdict = client.post("/v1/score", json=_body(tiny_bundle_v2_dir, embedding), headers=AUTH).json()

    weight, bias = _head(tiny_bundle_v2_dir)
    assert verdict["scores"]["oe"] == pytest.approx(float(training_oe_score(embedding, weight, bias)[0]))
    assert set(verdict["scores"]) == {"msp", "entropy", "energy", "mahalanobis", "knn", "oe"}
    assert verdict["thresholds"]["oe_max"] == V2_THRESHOLDS["oe"]
    assert verdict["thresholds"]["mahalanobis_max"] == V2_THRESHOLDS["mahalanobis"]


def test_readyz_names_the_v2_rule(client: TestClient) -> None:
    assert client.get("/readyz").json()["ood_rule"] == ["mahalanobis", "oe"]


def test_oe_above_its_threshold_is_rejected_naming_oe(tmp_path: Path) -> None:
    bundle = write_tiny_bundle_v2(tmp_path / "b", rule=("oe",), thresholds={"oe": 0.0})
    with TestClient(create_app(Settings(bundle_dir=bundle, internal_token=TOKEN))) as client:
        outlier = client.post("/v1/score", json=_body(bundle, _oe_at(bundle, 1.0)), headers=AUTH).json()
        inlier = client.post("/v1/score", json=_body(bundle, _oe_at(bundle, -1.0)), headers=AUTH).json()

    assert outlier["scores"]["oe"] == pytest.approx(1.0)
    assert (outlier["decision"], outlier["rule"], outlier["reasons"]) == (
        "rejected_ood",
        "oe",
        ["oe_above_max"],
    )
    assert inlier["decision"] == "accepted"


def test_a_v2_rule_without_oe_serves_without_the_head(tmp_path: Path) -> None:
    arrays = {k: v for k, v in v2_ood_arrays().items() if not k.startswith("oe_")}
    bundle = write_tiny_bundle_v2(
        tmp_path / "b", rule=("mahalanobis",), thresholds={"mahalanobis": 450.0}, ood_arrays=arrays
    )
    with TestClient(create_app(Settings(bundle_dir=bundle, internal_token=TOKEN))) as client:
        verdict = client.post("/v1/score", json=_body(bundle, np.zeros(8)), headers=AUTH).json()

    assert "oe" not in verdict["scores"]


@pytest.mark.parametrize("missing", ["oe_weight", "oe_bias"])
def test_v2_stats_lacking_the_oe_head_refuse_to_start(tmp_path: Path, missing: str) -> None:
    arrays = {k: v for k, v in v2_ood_arrays().items() if k != missing}
    bundle = write_tiny_bundle_v2(tmp_path / "b", ood_arrays=arrays)

    with pytest.raises(OodStatsError):
        _start(bundle)


@pytest.mark.parametrize(
    ("key", "shape"), [("oe_weight", (7,)), ("oe_weight", (8, 1)), ("oe_weight", (1, 8)), ("oe_bias", (2,))]
)
def test_oe_head_of_the_wrong_shape_refuses_to_start(
    tmp_path: Path, key: str, shape: tuple[int, ...]
) -> None:
    bundle = write_tiny_bundle_v2(tmp_path / "b", ood_arrays=v2_ood_arrays() | {key: np.ones(shape)})

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_oe_head_of_the_wrong_shape_refuses_to_start_even_when_the_rule_does_not_use_it(
    tmp_path: Path,
) -> None:
    arrays = v2_ood_arrays() | {"oe_weight": np.ones(5)}
    bundle = write_tiny_bundle_v2(
        tmp_path / "b", rule=("mahalanobis",), thresholds={"mahalanobis": 450.0}, ood_arrays=arrays
    )

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_non_finite_oe_weight_refuses_to_start(tmp_path: Path) -> None:
    weight = v2_ood_arrays()["oe_weight"].copy()
    weight[3] = np.nan
    bundle = write_tiny_bundle_v2(tmp_path / "b", ood_arrays=v2_ood_arrays() | {"oe_weight": weight})

    with pytest.raises(OodStatsError):
        _start(bundle)


def test_v2_detector_fitted_on_another_model_refuses_to_start(tmp_path: Path) -> None:
    bundle = write_tiny_bundle_v2(tmp_path / "b")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["ood_detector"]["fitted_on_sha256"] = "f" * 64
    (bundle / "bundle.json").write_text(json.dumps(manifest))

    with pytest.raises(BundleError):
        _start(bundle)


def test_v2_bundle_whose_model_was_swapped_after_fitting_refuses_to_start(tmp_path: Path) -> None:
    bundle = write_tiny_bundle_v2(tmp_path / "b")
    build_tiny_onnx(bundle / "model.onnx")  # another model under the fitted statistics

    with pytest.raises(BundleError):
        _start(bundle)
