"""Read a bundle's `ood_stats.npz` and check it fits the bundle's model before anything serves.

`load_manifest` already refuses a detector fitted on another model (fitted_on_sha256 must equal
onnx_sha256); this checks the file itself: present, the three arrays, shapes implied by the
manifest (K classes, D = io.embedding_dim, at least knn_k reference rows), finite values. The
outlier-exposure head (`oe_weight` (D,), `oe_bias` (1,)) is required when the detector's rule
uses `oe`, checked the same way whenever present, and never half there.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from contracts.bundle import BundleManifest
from model_bundle.loader import BundleError
from services.ood.domain.scoring import DetectorStats

_KEYS = ("class_means", "precision", "knn_reference")
_OE_KEYS = ("oe_weight", "oe_bias")


class OodStatsError(BundleError):
    """The bundle's OOD statistics are missing, unreadable or do not match its model."""


def _read(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in required if key not in npz.files]
            if missing:
                raise OodStatsError(f"{path} lacks the arrays {missing}")
            present = [key for key in (*_KEYS, *_OE_KEYS) if key in npz.files]
            return {key: np.asarray(npz[key], dtype=np.float64) for key in present}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise OodStatsError(f"{path} is not a readable npz: {exc}") from exc


def _shape_problems(arrays: dict[str, np.ndarray], classes: int, dim: int, knn_k: int) -> list[str]:
    means, precision, reference = arrays["class_means"], arrays["precision"], arrays["knn_reference"]
    problems = []
    if means.shape != (classes, dim):
        problems.append(f"class_means is {means.shape}, expected ({classes}, {dim})")
    if precision.shape != (dim, dim):
        problems.append(f"precision is {precision.shape}, expected ({dim}, {dim})")
    if reference.ndim != 2 or reference.shape[1] != dim or reference.shape[0] < knn_k:
        problems.append(f"knn_reference is {reference.shape}, expected (M >= knn_k={knn_k}, {dim})")
    if "oe_weight" in arrays and arrays["oe_weight"].shape != (dim,):
        problems.append(f"oe_weight is {arrays['oe_weight'].shape}, expected ({dim},)")
    if "oe_bias" in arrays and arrays["oe_bias"].shape != (1,):
        problems.append(f"oe_bias is {arrays['oe_bias'].shape}, expected (1,)")
    return problems


def load_detector_stats(bundle_dir: Path | str, manifest: BundleManifest) -> DetectorStats:
    """The detector statistics of the bundle in `bundle_dir`; OodStatsError when they are absent
    or their shapes do not match the manifest's model."""
    spec = manifest.ood_detector
    if spec is None:
        raise OodStatsError(f"bundle {manifest.name} {manifest.version} has no ood_detector")
    path = Path(bundle_dir) / spec.stats_file
    if not path.is_file():
        raise OodStatsError(f"the bundle's ood_detector names {path}, which does not exist")
    arrays = _read(path, _KEYS + (_OE_KEYS if "oe" in spec.rule else ()))
    half = [key for key in _OE_KEYS if key not in arrays]
    if len(half) == 1:
        raise OodStatsError(f"{path} holds one half of the outlier-exposure head, lacking {half}")
    problems = _shape_problems(arrays, len(manifest.classes), manifest.io.embedding_dim, spec.knn_k)
    if problems:
        raise OodStatsError(f"{path} does not match the model of bundle.json: " + "; ".join(problems))
    bad = [key for key, value in arrays.items() if not np.isfinite(value).all()]
    if bad:
        raise OodStatsError(f"{path} holds non-finite values in {bad}")
    return DetectorStats(
        class_means=arrays["class_means"],
        precision=arrays["precision"],
        knn_reference=arrays["knn_reference"],
        oe_weight=arrays.get("oe_weight"),
        oe_bias=arrays.get("oe_bias"),
    )
