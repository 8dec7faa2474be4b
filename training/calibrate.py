"""Everything fitted on the validation split: temperature, triage thresholds, the conformal
quantile and the seed OOD (dual-criterion) thresholds. Pure numpy/scipy on logits."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from model_bundle.triage import softmax


def negative_log_likelihood(
    logits: NDArray[np.floating], labels: NDArray[np.int64], temperature: float
) -> float:
    """Mean NLL of the labels under softmax(logits / T)."""
    probs = softmax(logits, temperature)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(logits: NDArray[np.floating], labels: NDArray[np.int64]) -> float:
    """Temperature minimising validation NLL (searched on log T in [1/20, 20])."""
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
    )
    return float(math.exp(result.x))


def threshold_for_sensitivity(
    scores: NDArray[np.floating], positive: NDArray[np.bool_], target: float
) -> float:
    """Largest threshold t with mean(scores[positive] >= t) >= target."""
    pos = np.sort(np.asarray(scores, dtype=np.float64)[positive])
    if len(pos) == 0:
        raise ValueError("no positives to set a sensitivity threshold on")
    index = math.floor((1.0 - target) * len(pos) + 1e-9)
    return float(pos[min(index, len(pos) - 1)])


def sensitivity_specificity(
    scores: NDArray[np.floating], positive: NDArray[np.bool_], threshold: float
) -> tuple[float, float]:
    """(sensitivity, specificity) of `scores >= threshold`."""
    flagged = np.asarray(scores) >= threshold
    return float(flagged[positive].mean()), float((~flagged[~positive]).mean())


def normalized_entropy(probs: NDArray[np.floating]) -> NDArray[np.float64]:
    """Shannon entropy / log(K), in [0, 1]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    out: NDArray[np.float64] = -(p * np.log(p)).sum(axis=1) / math.log(p.shape[1])
    return out


def fit_dual_criterion(
    probs: NDArray[np.floating], target_acceptance: float = 0.95
) -> tuple[float, float, float]:
    """(msp_min, entropy_max, achieved acceptance): equal-tail quantiles of MSP and entropy,
    tightened together until the joint rule accepts `target_acceptance` of in-distribution."""
    msp = np.asarray(probs).max(axis=1)
    entropy = normalized_entropy(probs)
    best = (0.0, 1.0, 1.0)
    for tail in np.linspace(0.0, 1.0 - target_acceptance, 201):
        msp_min = float(np.quantile(msp, tail))
        entropy_max = float(np.quantile(entropy, 1.0 - tail))
        accepted = float(((msp >= msp_min) & (entropy <= entropy_max)).mean())
        if accepted < target_acceptance:
            break
        best = (msp_min, entropy_max, accepted)
    return best
