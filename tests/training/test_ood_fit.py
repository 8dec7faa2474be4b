"""fit_ood end to end on the tiny bundle, the detector in bundle.json, and the card's OOD section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from contracts.bundle import BundleManifest
from model_bundle.loader import BundleError, load_manifest
from tests.conftest import DATA_ROOT
from training import fit_ood
from training.model_card import OOD_END, OOD_START, write_ood_section
from training.ood import OodStats, acceptance_for_rejection_budget

LIMIT = 14  # two images per class per split


@pytest.fixture(scope="module")
def fitted_bundle(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with a detector fitted by the CLI on a few HAM10000 images."""
    bundle = tmp_path_factory.mktemp("ood") / "tiny"
    shutil.copytree(tiny_bundle_dir, bundle)
    fit_ood.main(
        [
            "--bundle",
            str(bundle),
            "--data-root",
            str(DATA_ROOT),
            "--limit-per-split",
            str(LIMIT),
            "--no-cache",
            "--knn-size",
            "10",
            "--proxy-images",
            "4",
        ]
    )
    return bundle


def test_fit_ood_writes_a_detector_that_loads_with_the_bundle(fitted_bundle: Path) -> None:
    manifest = load_manifest(fitted_bundle)
    det = manifest.ood_detector
    assert det is not None
    assert det.fitted_on_sha256 == manifest.onnx_sha256
    assert set(det.rule) <= set(det.thresholds)
    assert set(det.acceptance_grid) == {"0.90", "0.95", "0.98", "0.99"}
    # 14 val images leave little room for noise under the 5% rejection budget: a strict level.
    assert det.target_acceptance == acceptance_for_rejection_budget(LIMIT) == 0.995
    assert "at most 5% of in-distribution images are rejected with 95% confidence" in det.selection
    assert "OOD sets and scikit-image's samples were not used" in det.selection


def test_fit_ood_keeps_the_seed_dual_criterion(fitted_bundle: Path, tiny_bundle_dir: Path) -> None:
    before = json.loads((tiny_bundle_dir / "bundle.json").read_text())["ood"]
    assert json.loads((fitted_bundle / "bundle.json").read_text())["ood"] == before


def test_fit_ood_stats_are_float32_with_the_contract_shapes(fitted_bundle: Path) -> None:
    manifest = load_manifest(fitted_bundle)
    stats = OodStats.load(fitted_bundle / "ood_stats.npz")
    d = manifest.io.embedding_dim
    assert stats.class_means.shape == (len(manifest.classes), d)
    assert stats.precision.shape == (d, d)
    assert stats.knn_reference.shape == (10, d)
    assert {a.dtype for a in (stats.class_means, stats.precision, stats.knn_reference)} == {
        np.dtype("float32")
    }
    assert np.linalg.norm(stats.knn_reference, axis=1) == pytest.approx(np.ones(10), abs=1e-5)


def test_detector_with_a_wrong_fitted_on_sha256_is_rejected(fitted_bundle: Path) -> None:
    body = json.loads((fitted_bundle / "bundle.json").read_text())
    body["ood_detector"]["fitted_on_sha256"] = "0" * 64
    with pytest.raises(ValidationError, match="fitted_on_sha256"):
        BundleManifest.model_validate(body)


def test_bundle_json_with_a_wrong_fitted_on_sha256_does_not_load(fitted_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(fitted_bundle, bundle)
    body = json.loads((bundle / "bundle.json").read_text())
    body["ood_detector"]["fitted_on_sha256"] = "f" * 64
    (bundle / "bundle.json").write_text(json.dumps(body))
    with pytest.raises(BundleError):
        load_manifest(bundle)


def test_write_detector_refuses_a_detector_fitted_on_another_model(
    fitted_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(fitted_bundle, bundle)
    manifest = load_manifest(bundle)
    assert manifest.ood_detector is not None
    other = manifest.ood_detector.model_copy(update={"fitted_on_sha256": "a" * 64})
    with pytest.raises(ValueError, match="different model"):
        fit_ood.write_detector(bundle, other, OodStats.load(bundle / "ood_stats.npz"))


def test_synthetic_proxy_makes_every_kind_from_each_image() -> None:
    images = [np.random.default_rng(i).integers(0, 256, (150, 200, 3), dtype=np.uint8) for i in range(3)]
    proxy = fit_ood.synthetic_proxy(images)
    assert len(proxy) >= 6
    for kind, made in proxy.items():
        assert len(made) == 3, kind
        assert all(m.dtype == np.uint8 and m.shape == (150, 200, 3) for m in made), kind


def _metrics() -> dict[str, Any]:
    row = {"n": 3, "auroc": 0.99, "fpr": 0.04}
    det = {"test_rejection": 0.05, "sources": {"flowers": row, "all": row}}
    return {
        "n_test": 10,
        "target_acceptance": 0.963,
        "sources": {"flowers": 3},
        "detectors": {"msp": det, "rule:mahalanobis": det, "seed:msp+entropy": det},
    }


def test_ood_card_section_is_regenerated_in_place(fitted_bundle: Path, tmp_path: Path) -> None:
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# card\n\n## Data, license and citation\ntext\n")
    manifest = load_manifest(fitted_bundle)
    write_ood_section(card, manifest, _metrics())
    once = card.read_text()
    write_ood_section(card, manifest, _metrics())
    assert card.read_text() == once
    assert once.count(OOD_START) == once.count(OOD_END) == 1
    assert once.index(OOD_END) < once.index("## Data, license and citation")


@pytest.mark.parametrize(("n_val", "level"), [(14, 0.995), (300, 0.973), (1311, 0.963), (100_000, 0.952)])
def test_the_acceptance_level_leaves_room_for_noise_under_the_budget(n_val: int, level: float) -> None:
    assert acceptance_for_rejection_budget(n_val) == level
    r = 1.0 - level
    # The chosen rejection plus 1.645 of its sampling sd stays within 5%; 0.1% more would not.
    assert r + 1.6449 * (r * (1 - r) * 2 / n_val) ** 0.5 <= 0.05
    r += 0.001
    assert r + 1.6449 * (r * (1 - r) * 2 / n_val) ** 0.5 > 0.05


def test_the_acceptance_level_refuses_an_impossible_budget() -> None:
    with pytest.raises(ValueError):
        acceptance_for_rejection_budget(0)
    with pytest.raises(ValueError):
        acceptance_for_rejection_budget(100, budget=0.0)


def test_the_card_names_the_detectors_level(fitted_bundle: Path, tmp_path: Path) -> None:
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# card\n")
    write_ood_section(card, load_manifest(fitted_bundle), _metrics())
    text = card.read_text()
    assert "thresholds accept 99.5% of `val` jointly" in text
    assert "thresholds fitted on `val` for 96.3% acceptance" in text
