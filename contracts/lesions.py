"""Lesions followed over time (issue 12): a patient's lesion, its images, and the comparison of
two of them (change in P(malignant), embedding distance, change in segmented area), with flags
from thresholds calibrated on HAM10000 lesions imaged more than once (`make calibrate-change`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.bundle import TriageLevel
from contracts.jobs import JobStatus
from contracts.text import PlainText

# Ids SkinTriage makes (lesions: `les_` + 32 hex) and accepts in paths and form fields.
LESION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
LesionLaterality = Literal["left", "right", "midline"]
BodyMapView = Literal["front", "back"]


class BodyMap(BaseModel):
    """Where the lesion is on a body outline: the view and the position in [0, 1] (x from the
    outline's left edge, y from its top)."""

    # Strict: JSON `false` is no coordinate (lax mode would read it as 0).
    model_config = ConfigDict(extra="forbid", strict=True)

    view: BodyMapView
    x: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    y: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


class LesionCreate(BaseModel):
    """A new lesion of a patient (`patient_ref` is opaque to SkinTriage)."""

    model_config = ConfigDict(extra="forbid")

    patient_ref: PlainText = Field(min_length=1, max_length=128)
    label: PlainText | None = Field(default=None, max_length=128)
    body_site: PlainText | None = Field(default=None, max_length=64)
    laterality: LesionLaterality | None = None
    body_map: BodyMap | None = None


class LesionView(BaseModel):
    """A lesion as the API shows it, with how many images name it and the newest one."""

    lesion_id: str
    patient_ref: str
    label: str | None = None
    body_site: str | None = None
    laterality: LesionLaterality | None = None
    body_map: BodyMap | None = None
    created_at: datetime
    image_count: int = 0
    latest_job_id: str | None = None


class LesionList(BaseModel):
    """A patient's lesions, oldest first."""

    items: list[LesionView]


class LesionImage(BaseModel):
    """One image of a lesion in its history."""

    job_id: str
    created_at: datetime
    status: JobStatus
    triage_level: TriageLevel | None = None
    top_class: str | None = None
    top_class_display_name: str | None = None
    malignant_probability: float | None = None
    lesion_area_fraction: float | None = None
    has_heatmap: bool = False


class ProbabilityChange(BaseModel):
    """P(malignant) of the earlier and the later image, and the change (to - from)."""

    from_: float = Field(alias="from")
    to: float
    delta: float

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AreaChange(BaseModel):
    """The segmented lesion's share of each image and the relative change (to - from) / from
    (None when the earlier area is 0)."""

    from_: float = Field(alias="from")
    to: float
    relative_change: float | None = None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ChangeFlags(BaseModel):
    """Each measure against its calibrated threshold (None: the measure is missing or not
    comparable); `changed` is True when any flag is True."""

    malignancy_changed: bool | None = None
    appearance_changed: bool | None = None
    size_changed: bool | None = None
    changed: bool = False


class ChangeThresholds(BaseModel):
    """The thresholds applied: a change above one is flagged."""

    malignant_probability_delta: float | None = None
    embedding_distance: float | None = None
    area_relative_change: float | None = None
    false_change_rate: float | None = Field(
        default=None, description="share of same-lesion pairs each threshold flags (calibration target)"
    )
    model_sha256: str | None = Field(default=None, description="the model the thresholds were fitted on")


class LesionComparison(BaseModel):
    """Two images of one lesion compared: the later against the earlier."""

    from_job_id: str
    to_job_id: str
    interval_days: float
    malignant_probability: ProbabilityChange | None = None
    embedding_distance: float | None = None
    area: AreaChange | None = None
    flags: ChangeFlags
    thresholds: ChangeThresholds
    notes: list[str] = Field(default_factory=list)


class LesionHistory(BaseModel):
    """A lesion, its images oldest first, and the comparison of each two consecutive done ones."""

    lesion: LesionView
    images: list[LesionImage]
    changes: list[LesionComparison]


class MeasureCalibration(BaseModel):
    """One change measure's calibration: the threshold fitted on train+val pairs and how well the
    measure separates same-lesion from different-lesion pairs on test pairs."""

    threshold: float
    same_lesion_quantile: float = Field(description="the quantile of same-lesion pairs the threshold is")
    auroc_test: float | None = None
    same_lesion_median_test: float | None = None
    different_lesion_median_test: float | None = None
    false_change_rate_test: float | None = Field(
        default=None, description="share of test same-lesion pairs above the threshold"
    )
    detection_rate_test: float | None = Field(
        default=None, description="share of test different-lesion pairs above the threshold"
    )


class SegmentationScore(BaseModel):
    """Dice of model_bundle.segmentation against HAM10000's lesion masks on a split."""

    split: str
    images: int
    dice_mean: float
    dice_median: float


class ChangeCalibration(BaseModel):
    """`change_calibration.json` in a bundle, written by `make calibrate-change`."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    model_name: str
    model_version: str
    model_sha256: str
    created_at: datetime
    data: str
    pair_counts: dict[str, dict[str, int]] = Field(
        description="split group (fit: train+val, test) -> {same_lesion, different_lesion, lesions, images}"
    )
    malignant_probability_delta: MeasureCalibration
    embedding_distance: MeasureCalibration
    area_relative_change: MeasureCalibration
    segmentation: SegmentationScore
    notes: list[str] = Field(default_factory=list)
