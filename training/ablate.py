"""Equal-budget ablations of the 2.0 recipe, judged on `val` only (never `test`).

    python -m training.ablate [--config training/configs/effnet_lite0_v2.yaml] [--epochs 3]

Each variant drops one choice of the recipe and trains the first `--epochs` epochs of the SAME
schedule (same seed, same cosine length), so it is compared with the full recipe's checkpoint at
the same epoch (`<out_dir>/epoch<N>.pt`, copied by the full run; trained here when absent).
Every checkpoint is exported and calibrated on val only, then measured on clean `val` and on the
shift benchmark applied to `val` (`training.eval_shift`). The full recipe wins against a variant
when it beats it on clean val balanced accuracy or on the shifted-val mean melanoma-vs-nevus AUC
and loses no more than 0.02 on the other; a choice is kept when the full recipe wins against the
variant without it. Writes
`<runs>/ablations/summary.json` and prints a Markdown table (docs/model-2.0.md carries it).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training.build_bundle import fit_manifest
from training.config import load_config
from training.data import SplitData
from training.eval_shift import evaluate_shifts
from training.evaluate import bundle_metrics, onnx_outputs
from training.export import classifier_weights, export_onnx, load_checkpoint
from training.model_card import recipe_ablation_lines, write_section
from training.train import load_dataset, metadata_spec_for, preprocessing_for, train

log = logging.getLogger("training.ablate")

# variant -> the config overrides that remove one choice of the recipe
VARIANTS: dict[str, list[str]] = {
    "full recipe": [],
    "centre crop instead of letterbox": [
        "resize_policy=shorter_side_center_crop",
        # the same number of input pixels as the 224x168 letterbox (194^2 ~ 224*168)
        "resize_shorter_to=194",
        "image_size=194",
    ],
    "no colour constancy": ["colour_constancy=false"],
    "no shift-family augmentation": ["shift_augment=false"],
    # a candidate rather than a removal: the larger ImageNet backbone at the same input
    "EfficientNet-Lite1 instead of Lite0": ["arch=effnet_lite1"],
}
MAX_LOSS = 0.02


def checkpoint_for(name: str, overrides: list[str], config: str, epochs: int, root: Path) -> Path:
    """The variant's checkpoint after `epochs` epochs (trained unless already there)."""
    base = load_config(config)
    if not overrides:
        copied = Path(base.out_dir) / f"epoch{epochs}.pt"
        if copied.is_file():
            return copied
    out = root / name.replace(" ", "_")
    cfg = load_config(config, [*overrides, f"stop_epoch={epochs}", f"out_dir={out}", "patience=1000"])
    train(cfg)
    return out / "last.pt"


def measure(checkpoint: Path, root: Path, splits: dict[str, SplitData], data_root: Path) -> dict[str, Any]:
    """Export, calibrate on val, then clean-val metrics and the shift benchmark on val."""
    model, cfg, classes = load_checkpoint(checkpoint)
    bundle = root / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    spec, meta = preprocessing_for(cfg), metadata_spec_for(cfg)
    export_onnx(model, spec.input_hw, bundle / "model.onnx")
    weights = classifier_weights(model)
    if weights is not None:
        np.savez(bundle / "cam_weights.npz", weight=weights)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    val = splits["val"]
    logits = onnx_outputs(session, val, spec, metadata=meta)["logits"]
    # The version only selects the bundle format the variant's preprocessing needs (a centre crop
    # is format 1); nothing ships from here.
    version = "2.0.0" if spec.resize_policy == "letterbox" else "1.0.0"
    manifest = fit_manifest(
        "ablation", version, cfg, classes, bundle / "model.onnx", logits, val.labels, weights is not None
    )
    (bundle / "bundle.json").write_text(manifest.model_dump_json(indent=2))
    clean = bundle_metrics(logits, val.labels, manifest)
    shifted = evaluate_shifts(bundle, data_root, split="val")["shifts"]
    aucs = [float(m["mel_nv_auc"]) for name, m in shifted.items() if name != "identity"]
    return {
        "checkpoint": str(checkpoint),
        "val_balanced_accuracy": float(clean["balanced_accuracy"]),  # type: ignore[arg-type]
        "val_macro_auc": float(clean["macro_auc"]),  # type: ignore[arg-type]
        "val_mel_nv_auc": float(clean["mel_nv_auc"]),  # type: ignore[arg-type]
        "shifted_val_mean_mel_nv_auc": float(np.mean(aucs)),
        "shifted_val_worst_mel_nv_auc": float(np.min(aucs)),
        "shifted_val_mean_urgent_sensitivity": float(
            np.mean([float(m["urgent_sensitivity"]) for n, m in shifted.items() if n != "identity"])
        ),
    }


def verdicts(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """For each variant: whether the full recipe wins against it, by the rule in the module
    docstring (for a removal, "full recipe wins" means the removed choice is kept)."""
    full = results["full recipe"]
    out = {}
    for name, r in results.items():
        if name == "full recipe":
            continue
        clean = full["val_balanced_accuracy"] - r["val_balanced_accuracy"]
        shift = full["shifted_val_mean_mel_nv_auc"] - r["shifted_val_mean_mel_nv_auc"]
        keep = (clean > 0 and shift >= -MAX_LOSS) or (shift > 0 and clean >= -MAX_LOSS)
        out[name] = (
            f"{'full recipe wins' if keep else 'full recipe does not win'}"
            f" (clean val BA {clean:+.3f}, shifted val AUC {shift:+.3f})"
        )
    return out


def table(results: dict[str, dict[str, Any]], decisions: dict[str, str]) -> list[str]:
    """The Markdown table of every variant."""
    lines = [
        "| variant | val bal. acc. | val macro AUC | val mel-vs-nv AUC"
        " | shifted val mel-vs-nv AUC (mean / worst) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['val_balanced_accuracy']:.3f} | {r['val_macro_auc']:.3f}"
            f" | {r['val_mel_nv_auc']:.3f} |"
            f" {r['shifted_val_mean_mel_nv_auc']:.3f} / {r['shifted_val_worst_mel_nv_auc']:.3f} |"
            f" {decisions.get(name, 'reference')} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="training/configs/effnet_lite0_v2.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--bundle", type=Path, help="also record the summary in this bundle's card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = load_config(args.config)
    root = Path("runs") / "ablations"
    summary_path = root / "summary.json"
    saved = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    results: dict[str, dict[str, Any]] = {k: v for k, v in saved.items() if not k.startswith("_")}
    _, splits = load_dataset(base)
    splits["val"].load_pixels()
    data_root = Path(base.data_root)
    for name, overrides in VARIANTS.items():
        if (args.only and name not in args.only) or name in results:
            continue
        checkpoint = checkpoint_for(name, overrides, args.config, args.epochs, root)
        results[name] = measure(checkpoint, root / name.replace(" ", "_"), splits, data_root)
        root.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(results, indent=2))
        log.info("%s: %s", name, results[name])
    decisions = verdicts(results) if "full recipe" in results else {}
    summary_path.write_text(
        json.dumps({**results, "_verdicts": decisions} if decisions else results, indent=2)
    )
    print("\n".join(table({k: v for k, v in results.items() if not k.startswith("_")}, decisions)))
    if args.bundle is not None:
        shutil.copy2(summary_path, args.bundle / "ablations.json")
        write_section(
            args.bundle / "MODEL_CARD.md", "ablations", recipe_ablation_lines(args.bundle / "ablations.json")
        )


if __name__ == "__main__":
    main()
