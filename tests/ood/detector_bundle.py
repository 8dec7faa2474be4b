"""A tiny bundle WITH a fitted OOD detector: tests/fixtures/tiny_bundle.py's bundle, plus an
`ood_stats.npz` and an `ood_detector` in its bundle.json fitted on (bound to) its model.onnx."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from contracts.bundle import BundleManifest
from tests.fixtures.tiny_bundle import CLASSES, write_tiny_bundle

EMBEDDING_DIM = 8  # the tiny bundle's channels
SPREAD = 20.0  # class c's mean is SPREAD * unit vector c: every class far from every other


def spread_stats() -> dict[str, np.ndarray]:
    """Hand-made statistics: class means SPREAD * e_c, identity precision (so the Mahalanobis
    score is the squared Euclidean distance to the nearest mean), kNN reference = the unit
    vectors of the means, twice each."""
    means = SPREAD * np.eye(len(CLASSES), EMBEDDING_DIM)
    reference = np.repeat(np.eye(len(CLASSES), EMBEDDING_DIM), 2, axis=0)
    return {"class_means": means, "precision": np.eye(EMBEDDING_DIM), "knn_reference": reference}


def write_detector_bundle(
    directory: Path,
    stats: Mapping[str, np.ndarray] | None = None,
    rule: Sequence[str] = ("mahalanobis",),
    thresholds: Mapping[str, float] | None = None,
    grid: Mapping[str, Mapping[str, float]] | None = None,
    knn_k: int = 2,
    fitted_on_sha256: str | None = None,
) -> Path:
    """Write the tiny bundle with a detector into `directory`; the manifest is validated, so a
    detector fitted on another model (`fitted_on_sha256`) makes load_manifest refuse it."""
    write_tiny_bundle(directory)
    arrays = spread_stats() if stats is None else stats
    np.savez(directory / "ood_stats.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    body = json.loads((directory / "bundle.json").read_text())
    body["ood_detector"] = {
        "fitted_on_sha256": fitted_on_sha256 or body["onnx_sha256"],
        "knn_k": knn_k,
        "rule": list(rule),
        "target_acceptance": 0.95,
        "thresholds": dict(thresholds or {"mahalanobis": 4.0, "knn": 0.5, "msp": 0.9}),
        "acceptance_grid": {k: dict(v) for k, v in (grid or {}).items()},
        "selection": "hand-made for tests",
    }
    if fitted_on_sha256 is None:
        BundleManifest.model_validate(body)
    (directory / "bundle.json").write_text(json.dumps(body, indent=2))
    return directory
