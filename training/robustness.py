"""Record where a bundle's robustness evaluation lives, and its headline, in bundle.json.

`make eval-shift` writes `metrics_shift.json` and `make evaluate` (on `test`) writes
`metrics_fairness.json`; this copies the shift benchmark's headline (the worst shift by
melanoma-vs-nevus AUC) into the manifest's `robustness`, so the numbers travel with the model.
Only bundle.json changes: model.onnx and its sha256 stay as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.bundle import BundleManifest, Robustness
from model_bundle.loader import load_manifest

SHIFT_FILE = "metrics_shift.json"
FAIRNESS_FILE = "metrics_fairness.json"


def robustness_of(bundle_dir: Path) -> Robustness:
    """The `robustness` section from the bundle's evaluation files (both must exist)."""
    for name in (SHIFT_FILE, FAIRNESS_FILE):
        if not (bundle_dir / name).is_file():
            raise FileNotFoundError(f"{bundle_dir / name} is missing: run make eval-shift and make evaluate")
    shift = json.loads((bundle_dir / SHIFT_FILE).read_text())
    worst = shift["worst_shift"]
    return Robustness(
        shift_metrics_file=SHIFT_FILE,
        fairness_metrics_file=FAIRNESS_FILE,
        worst_shift=worst["name"],
        worst_shift_mel_nv_auc=worst["mel_nv_auc"],
        worst_shift_urgent_sensitivity=worst["urgent_sensitivity"],
    )


def write_robustness(bundle_dir: Path) -> BundleManifest:
    """Write bundle.json's `robustness`; the result must load like serving loads it."""
    body = json.loads((bundle_dir / "bundle.json").read_text())
    body["robustness"] = robustness_of(bundle_dir).model_dump(mode="json")
    manifest = BundleManifest.model_validate(body)
    (bundle_dir / "bundle.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    return load_manifest(bundle_dir)
