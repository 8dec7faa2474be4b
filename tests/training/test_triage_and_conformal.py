"""Triage levels, conformal sets and the val-fitted thresholds on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.bundle import Conformal, TriageThresholds
from model_bundle.triage import (
    conformal_quantile,
    conformal_set,
    malignant_probability,
    softmax,
    triage_level,
)
from training.calibrate import (
    fit_dual_criterion,
    fit_temperature,
    sensitivity_specificity,
    threshold_for_sensitivity,
)

RULE = TriageThresholds(
    urgent_malignant_probability=0.30,
    routine_malignant_probability=0.10,
    urgent_target_sensitivity=0.95,
    routine_target_sensitivity=0.99,
    val_urgent_sensitivity=0.95,
    val_urgent_specificity=0.6,
)
CODES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MALIGNANT = (0, 1, 4)


@pytest.mark.parametrize(
    ("probs", "level", "threshold"),
    [
        ([0.1, 0.1, 0.0, 0.0, 0.2, 0.6, 0.0], "urgent", 0.30),  # P(mal) = 0.40
        ([0.0, 0.0, 0.1, 0.0, 0.3, 0.6, 0.0], "urgent", 0.30),  # exactly at the threshold
        ([0.05, 0.05, 0.2, 0.0, 0.05, 0.65, 0.0], "routine", 0.10),  # P(mal) = 0.15
        ([0.01, 0.01, 0.1, 0.0, 0.02, 0.86, 0.0], "monitor", 0.10),  # P(mal) = 0.04
    ],
)
def test_triage_level_follows_malignant_probability(probs: list[float], level: str, threshold: float) -> None:
    p_mal = malignant_probability(np.asarray(probs), MALIGNANT)
    assert triage_level(p_mal, RULE) == (level, threshold)


def test_conformal_set_keeps_classes_within_the_quantile_most_likely_first() -> None:
    probs = np.array([0.02, 0.03, 0.25, 0.0, 0.15, 0.55, 0.0])
    assert conformal_set(probs, Conformal(target_coverage=0.9, quantile=0.8), CODES) == ["nv", "bkl"]


def test_conformal_set_is_never_empty() -> None:
    flat = np.full(7, 1 / 7)
    assert conformal_set(flat, Conformal(target_coverage=0.9, quantile=0.5), CODES) == ["akiec"]


def test_conformal_quantile_gives_target_coverage_on_exchangeable_data() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 7))
    probs = softmax(logits)
    labels = np.array([rng.choice(7, p=p) for p in probs])  # labels drawn from the model itself
    cal, test = slice(0, 2000), slice(2000, 4000)
    q = conformal_quantile(probs[cal][np.arange(2000), labels[cal]], 0.9)
    covered = [
        CODES[y] in conformal_set(p, Conformal(target_coverage=0.9, quantile=q), CODES)
        for p, y in zip(probs[test], labels[test], strict=True)
    ]
    assert 0.88 <= float(np.mean(covered)) <= 0.93


def test_fit_temperature_recovers_the_temperature_that_generated_labels() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (5000, 7))
    labels = np.array([rng.choice(7, p=p) for p in softmax(logits, 2.0)])
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_threshold_for_sensitivity_meets_the_target_and_is_the_largest_such() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random(1000)
    positive = rng.random(1000) < 0.3
    t = threshold_for_sensitivity(scores, positive, 0.95)
    sens, _ = sensitivity_specificity(scores, positive, t)
    assert sens >= 0.95
    higher = np.sort(scores[positive])[np.searchsorted(np.sort(scores[positive]), t) + 1]
    assert sensitivity_specificity(scores, positive, higher)[0] < 0.95


def test_dual_criterion_accepts_at_least_the_target_share_of_in_distribution() -> None:
    probs = softmax(np.random.default_rng(3).normal(0, 3, (2000, 7)))
    msp_min, entropy_max, accepted = fit_dual_criterion(probs, 0.95)
    entropy = -(probs * np.log(probs)).sum(axis=1) / np.log(7)
    measured = float(((probs.max(axis=1) >= msp_min) & (entropy <= entropy_max)).mean())
    assert measured == pytest.approx(accepted)
    assert 0.95 <= measured < 0.97
