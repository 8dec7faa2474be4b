"""Evaluate a model bundle on a split through the serving code path (ONNX Runtime).

    python -m training.evaluate --bundle models/skintriage-effnet-lite0/1.0.0 --split test

Writes a metrics JSON: accuracy, balanced accuracy, macro AUC, per-class sensitivity and
specificity, ECE, malignant sensitivity/specificity at the urgent threshold, and conformal
coverage and mean set size.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import BundleManifest, Preprocessing
from model_bundle.predictor import Predictor
from model_bundle.preprocessing import preprocess
from model_bundle.triage import conformal_set, softmax
from training.calibrate import sensitivity_specificity
from training.config import DEFAULT_DATA_ROOT
from training.data import SplitData, load_folders, load_ham10000
from training.metrics import classification_report

log = logging.getLogger("training.evaluate")


def onnx_outputs(
    session: ort.InferenceSession, split: SplitData, spec: Preprocessing, batch_size: int = 64
) -> dict[str, NDArray[np.float32]]:
    """Logits and embeddings of every image in a split, preprocessed exactly as serving does."""
    logits, embeddings = [], []
    for start in range(0, len(split.samples), batch_size):
        images = []
        for i in range(start, min(start + batch_size, len(split.samples))):
            if split.pixels:
                images.append(Image.fromarray(split.pixels[i]))
            else:
                with Image.open(split.samples[i].path) as img:
                    images.append(img.convert("RGB"))
        batch = np.stack([preprocess(img, spec) for img in images])
        out_logits, out_embedding = session.run(["logits", "embedding"], {"image": batch})
        logits.append(out_logits)
        embeddings.append(out_embedding)
    return {"logits": np.concatenate(logits), "embedding": np.concatenate(embeddings)}


def bundle_metrics(
    logits: NDArray[np.floating], labels: NDArray[np.int64], manifest: BundleManifest
) -> dict[str, object]:
    """All reported metrics for one split, using the bundle's temperature and thresholds."""
    codes = list(manifest.class_codes)
    probs = softmax(logits, manifest.temperature)
    report = classification_report(probs, labels, codes)
    report["ece_uncalibrated"] = classification_report(softmax(logits), labels, codes)["ece"]
    malignant = np.isin(labels, manifest.malignant_indices)
    p_mal = probs[:, list(manifest.malignant_indices)].sum(axis=1)
    for level, threshold in (
        ("urgent", manifest.triage.urgent_malignant_probability),
        ("routine_or_urgent", manifest.triage.routine_malignant_probability),
    ):
        sens, spec = sensitivity_specificity(p_mal, malignant, threshold)
        report[f"malignant_sensitivity_{level}"] = sens
        report[f"malignant_specificity_{level}"] = spec
    sets = [conformal_set(p, manifest.conformal, codes) for p in probs]
    report["conformal_coverage"] = float(np.mean([codes[y] in s for y, s in zip(labels, sets, strict=True)]))
    report["conformal_mean_set_size"] = float(np.mean([len(s) for s in sets]))
    return report


def load_split(dataset: str, root: Path, split: str) -> tuple[list[str], SplitData]:
    """Classes and one split of a dataset layout."""
    classes, splits = load_ham10000(root / "ham10000") if dataset == "ham10000" else load_folders(root)
    return classes, splits[split]


def evaluate_bundle(
    bundle_dir: Path, split_name: str, data_root: Path, dataset: str = "ham10000"
) -> dict[str, object]:
    """Run the bundle's ONNX model over a split and compute its metrics."""
    predictor = Predictor(bundle_dir, intra_op_threads=2)
    classes, split = load_split(dataset, data_root, split_name)
    if classes != list(predictor.manifest.class_codes):
        raise SystemExit(
            f"dataset classes {classes} differ from the bundle's {predictor.manifest.class_codes}"
        )
    outputs = onnx_outputs(predictor.session, split, predictor.manifest.preprocessing)
    metrics = bundle_metrics(outputs["logits"], split.labels, predictor.manifest)
    metrics["split"] = split_name
    metrics["bundle"] = f"{predictor.manifest.name}/{predictor.manifest.version}"
    return metrics


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--data-root", type=Path, default=Path(DEFAULT_DATA_ROOT))
    parser.add_argument("--dataset", default="ham10000", choices=["ham10000", "folders"])
    parser.add_argument("--out", type=Path, help="metrics JSON (default: <bundle>/metrics_<split>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = evaluate_bundle(args.bundle, args.split, args.data_root, args.dataset)
    out = args.out or args.bundle / f"metrics_{args.split}.json"
    out.write_text(json.dumps(metrics, indent=2))
    keys = (
        "accuracy",
        "balanced_accuracy",
        "macro_auc",
        "ece",
        "malignant_sensitivity_urgent",
        "conformal_coverage",
    )
    log.info("%s: %s -> %s", args.split, {k: round(float(metrics[k]), 4) for k in keys}, out)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
