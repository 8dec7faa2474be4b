"""Evaluate a model bundle on a split through the serving code path (ONNX Runtime).

    python -m training.evaluate --bundle models/skintriage-effnet-lite0/1.0.0 --split test

Writes a metrics JSON: accuracy, balanced accuracy, macro AUC, per-class sensitivity and
specificity, ECE, malignant sensitivity/specificity at the urgent threshold, melanoma
sensitivity and melanoma-vs-nevus AUC, and conformal coverage and mean set size. A model that
fuses clinical metadata gets each image's (`--no-metadata`: none). On HAM10000's `test` split it
also writes `metrics_fairness.json` (skin tone by ITA, sex, age band, body site; see
training/fairness.py) and the card's fairness section.
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

from contracts.bundle import BundleManifest, MetadataEncoding, Preprocessing
from model_bundle.metadata import encode_metadata
from model_bundle.predictor import Predictor
from model_bundle.preprocessing import preprocess
from model_bundle.triage import conformal_set, softmax
from training.calibrate import sensitivity_specificity
from training.config import DEFAULT_DATA_ROOT
from training.data import SplitData, load_folders, load_ham10000, sample_metadata
from training.fairness import fairness_section_lines
from training.metrics import classification_report
from training.model_card import write_section

log = logging.getLogger("training.evaluate")

# The headline metrics: bundle.json's `metrics`, the build report and the card's tables.
SUMMARY_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "macro_auc",
    "ece",
    "malignant_sensitivity_urgent",
    "malignant_specificity_urgent",
    "conformal_coverage",
    "conformal_mean_set_size",
    "melanoma_sensitivity",
    "mel_nv_auc",
)


def split_metadata_batch(
    split: SplitData, indices: range, spec: MetadataEncoding | None, use_metadata: bool
) -> NDArray[np.float32] | None:
    """The encoded metadata of samples `indices` (all-missing when `use_metadata` is False), or
    None for an image-only model."""
    if spec is None:
        return None
    if not use_metadata:
        return np.stack([encode_metadata(spec) for _ in indices])
    return np.stack([encode_metadata(spec, *sample_metadata(split.samples[i])) for i in indices])


def onnx_outputs(
    session: ort.InferenceSession,
    split: SplitData,
    spec: Preprocessing,
    batch_size: int = 64,
    metadata: MetadataEncoding | None = None,
    use_metadata: bool = True,
) -> dict[str, NDArray[np.float32]]:
    """Logits and embeddings of every image in a split, preprocessed exactly as serving does;
    a model that fuses `metadata` gets each sample's (or, without `use_metadata`, none)."""
    input_names = [i.name for i in session.get_inputs()]
    logits, embeddings = [], []
    for start in range(0, len(split.samples), batch_size):
        indices = range(start, min(start + batch_size, len(split.samples)))
        images = []
        for i in indices:
            if split.pixels:
                images.append(Image.fromarray(split.pixels[i]))
            else:
                with Image.open(split.samples[i].path) as img:
                    images.append(img.convert("RGB"))
        feeds = {input_names[0]: np.stack([preprocess(img, spec) for img in images])}
        meta = split_metadata_batch(split, indices, metadata, use_metadata)
        if meta is not None:
            feeds[input_names[1]] = meta
        out_logits, out_embedding = session.run(["logits", "embedding"], feeds)
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
    if "mel" in codes:
        report["melanoma_sensitivity"] = report["per_class"]["mel"]["sensitivity"]  # type: ignore[index]
        mel, nv = codes.index("mel"), codes.index("nv") if "nv" in codes else -1
        if nv >= 0:
            report["mel_nv_auc"] = mel_vs_nevus_auc(probs, labels, mel, nv)
    return report


def mel_vs_nevus_auc(probs: NDArray[np.floating], labels: NDArray[np.int64], mel: int, nv: int) -> float:
    """AUC of P(mel) separating melanomas from nevi (the clinically hardest pair); NaN when
    either class is absent."""
    from sklearn.metrics import roc_auc_score

    keep = np.isin(labels, [mel, nv])
    if not ((labels[keep] == mel).any() and (labels[keep] == nv).any()):
        return float("nan")
    return float(roc_auc_score(labels[keep] == mel, np.asarray(probs)[keep, mel]))


