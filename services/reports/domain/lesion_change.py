"""Comparing two images of one lesion (issue 12): the change in P(malignant), the cosine distance
between the model's pooled embeddings and the relative change in the segmented lesion's area,
each flagged against the thresholds of `contracts.lesions.ChangeCalibration` (fitted on HAM10000
lesions imaged more than once: each threshold is exceeded by 5% of same-lesion pairs).

Pure functions over stored values; a measure that is missing, or cannot be compared, gives a null
flag and a note rather than a guess."""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from datetime import datetime

from contracts.lesions import (
    AreaChange,
    ChangeCalibration,
    ChangeFlags,
    ChangeThresholds,
    LesionComparison,
    ProbabilityChange,
)
from contracts.reports import ModelRef

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class ImageMeasures:
    """What a done report stored for comparing its image with others of the same lesion."""

    job_id: str
    taken_at: datetime
    model: ModelRef
    malignant_probability: float | None
    embedding_f16: bytes | None
    area_fraction: float | None


def decode_f16(data: bytes) -> list[float]:
    """Little-endian float16 bytes as floats."""
    return list(struct.unpack(f"<{len(data) // 2}e", data[: len(data) // 2 * 2]))


def cosine_distance(first: list[float], second: list[float]) -> float | None:
    """1 - cos(first, second); None for vectors of different lengths or of zero norm."""
    if len(first) != len(second) or not first:
        return None
    dot = math.fsum(a * b for a, b in zip(first, second, strict=True))
    norms = math.sqrt(math.fsum(a * a for a in first)) * math.sqrt(math.fsum(b * b for b in second))
    if norms == 0.0 or not math.isfinite(norms):
        return None
    return 1.0 - dot / norms


def relative_change(before: float, after: float) -> float | None:
    """(after - before) / before; None when the earlier value is 0."""
    if before <= 0.0:
        return None
    return (after - before) / before


def thresholds_of(calibration: ChangeCalibration | None) -> ChangeThresholds:
    """The thresholds a comparison applies (all None without a calibration)."""
    if calibration is None:
        return ChangeThresholds()
    return ChangeThresholds(
        malignant_probability_delta=calibration.malignant_probability_delta.threshold,
        embedding_distance=calibration.embedding_distance.threshold,
        area_relative_change=calibration.area_relative_change.threshold,
        false_change_rate=1.0 - calibration.malignant_probability_delta.same_lesion_quantile,
        model_sha256=calibration.model_sha256,
    )


def _above(value: float | None, threshold: float | None) -> bool | None:
    if value is None or threshold is None:
        return None
    return abs(value) > threshold


def _probability(earlier: ImageMeasures, later: ImageMeasures, notes: list[str]) -> ProbabilityChange | None:
    if earlier.malignant_probability is None or later.malignant_probability is None:
        notes.append("P(malignant) is missing for one of the images: no malignancy flag.")
        return None
    return ProbabilityChange.model_validate(
        {
            "from": earlier.malignant_probability,
            "to": later.malignant_probability,
            "delta": later.malignant_probability - earlier.malignant_probability,
        }
    )


def _embedding_distance(earlier: ImageMeasures, later: ImageMeasures, notes: list[str]) -> float | None:
    if earlier.embedding_f16 is None or later.embedding_f16 is None:
        notes.append(
            "An image has no stored embedding (analysed before lesion tracking): no appearance flag."
        )
        return None
    if earlier.model.sha256 != later.model.sha256:
        # Two networks' embedding spaces share no geometry: a distance between them means nothing.
        notes.append("The images were analysed by different models: their embeddings are not compared.")
        return None
    distance = cosine_distance(decode_f16(earlier.embedding_f16), decode_f16(later.embedding_f16))
    if distance is None:
        notes.append("The stored embeddings cannot be compared (different lengths or zero vectors).")
    return distance


def _area(earlier: ImageMeasures, later: ImageMeasures, notes: list[str]) -> AreaChange | None:
    if earlier.area_fraction is None or later.area_fraction is None:
        notes.append("An image has no segmented lesion area: no size flag.")
        return None
    change = relative_change(earlier.area_fraction, later.area_fraction)
    if change is None:
        notes.append("No lesion was segmented in the earlier image: no relative size change.")
    return AreaChange.model_validate(
        {"from": earlier.area_fraction, "to": later.area_fraction, "relative_change": change}
    )


def compare(
    earlier: ImageMeasures,
    later: ImageMeasures,
    calibration: ChangeCalibration | None,
    calibration_problem: str | None = None,
) -> LesionComparison:
    """The later image against the earlier one, with each measure flagged against its threshold.
    `calibration_problem` says why there is no calibration (it becomes a note)."""
    notes: list[str] = []
    if calibration is None:
        notes.append(calibration_problem or "No change calibration is loaded: no change is flagged.")
    if earlier.model != later.model:
        notes.append(
            f"The images come from different model versions ({earlier.model.name} {earlier.model.version} "
            f"and {later.model.name} {later.model.version}): part of any change may be the model's."
        )
    probability = _probability(earlier, later, notes)
    distance = _embedding_distance(earlier, later, notes)
    area = _area(earlier, later, notes)
    thresholds = thresholds_of(calibration)
    appearance_threshold = thresholds.embedding_distance
    if calibration is not None and distance is not None and later.model.sha256 != calibration.model_sha256:
        # The threshold is a distance in the calibrated model's embedding space only.
        notes.append(
            "The change calibration was fitted on another model than the one that analysed these "
            "images: the embedding distance is shown without an appearance flag."
        )
        appearance_threshold = None
    malignancy = _above(probability.delta if probability else None, thresholds.malignant_probability_delta)
    appearance = _above(distance, appearance_threshold)
    size = _above(area.relative_change if area else None, thresholds.area_relative_change)
    flags = ChangeFlags(
        malignancy_changed=malignancy,
        appearance_changed=appearance,
        size_changed=size,
        changed=any(flag is True for flag in (malignancy, appearance, size)),
    )
    return LesionComparison(
        from_job_id=earlier.job_id,
        to_job_id=later.job_id,
        interval_days=(later.taken_at - earlier.taken_at).total_seconds() / SECONDS_PER_DAY,
        malignant_probability=probability,
        embedding_distance=distance,
        area=area,
        flags=flags,
        thresholds=thresholds,
        notes=notes,
    )


def consecutive_changes(
    images: list[ImageMeasures],
    calibration: ChangeCalibration | None,
    calibration_problem: str | None = None,
) -> list[LesionComparison]:
    """Each image (oldest first) compared with the one before it."""
    return [
        compare(earlier, later, calibration, calibration_problem)
        for earlier, later in itertools.pairwise(images)
    ]
