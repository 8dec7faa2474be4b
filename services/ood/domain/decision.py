"""The verdict: an image-quality gate first, then the OOD rule.

The quality gate runs first because a dark, blurred or blank photo says nothing about the model:
it is rejected as `rejected_quality` whatever the logits look like. Then the OOD rule rejects
outputs the model was not trained to judge as `rejected_ood`: the bundle's fitted `ood_detector`
(reject when ANY score of its rule exceeds its threshold) when it has one, else the seed rule from
the literature (Hendrycks & Gimpel's max softmax probability, plus normalized entropy).

Thresholds are echoed with their direction in the key: `msp_min` (reject below) and
`<score>_max` (reject above), whichever rule is in force, so a response reads the same either
way. The detector's msp threshold t (on 1 - msp) is echoed as msp_min = 1 - t.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from contracts.bundle import OodDualCriterion
from contracts.ood import OodDecision, OodScoreResponse
from contracts.ood_extra import QualityMeasurements
from services.ood.domain.scoring import Scores

QUALITY_RULE = "quality_gate"


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the image-quality gate.

    Defaults measured on all 8,802 HAM10000 images (200x150) in shared/data, every one of which
    passes: shorter side 150 px; mean luma 81-230; under-exposed share <= 0.21; over-exposed
    share <= 0.51; Laplacian variance >= 7.0 (dermoscopy is smooth, so the blur limit is low);
    luma std >= 4.8; dominant share <= 0.80; colourfulness >= 8.3.
    """

    min_side_px: int = 128
    min_brightness: float = 40.0
    max_brightness: float = 240.0
    max_underexposed_fraction: float = 0.6
    max_overexposed_fraction: float = 0.6
    min_laplacian_variance: float = 3.0
    min_contrast_std: float = 3.0
    max_dominant_fraction: float = 0.92
    min_colourfulness: float = 3.0

    def as_dict(self) -> dict[str, float]:
        """Thresholds as echoed in OodScoreResponse.thresholds, prefixed `quality.`."""
        return {f"quality.{name}": float(value) for name, value in asdict(self).items()}


def quality_reasons(q: QualityMeasurements, limits: QualityThresholds) -> list[str]:
    """Machine-readable reasons the image is unfit to score; empty when it passes.

    Exposure is judged first: darkening or blowing out an image scales its Laplacian, contrast
    and colourfulness down with it, so blur, uniformity and colour are only judged on an image
    that is exposed well enough to measure them, and the photographer is told the real cause.
    """
    reasons: list[str] = []
    if min(q.width, q.height) < limits.min_side_px:
        reasons.append("too_small")
    if (
        q.brightness_mean < limits.min_brightness
        or q.underexposed_fraction > limits.max_underexposed_fraction
    ):
        reasons.append("too_dark")
    if q.brightness_mean > limits.max_brightness or q.overexposed_fraction > limits.max_overexposed_fraction:
        reasons.append("overexposed")
    if "too_dark" in reasons or "overexposed" in reasons:
        return reasons
    if q.laplacian_variance < limits.min_laplacian_variance:
        reasons.append("too_blurry")
    if q.contrast_std < limits.min_contrast_std or q.dominant_fraction > limits.max_dominant_fraction:
        reasons.append("uniform")
    if q.colourfulness < limits.min_colourfulness:
        reasons.append("grayscale")
    return reasons


def dual_criterion(scores: Scores, rule: OodDualCriterion) -> list[str]:
    """Reasons the dual criterion rejects the output: MSP below its minimum and/or normalized
    entropy above its maximum. Empty when the model is confident enough."""
    reasons: list[str] = []
    if scores.msp < rule.msp_min:
        reasons.append("msp_below_min")
    if scores.entropy > rule.entropy_max:
        reasons.append("entropy_above_max")
    return reasons


def _rule_name(reasons: list[str]) -> str:
    """'msp', 'entropy' or 'msp+entropy': which half of the dual criterion fired."""
    fired = [
        name
        for name, reason in (("msp", "msp_below_min"), ("entropy", "entropy_above_max"))
        if reason in reasons
    ]
    return "+".join(fired)


@dataclass(frozen=True)
class DetectorRule:
    """The fitted detector's rule at one acceptance level: score names (OodDetector orientation,
    higher = more OOD) and each one's threshold; reject when ANY score exceeds its threshold."""

    rule: tuple[str, ...]
    thresholds: Mapping[str, float]
    target_acceptance: float

    def echoed(self) -> dict[str, float]:
        """Thresholds as echoed in OodScoreResponse.thresholds (see the module docstring)."""
        out = {_threshold_key(name): _echoed_value(name, self.thresholds[name]) for name in self.rule}
        return out | {"target_acceptance": self.target_acceptance}


def _threshold_key(name: str) -> str:
    return "msp_min" if name == "msp" else f"{name}_max"


def _echoed_value(name: str, threshold: float) -> float:
    return 1.0 - threshold if name == "msp" else threshold


def _reason(name: str) -> str:
    return "msp_below_min" if name == "msp" else f"{name}_above_max"


def detector_rule(scores: Scores, rule: DetectorRule) -> list[str]:
    """The rule's scores that exceed their thresholds, in rule order; empty when none does."""
    oriented = scores.oriented()
    missing = [name for name in rule.rule if name not in oriented]
    if missing:
        raise ValueError(f"the detector's rule needs scores that were not computed: {missing}")
    return [name for name in rule.rule if oriented[name] > rule.thresholds[name]]


def decide(
    scores: Scores,
    quality: QualityMeasurements | None,
    ood_rule: OodDualCriterion,
    limits: QualityThresholds,
    detector: DetectorRule | None = None,
) -> OodScoreResponse:
    """The verdict with every score and threshold. Without quality measurements the gate is
    skipped; with a `detector` its rule replaces the seed dual criterion."""
    all_scores = scores.as_dict()
    thresholds = (
        detector.echoed()
        if detector is not None
        else {"msp_min": ood_rule.msp_min, "entropy_max": ood_rule.entropy_max}
    )
    if quality is not None:
        all_scores |= {f"quality.{name}": value for name, value in quality.to_wire().items()}
        thresholds |= limits.as_dict()
        reasons = quality_reasons(quality, limits)
        if reasons:
            return OodScoreResponse(
                scores=all_scores,
                decision=OodDecision.rejected_quality,
                rule=QUALITY_RULE,
                reasons=reasons,
                thresholds=thresholds,
            )
    if detector is not None:
        fired = detector_rule(scores, detector)
        reasons, rule_name = [_reason(name) for name in fired], "+".join(fired)
    else:
        reasons = dual_criterion(scores, ood_rule)
        rule_name = _rule_name(reasons)
    if reasons:
        return OodScoreResponse(
            scores=all_scores,
            decision=OodDecision.rejected_ood,
            rule=rule_name,
            reasons=reasons,
            thresholds=thresholds,
        )
    return OodScoreResponse(scores=all_scores, decision=OodDecision.accepted, thresholds=thresholds)
