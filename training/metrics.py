"""Classification metrics on probability matrices (numpy + scikit-learn only)."""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    """Row-wise softmax of logits / temperature."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def balanced_accuracy(labels: NDArray[np.int64], preds: NDArray[np.int64], num_classes: int) -> float:
    """Mean per-class recall over the classes present in `labels`."""
    recalls = [float((preds[labels == c] == c).mean()) for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(recalls))


def macro_auc(labels: NDArray[np.int64], probs: NDArray[np.floating], num_classes: int) -> float:
    """Mean one-vs-rest AUC over the classes with both positives and negatives in `labels`."""
    aucs = [
        float(roc_auc_score(labels == c, probs[:, c]))
        for c in range(num_classes)
        if (labels == c).any() and (labels != c).any()
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def expected_calibration_error(
    probs: NDArray[np.floating], labels: NDArray[np.int64], bins: int = 15
) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def classification_report(
    probs: NDArray[np.floating], labels: NDArray[np.int64], class_codes: list[str]
) -> dict[str, object]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC, per-class sensitivity/specificity/AUC."""
    n = len(class_codes)
    preds = probs.argmax(axis=1)
    per_class: dict[str, dict[str, float]] = {}
    aucs = []
    for c, code in enumerate(class_codes):
        pos, neg = labels == c, labels != c
        entry = {
            "support": int(pos.sum()),
            "sensitivity": float((preds[pos] == c).mean()) if pos.any() else float("nan"),
            "specificity": float((preds[neg] != c).mean()) if neg.any() else float("nan"),
        }
        if pos.any() and neg.any():
            entry["auc"] = float(roc_auc_score(pos, probs[:, c]))
            aucs.append(entry["auc"])
        per_class[code] = entry
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, preds), 1)
    return {
        "n": len(labels),
        "accuracy": float((preds == labels).mean()),
        "balanced_accuracy": balanced_accuracy(labels, preds, n),
        "macro_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "ece": expected_calibration_error(probs, labels),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
