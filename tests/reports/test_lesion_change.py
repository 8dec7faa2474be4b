"""services.reports.domain.lesion_change: the deltas between two images of a lesion, each flagged
against its calibrated threshold; a missing or incomparable measure gives a null flag and a note."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from contracts.lesions import ChangeCalibration, MeasureCalibration, SegmentationScore
from contracts.reports import ModelRef
from services.reports.domain.lesion_change import (
    ImageMeasures,
    compare,
    consecutive_changes,
    cosine_distance,
    decode_f16,
    relative_change,
)

MODEL = ModelRef(name="m", version="1.0.0", sha256="a" * 64)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def f16(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}e", *values)


def calibration(sha256: str = MODEL.sha256) -> ChangeCalibration:
    def measure(threshold: float) -> MeasureCalibration:
        return MeasureCalibration(threshold=threshold, same_lesion_quantile=0.95)

    return ChangeCalibration(
        model_name="m",
        model_version="1.0.0",
        model_sha256=sha256,
        created_at=T0,
        data="synthetic",
        pair_counts={},
        malignant_probability_delta=measure(0.2),
        embedding_distance=measure(0.3),
        area_relative_change=measure(0.5),
        segmentation=SegmentationScore(split="test", images=1, dice_mean=0.8, dice_median=0.8),
    )


def image(
    job_id: str,
    days: float = 0.0,
    p: float | None = 0.1,
    embedding: bytes | None = None,
    area: float | None = 0.2,
    model: ModelRef = MODEL,
) -> ImageMeasures:
    return ImageMeasures(
        job_id=job_id,
        taken_at=T0 + timedelta(days=days),
        model=model,
        malignant_probability=p,
        embedding_f16=f16(1.0, 0.0, 0.0) if embedding is None else embedding,
        area_fraction=area,
    )


def test_changes_above_every_threshold_are_flagged() -> None:
    result = compare(
        image("a"), image("b", days=90, p=0.45, embedding=f16(0.0, 1.0, 0.0), area=0.4), calibration()
    )

    assert result.interval_days == pytest.approx(90)
    assert result.malignant_probability is not None
    assert result.malignant_probability.delta == pytest.approx(0.35)
    assert result.embedding_distance == pytest.approx(1.0)
    assert result.area is not None and result.area.relative_change == pytest.approx(1.0)
    flags = result.flags
    assert (flags.malignancy_changed, flags.appearance_changed, flags.size_changed, flags.changed) == (
        True,
        True,
        True,
        True,
    )


def test_changes_below_every_threshold_are_not_flagged() -> None:
    result = compare(image("a"), image("b", p=0.2, area=0.25), calibration())

    assert result.embedding_distance == pytest.approx(0.0)
    assert (result.flags.malignancy_changed, result.flags.appearance_changed, result.flags.size_changed) == (
        False,
        False,
        False,
    )
    assert result.flags.changed is False
    assert result.thresholds.malignant_probability_delta == 0.2
    assert result.thresholds.false_change_rate == pytest.approx(0.05)


def test_a_decrease_beyond_the_threshold_counts_as_a_change() -> None:
    result = compare(image("a", p=0.6), image("b", p=0.1), calibration())

    assert result.flags.malignancy_changed is True


def test_one_flag_is_enough_for_changed() -> None:
    result = compare(image("a"), image("b", area=0.5), calibration())

    assert result.flags.size_changed is True and result.flags.malignancy_changed is False
    assert result.flags.changed is True


def test_missing_values_give_null_flags_with_notes() -> None:
    earlier = ImageMeasures("a", T0, MODEL, None, None, None)
    result = compare(earlier, image("b"), calibration())

    assert result.malignant_probability is None and result.embedding_distance is None and result.area is None
    assert (result.flags.malignancy_changed, result.flags.appearance_changed, result.flags.size_changed) == (
        None,
        None,
        None,
    )
    assert result.flags.changed is False
    assert len(result.notes) == 3


def test_an_earlier_area_of_zero_has_no_relative_change() -> None:
    result = compare(image("a", area=0.0), image("b", area=0.3), calibration())

    assert result.area is not None and result.area.relative_change is None
    assert result.flags.size_changed is None


def test_without_a_calibration_nothing_is_flagged_and_the_reason_is_noted() -> None:
    result = compare(image("a"), image("b", p=0.9), None, "no calibration file")

    assert result.flags.malignancy_changed is None and result.flags.changed is False
    assert result.malignant_probability is not None
    assert "no calibration file" in result.notes


def test_a_calibration_of_another_model_leaves_the_embedding_unflagged() -> None:
    result = compare(image("a"), image("b", embedding=f16(0.0, 1.0, 0.0)), calibration(sha256="b" * 64))

    assert result.embedding_distance == pytest.approx(1.0)
    assert result.flags.appearance_changed is None
    assert any("another model" in note for note in result.notes)


def test_images_of_different_models_are_not_compared_by_embedding() -> None:
    other = ModelRef(name="m", version="2.0.0", sha256="c" * 64)
    result = compare(image("a"), image("b", model=other), calibration())

    assert result.embedding_distance is None and result.flags.appearance_changed is None
    assert result.flags.malignancy_changed is False  # P(malignant) is still compared
    assert any("different model versions" in note for note in result.notes)


def test_consecutive_changes_pair_each_image_with_the_one_before() -> None:
    images = [image("a"), image("b", days=30), image("c", days=60)]

    changes = consecutive_changes(images, calibration())

    assert [(c.from_job_id, c.to_job_id) for c in changes] == [("a", "b"), ("b", "c")]
    assert consecutive_changes(images[:1], calibration()) == []


def test_the_vector_helpers() -> None:
    assert decode_f16(f16(0.5, -2.0)) == [0.5, -2.0]
    assert cosine_distance([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(2.0)
    assert cosine_distance([1.0], [1.0, 0.0]) is None
    assert cosine_distance([0.0, 0.0], [1.0, 0.0]) is None
    assert relative_change(0.2, 0.1) == pytest.approx(-0.5)
    assert relative_change(0.0, 0.1) is None
