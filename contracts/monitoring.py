"""Performance monitoring (issue 12): how the model does in this clinic, per model version:
clinicians' overrides, malignant sensitivity and specificity against confirmed diagnoses (with
Wilson 95% intervals; overall, per body site and per age band), and the OOD rejection rate over
time (gateway <-> reports, and the public API's body)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from contracts.reports import ModelRef

# The window when the caller names none, and the longest one a request may ask for (the queries
# are bounded by it; two years of daily OOD buckets is 731 points).
DEFAULT_WINDOW_DAYS = 90
MAX_WINDOW_DAYS = 731


class MonitoringBucket(StrEnum):
    """The period the OOD rejection rate is counted per: a UTC day or an ISO week (from Monday)."""

    day = "day"
    week = "week"


class Sensitivity(BaseModel):
    """Malignant sensitivity: of the confirmed malignant lesions, the share the model called urgent."""

    value: float = Field(ge=0, le=1)
    ci_low: float = Field(ge=0, le=1, description="Wilson 95% interval, lower bound")
    ci_high: float = Field(ge=0, le=1, description="Wilson 95% interval, upper bound")
    positives: int = Field(ge=1, description="confirmed malignant lesions (the denominator)")


class Specificity(BaseModel):
    """Specificity: of the confirmed benign lesions, the share the model did not call urgent."""

    value: float = Field(ge=0, le=1)
    ci_low: float = Field(ge=0, le=1, description="Wilson 95% interval, lower bound")
    ci_high: float = Field(ge=0, le=1, description="Wilson 95% interval, upper bound")
    negatives: int = Field(ge=1, description="confirmed benign lesions (the denominator)")


class StratumPerformance(BaseModel):
    """Sensitivity and specificity within one body site or age band."""

    key: str = Field(description='the body site or age band; "unknown" when the job gave none')
    confirmed: int = Field(ge=0, description="results with a confirmed diagnosis in this stratum")
    malignant_sensitivity: Sensitivity | None = Field(description="null when no confirmed malignant lesion")
    specificity: Specificity | None = Field(description="null when no confirmed benign lesion")


class ModelPerformance(BaseModel):
    """One model version's figures over the window (reports completed in it)."""

    model: ModelRef
    results: int = Field(ge=0, description="done reports")
    rejected: int = Field(ge=0, description="reports rejected as out of distribution or poor quality")
    reviewed: int = Field(ge=0, description="done reports a clinician has reviewed")
    overridden: int = Field(ge=0, description="reviewed reports whose latest review changed the triage level")
    override_rate: float | None = Field(description="overridden / reviewed; null when none was reviewed")
    confirmed: int = Field(ge=0, description="done reports whose latest review confirms a diagnosis")
    malignant_sensitivity: Sensitivity | None
    specificity: Specificity | None
    by_site: list[StratumPerformance] = Field(description="body sites with a confirmed diagnosis")
    by_age_band: list[StratumPerformance] = Field(
        description='age bands ("<30", "30-44", "45-59", "60-74", "75+", "unknown") with a confirmed '
        "diagnosis"
    )


class OodRejectionPeriod(BaseModel):
    """Jobs created in one day or week that ended done or rejected, and how many were rejected."""

    period_start: date = Field(description="the UTC day, or the Monday of the ISO week")
    jobs: int = Field(ge=0)
    rejected: int = Field(ge=0)
    rate: float | None = Field(description="rejected / jobs; null when no job ended in the period")


class MonitoringView(BaseModel):
    """`GET /v1/monitoring`: per model version (newest first), then the OOD rejection rate over
    every period that overlaps the window (oldest first)."""

    since: datetime = Field(description="the window's start (inclusive)")
    until: datetime = Field(description="the window's end (exclusive)")
    bucket: MonitoringBucket
    models: list[ModelPerformance]
    ood_rejection: list[OodRejectionPeriod]
