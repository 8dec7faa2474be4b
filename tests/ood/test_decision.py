"""The verdict: quality gate first, then the dual MSP/entropy criterion."""

from __future__ import annotations

import numpy as np

from contracts.bundle import OodDualCriterion
from contracts.ood import OodDecision
from contracts.ood_extra import QualityMeasurements
from services.ood.domain.decision import QualityThresholds, decide
from services.ood.domain.scoring import Scores, score_logits

RULE = OodDualCriterion(msp_min=0.5, entropy_max=0.6, val_acceptance=0.95)
LIMITS = QualityThresholds()
GOOD_QUALITY = QualityMeasurements(
    width=600,
    height=450,
    brightness_mean=150,
    underexposed_fraction=0.0,
    overexposed_fraction=0.0,
    laplacian_variance=60,
    contrast_std=25,
    dominant_fraction=0.3,
    colourfulness=35,
)


def _confident() -> Scores:
    logits = np.zeros(7)
    logits[5] = 8.0
    return score_logits(logits, temperature=1.0)


def test_dual_rule_accepts_a_confident_prediction() -> None:
    verdict = decide(_confident(), GOOD_QUALITY, RULE, LIMITS)

    assert verdict.decision is OodDecision.accepted
    assert verdict.rule is None
    assert verdict.reasons == []


def test_dual_rule_rejects_a_flat_prediction_naming_both_criteria() -> None:
    verdict = decide(score_logits(np.zeros(7), temperature=1.0), GOOD_QUALITY, RULE, LIMITS)

    assert verdict.decision is OodDecision.rejected_ood
    assert verdict.rule == "msp+entropy"
    assert verdict.reasons == ["msp_below_min", "entropy_above_max"]


def test_low_msp_alone_rejects_naming_the_msp_criterion() -> None:
    verdict = decide(Scores(msp=0.45, entropy=0.4, energy=-3.0), GOOD_QUALITY, RULE, LIMITS)

    assert verdict.decision is OodDecision.rejected_ood
    assert verdict.rule == "msp"


def test_high_entropy_alone_rejects_naming_the_entropy_criterion() -> None:
    verdict = decide(Scores(msp=0.55, entropy=0.7, energy=-3.0), GOOD_QUALITY, RULE, LIMITS)

    assert verdict.decision is OodDecision.rejected_ood
    assert verdict.rule == "entropy"


def test_verdict_echoes_thresholds_and_reports_every_score() -> None:
    verdict = decide(_confident(), GOOD_QUALITY, RULE, LIMITS)

    assert verdict.thresholds["msp_min"] == RULE.msp_min
    assert verdict.thresholds["entropy_max"] == RULE.entropy_max
    assert verdict.thresholds["quality.min_side_px"] == LIMITS.min_side_px
    assert {"msp", "entropy", "energy", "quality.laplacian_variance"} <= set(verdict.scores)


def test_quality_gate_runs_before_the_dual_rule() -> None:
    dark = GOOD_QUALITY.model_copy(update={"brightness_mean": 10.0})

    verdict = decide(_confident(), dark, RULE, LIMITS)

    assert verdict.decision is OodDecision.rejected_quality
    assert verdict.rule == "quality_gate"
    assert verdict.reasons == ["too_dark"]


def test_without_quality_measurements_only_the_dual_rule_applies() -> None:
    verdict = decide(_confident(), None, RULE, LIMITS)

    assert verdict.decision is OodDecision.accepted
    assert "quality.min_side_px" not in verdict.thresholds