def load_split(dataset: str, root: Path, split: str, limit_per_split: int = 0) -> tuple[list[str], SplitData]:
    """Classes and one split of a dataset layout (`limit_per_split` > 0 keeps that many, for tests)."""
    if dataset == "ham10000":
        classes, splits = load_ham10000(root / "ham10000", limit_per_split)
    else:
        classes, splits = load_folders(root, limit_per_split)
    return classes, splits[split]


def fairness_report(
    predictor: Predictor,
    split: SplitData,
    outputs: dict[str, NDArray[np.float32]],
    data_root: Path,
    cache_dir: Path | None,
) -> dict[str, object]:
    """Skin tone (ITA of the non-lesion skin) and subgroup tables of one HAM10000 split, counting
    as rejected what the fleet would turn away (quality gate + OOD rule)."""
    from training.fairness import fairness_tables, split_ita, subgroup_values
    from training.ood_gate import OodGate  # imports the services' quality gate: only when needed

    manifest = predictor.manifest
    gate = OodGate(predictor)
    quality_ok = []
    for sample in split.samples:
        with Image.open(sample.path) as img:
            quality_ok.append(bool(gate.quality_ok([img.convert("RGB")])[0]))
    accepted = np.asarray(quality_ok) & gate.model_ok(outputs["logits"], outputs["embedding"])
    ita = split_ita(split.samples, data_root, cache_dir)
    tables = fairness_tables(
        predictor.probabilities(outputs["logits"]),
        split.labels,
        manifest.malignant_indices,
        manifest.triage.urgent_malignant_probability,
        ~accepted,
        subgroup_values(split.samples, ita),
    )
    return {
        "bundle": f"{manifest.name}/{manifest.version}",
        "onnx_sha256": manifest.onnx_sha256,
        "n": len(split.samples),
        "ood_rule": gate.rule(),
        "ood_rejected": float((~accepted).mean()),
        "tables": tables,
    }


def evaluate_bundle(
    bundle_dir: Path,
    split_name: str,
    data_root: Path,
    dataset: str = "ham10000",
    use_metadata: bool = True,
    fairness_cache: Path | None = None,
    limit_per_split: int = 0,
) -> tuple[dict[str, object], dict[str, object] | None]:
    """Run the bundle's ONNX model over a split and compute its metrics; for HAM10000 (which has
    lesion masks) also the skin-tone and subgroup tables."""
    predictor = Predictor(bundle_dir, intra_op_threads=2)
    classes, split = load_split(dataset, data_root, split_name, limit_per_split)
    if classes != list(predictor.manifest.class_codes):
        raise SystemExit(
            f"dataset classes {classes} differ from the bundle's {predictor.manifest.class_codes}"
        )
    manifest = predictor.manifest
    outputs = onnx_outputs(
        predictor.session,
        split,
        manifest.preprocessing,
        metadata=manifest.metadata,
        use_metadata=use_metadata,
    )
    metrics = bundle_metrics(outputs["logits"], split.labels, manifest)
    metrics["split"] = split_name
    metrics["bundle"] = f"{manifest.name}/{manifest.version}"
    metrics["metadata"] = "used" if manifest.metadata and use_metadata else "none"
    fairness = (
        fairness_report(predictor, split, outputs, data_root, fairness_cache)
        if dataset == "ham10000"
        else None
    )
    return metrics, fairness


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
    parser.add_argument(
        "--no-metadata", action="store_true", help="evaluate as if no request carried clinical metadata"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("runs/ita-cache"), help="skin-tone (ITA) cache"
    )
    parser.add_argument("--limit-per-split", type=int, default=0, help="0 = every image (tests use a few)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics, fairness = evaluate_bundle(
        args.bundle,
        args.split,
        args.data_root,
        args.dataset,
        not args.no_metadata,
        args.cache_dir,
        args.limit_per_split,
    )
    out = args.out or args.bundle / f"metrics_{args.split}.json"
    out.write_text(json.dumps(metrics, indent=2))
    if fairness is not None and args.out is None and args.split == "test" and not args.no_metadata:
        (args.bundle / "metrics_fairness.json").write_text(json.dumps(fairness, indent=2) + "\n")
        card = args.bundle / "MODEL_CARD.md"
        if card.is_file():
            write_section(card, "fairness", fairness_section_lines(fairness["tables"]))  # type: ignore[arg-type]
    shown = {k: round(float(metrics[k]), 4) for k in SUMMARY_KEYS if k in metrics}  # type: ignore[arg-type]
    log.info("%s: %s -> %s", args.split, shown, out)


if __name__ == "__main__":
    main()
