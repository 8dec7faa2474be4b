"""Triage level and conformal set from calibrated probabilities (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from contracts.bundle import Conformal, TriageLevel, TriageThresholds


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    """Softmax over the last axis of logits / temperature."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out


def malignant_probability(probs: NDArray[np.floating], malignant: Sequence[int]) -> float:
    """Sum of the malignant classes' probabilities for one image."""
    return float(np.asarray(probs)[list(malignant)].sum())


def triage_level(p_malignant: float, rule: TriageThresholds) -> tuple[TriageLevel, float]:
    """(level, the threshold that decided it)."""
    if p_malignant >= rule.urgent_malignant_probability:
        return "urgent", rule.urgent_malignant_probability
    if p_malignant >= rule.routine_malignant_probability:
        return "routine", rule.routine_malignant_probability
    return "monitor", rule.routine_malignant_probability


def conformal_set(probs: NDArray[np.floating], rule: Conformal, codes: Sequence[str]) -> list[str]:
    """LAC set {c : 1 - p_c <= q}, most likely first; never empty (the top class is kept)."""
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-p)
    members = [codes[i] for i in order if 1.0 - p[i] <= rule.quantile]
    return members or [codes[int(order[0])]]


def conformal_quantile(true_class_probs: NDArray[np.floating], target_coverage: float) -> float:
    """Split-conformal quantile of LAC scores 1 - p_true, with the finite-sample correction."""
    scores = 1.0 - np.asarray(true_class_probs, dtype=np.float64)
    n = len(scores)
    level = min(1.0, np.ceil((n + 1) * target_coverage) / n)
    return float(np.quantile(scores, level, method="higher"))
