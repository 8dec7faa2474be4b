"""The fitted detector's rule: reject when ANY of its scores exceeds its threshold, name the
scores that fired, echo the thresholds used; the quality gate still comes first."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.bundle import OodDualCriterion
from contracts.ood import OodDecision
from services.ood.domain.decision import DetectorRule, QualityThresholds, decide
from services.ood.domain.scoring import DetectorStats, Scores, score_output
from tests.ood.test_decision import GOOD_QUALITY

SEED = OodDualCriterion(msp_min=0.5, entropy_max=0.6, val_acceptance=0.95)
LIMITS = QualityThresholds()
STATS = DetectorStats(
    class_means=20.0 * np.eye(7, 8), precision=np.eye(8), knn_reference=np.repeat(np.eye(7, 8), 2, axis=0)
)
MAHALANOBIS = DetectorRule(rule=("mahalanobis",), thresholds={"mahalanobis": 4.0}, target_acceptance=0.95)
MAHALANOBIS_MSP = DetectorRule(
    rule=("mahalanobis", "msp"), thresholds={"mahalanobis": 4.0, "msp": 0.6}, target_acceptance=0.95
)
CONFIDENT = np.asarray([0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0])
FLAT = np.zeros(7)
IN_DISTRIBUTION = STATS.class_means[5] + np.eye(8)[7]  # 1 from the nv mean: distance 1
FAR = STATS.class_means[5] + 10.0 * np.eye(8)[7]  # 10 from the nv mean: distance 100


def _scores(logits: np.ndarray, embedding: np.ndarray) -> Scores:
    return score_output(logits, embedding, 1.0, STATS, knn_k=2)


def test_in_distribution_embedding_is_accepted() -> None:
    verdict = decide(_scores(CONFIDENT, IN_DISTRIBUTION), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS)

    assert verdict.decision is OodDecision.accepted
    assert verdict.rule is None


def test_far_embedding_is_rejected_naming_the_mahalanobis_rule() -> None:
    verdict = decide(_scores(CONFIDENT, FAR), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS)

    assert verdict.decision is OodDecision.rejected_ood
    assert verdict.rule == "mahalanobis"
    assert verdict.reasons == ["mahalanobis_above_max"]


def test_detector_rule_replaces_the_seed_rule() -> None:
    # flat logits fail the seed dual criterion, but the rule is mahalanobis only
    verdict = decide(_scores(FLAT, IN_DISTRIBUTION), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS)

    assert verdict.decision is OodDecision.accepted
    assert "entropy_max" not in verdict.thresholds


def test_two_score_rule_rejects_on_msp_alone_naming_msp() -> None:
    verdict = decide(_scores(FLAT, IN_DISTRIBUTION), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS_MSP)

    assert verdict.decision is OodDecision.rejected_ood
    assert verdict.rule == "msp"
    assert verdict.reasons == ["msp_below_min"]


def test_two_score_rule_rejects_on_mahalanobis_alone_naming_mahalanobis() -> None:
    verdict = decide(_scores(CONFIDENT, FAR), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS_MSP)

    assert verdict.rule == "mahalanobis"


def test_two_score_rule_names_both_scores_when_both_fire() -> None:
    verdict = decide(_scores(FLAT, FAR), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS_MSP)

    assert verdict.rule == "mahalanobis+msp"
    assert verdict.reasons == ["mahalanobis_above_max", "msp_below_min"]


def test_score_equal_to_its_threshold_is_accepted() -> None:
    at_threshold = STATS.class_means[5] + 2.0 * np.eye(8)[7]  # distance exactly 4.0

    verdict = decide(_scores(CONFIDENT, at_threshold), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS)

    assert verdict.decision is OodDecision.accepted


def test_verdict_reports_every_score_and_echoes_the_detector_thresholds() -> None:
    verdict = decide(_scores(CONFIDENT, FAR), GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS_MSP)

    assert {"msp", "entropy", "energy", "mahalanobis", "knn"} <= set(verdict.scores)
    assert verdict.scores["mahalanobis"] == pytest.approx(100.0)
    assert verdict.thresholds["mahalanobis_max"] == 4.0
    assert verdict.thresholds["msp_min"] == pytest.approx(0.4)  # 1 - the threshold on 1 - msp
    assert verdict.thresholds["target_acceptance"] == 0.95
    assert "quality.min_side_px" in verdict.thresholds


def test_quality_gate_runs_before_the_detector() -> None:
    dark = GOOD_QUALITY.model_copy(update={"brightness_mean": 10.0})

    verdict = decide(_scores(CONFIDENT, FAR), dark, SEED, LIMITS, MAHALANOBIS)

    assert verdict.decision is OodDecision.rejected_quality
    assert verdict.rule == "quality_gate"


def test_rule_needing_scores_that_were_not_computed_is_an_error() -> None:
    logits_only = score_output(CONFIDENT, FAR, 1.0, None, knn_k=2)

    with pytest.raises(ValueError):
        decide(logits_only, GOOD_QUALITY, SEED, LIMITS, MAHALANOBIS)
