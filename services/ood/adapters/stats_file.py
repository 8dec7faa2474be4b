"""Read a bundle's `ood_stats.npz` and check it fits the bundle's model before anything serves.

`load_manifest` already refuses a detector fitted on another model (fitted_on_sha256 must equal
onnx_sha256); this checks the file itself: present, the three arrays, shapes implied by the
manifest (K classes, D = io.embedding_dim, at least knn_k reference rows), finite values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from contracts.bundle import BundleManifest
from model_bundle.loader import BundleError
from services.ood.domain.scoring import DetectorStats

_KEYS = ("class_means", "precision", "knn_reference")


class OodStatsError(BundleError):
    """The bundle's OOD statistics are missing, unreadable or do not match its model."""


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _KEYS if key not in npz.files]
            if missing:
                raise OodStatsError(f"{path} lacks the arrays {missing}")
            return {key: np.asarray(npz[key], dtype=np.float64) for key in _KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise OodStatsError(f"{path} is not a readable npz: {exc}") from exc


def load_detector_stats(bundle_dir: Path | str, manifest: BundleManifest) -> DetectorStats:
    """The detector statistics of the bundle in `bundle_dir`; OodStatsError when they are absent
    or their shapes do not match the manifest's model."""
    spec = manifest.ood_detector
    if spec is None:
        raise OodStatsError(f"bundle {manifest.name} {manifest.version} has no ood_detector")
    path = Path(bundle_dir) / spec.stats_file
    if not path.is_file():
        raise OodStatsError(f"the bundle's ood_detector names {path}, which does not exist")
    arrays = _read(path)
    classes, dim = len(manifest.classes), manifest.io.embedding_dim
    means, precision, reference = arrays["class_means"], arrays["precision"], arrays["knn_reference"]
    problems = []
    if means.shape != (classes, dim):
        problems.append(f"class_means is {means.shape}, expected ({classes}, {dim})")
    if precision.shape != (dim, dim):
        problems.append(f"precision is {precision.shape}, expected ({dim}, {dim})")
    if reference.ndim != 2 or reference.shape[1] != dim or reference.shape[0] < spec.knn_k:
        problems.append(f"knn_reference is {reference.shape}, expected (M >= knn_k={spec.knn_k}, {dim})")
    if problems:
        raise OodStatsError(f"{path} does not match the model of bundle.json: " + "; ".join(problems))
    bad = [key for key, value in arrays.items() if not np.isfinite(value).all()]
    if bad:
        raise OodStatsError(f"{path} holds non-finite values in {bad}")
    return DetectorStats(class_means=means, precision=precision, knn_reference=reference)
