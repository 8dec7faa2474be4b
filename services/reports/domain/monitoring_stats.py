"""Performance monitoring's arithmetic (issue 12), free of the database: the window, Wilson score
intervals, age bands and body-site keys, and the folding of the queries' grouped counts into
each model version's figures and the OOD rejection rate per day or week.

Definitions (docs/CLINICAL_WORKFLOW.md, "Performance monitoring"): a result is a done report, a
review counts when it is the report's latest version, and "positive" means the model's triage
level was `urgent`; the truth is the latest review's confirmed malignancy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from contracts.jobs import JobStatus
from contracts.monitoring import (
    DEFAULT_WINDOW_DAYS,
    MAX_WINDOW_DAYS,
    ModelPerformance,
    MonitoringBucket,
    OodRejectionPeriod,
    Sensitivity,
    Specificity,
    StratumPerformance,
)
from contracts.reports import ModelRef

# The 0.975 quantile of the standard normal distribution (statistics.NormalDist().inv_cdf(0.975)).
Z_95 = 1.959963984540054

UNKNOWN = "unknown"
# (exclusive upper age, label) of every band but the last; ages are whole years.
_AGE_BAND_UPPER_BOUNDS = ((30, "<30"), (45, "30-44"), (60, "45-59"), (75, "60-74"))
_OLDEST_BAND = "75+"
AGE_BANDS = (*(label for _, label in _AGE_BAND_UPPER_BOUNDS), _OLDEST_BAND, UNKNOWN)
"""Every age band, in the order the tables list them."""

_BUCKET_DAYS = {MonitoringBucket.day: 1, MonitoringBucket.week: 7}


@dataclass(frozen=True)
class MonitoringWindow:
    """[since, until) in UTC, on reports.completed_at (models) and jobs.created_at (OOD)."""

    since: datetime
    until: datetime


def monitoring_window(since: datetime | None, until: datetime | None, now: datetime) -> MonitoringWindow:
    """The window a request asks for: `until` defaults to now, `since` to DEFAULT_WINDOW_DAYS before
    `until`; naive datetimes are UTC. ValueError when it is empty, reversed or longer than
    MAX_WINDOW_DAYS."""
    end = _as_utc(until) if until is not None else now.astimezone(UTC)
    start = _as_utc(since) if since is not None else end - timedelta(days=DEFAULT_WINDOW_DAYS)
    if start >= end:
        raise ValueError("`since` must be before `until`")
    if end - start > timedelta(days=MAX_WINDOW_DAYS):
        raise ValueError(f"the window may span at most {MAX_WINDOW_DAYS} days")
    return MonitoringWindow(since=start, until=end)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default z). Unlike the
    normal approximation it stays inside [0, 1] and is usable for the small counts a clinic has."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    proportion = successes / trials
    z_squared = z * z
    denominator = 1 + z_squared / trials
    centre = (proportion + z_squared / (2 * trials)) / denominator
    half_width = (
        z
        * math.sqrt(proportion * (1 - proportion) / trials + z_squared / (4 * trials * trials))
        / denominator
    )
    # At 0 or n successes one bound is 0 or 1 exactly; rounding must not push it outside.
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def age_band(age: int | None) -> str:
    """The job's age band: "<30", "30-44", "45-59", "60-74", "75+", or "unknown" without an age."""
    if age is None:
        return UNKNOWN
    for upper, label in _AGE_BAND_UPPER_BOUNDS:
        if age < upper:
            return label
    return _OLDEST_BAND


def site_key(body_site: str | None) -> str:
    """The body site as tabulated: trimmed and lower-cased (clients spell "Back" and "back"),
    "unknown" when the job gave none."""
    key = (body_site or "").strip().lower()
    return key or UNKNOWN


@dataclass(frozen=True)
class ReportCell:
    """`count` reports of one model version that share every other field (one row of the grouped
    query): the report's status, whether it was reviewed, its latest review's agreement and
    confirmed malignancy, whether the model said urgent, and the job's body site and age."""

    model: tuple[str, str, str]  # name, version, sha256
    status: str
    reviewed: bool
    agrees_with_model: bool | None
    confirmed_malignant: bool | None
    model_urgent: bool
    body_site: str | None
    age: int | None
    count: int
    last_completed_at: datetime


@dataclass
class Confusion:
    """Model urgent (positive) or not, against confirmed malignant or benign."""

    true_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    false_positives: int = 0

    def add(self, model_urgent: bool, malignant: bool, count: int) -> None:
        """Count `count` confirmed lesions."""
        if malignant:
            if model_urgent:
                self.true_positives += count
            else:
                self.false_negatives += count
        elif model_urgent:
            self.false_positives += count
        else:
            self.true_negatives += count

    @property
    def confirmed(self) -> int:
        """Every lesion with a confirmed diagnosis."""
        return self.true_positives + self.false_negatives + self.true_negatives + self.false_positives

    def sensitivity(self) -> Sensitivity | None:
        """TP / (TP + FN) with its interval; None without a confirmed malignant lesion."""
        positives = self.true_positives + self.false_negatives
        if positives == 0:
            return None
        low, high = wilson_interval(self.true_positives, positives)
        return Sensitivity(
            value=self.true_positives / positives, ci_low=low, ci_high=high, positives=positives
        )

    def specificity(self) -> Specificity | None:
        """TN / (TN + FP) with its interval; None without a confirmed benign lesion."""
        negatives = self.true_negatives + self.false_positives
        if negatives == 0:
            return None
        low, high = wilson_interval(self.true_negatives, negatives)
        return Specificity(
            value=self.true_negatives / negatives, ci_low=low, ci_high=high, negatives=negatives
        )

    def stratum(self, key: str) -> StratumPerformance:
        """This table's row for a body site or age band."""
        return StratumPerformance(
            key=key,
            confirmed=self.confirmed,
            malignant_sensitivity=self.sensitivity(),
            specificity=self.specificity(),
        )


@dataclass
class _ModelTally:
    results: int = 0
    rejected: int = 0
    reviewed: int = 0
    overridden: int = 0
    last_completed_at: datetime | None = None
    overall: Confusion = field(default_factory=Confusion)
    by_site: dict[str, Confusion] = field(default_factory=dict)
    by_age_band: dict[str, Confusion] = field(default_factory=dict)

    def add(self, cell: ReportCell) -> None:
        if self.last_completed_at is None or cell.last_completed_at > self.last_completed_at:
            self.last_completed_at = cell.last_completed_at
        if cell.status == JobStatus.rejected.value:
            self.rejected += cell.count
            return
        if cell.status != JobStatus.done.value:
            return
        self.results += cell.count
        if not cell.reviewed:
            return
        self.reviewed += cell.count
        if cell.agrees_with_model is False:
            self.overridden += cell.count
        if cell.confirmed_malignant is None:
            return
        self.overall.add(cell.model_urgent, cell.confirmed_malignant, cell.count)
        site = self.by_site.setdefault(site_key(cell.body_site), Confusion())
        site.add(cell.model_urgent, cell.confirmed_malignant, cell.count)
        band = self.by_age_band.setdefault(age_band(cell.age), Confusion())
        band.add(cell.model_urgent, cell.confirmed_malignant, cell.count)

    def performance(self, model: tuple[str, str, str]) -> ModelPerformance:
        name, version, sha256 = model
        # Sites by how much evidence they hold (then by name); bands in age order.
        sites = sorted(self.by_site.items(), key=lambda item: (-item[1].confirmed, item[0]))
        bands = sorted(self.by_age_band.items(), key=lambda item: AGE_BANDS.index(item[0]))
        return ModelPerformance(
            model=ModelRef(name=name, version=version, sha256=sha256),
            results=self.results,
            rejected=self.rejected,
            reviewed=self.reviewed,
            overridden=self.overridden,
            override_rate=self.overridden / self.reviewed if self.reviewed else None,
            confirmed=self.overall.confirmed,
            malignant_sensitivity=self.overall.sensitivity(),
            specificity=self.overall.specificity(),
            by_site=[confusion.stratum(key) for key, confusion in sites],
            by_age_band=[confusion.stratum(key) for key, confusion in bands],
        )


def model_performance(cells: Iterable[ReportCell]) -> list[ModelPerformance]:
    """Each model version's figures, the most recently used version first."""
    tallies: dict[tuple[str, str, str], _ModelTally] = {}
    for cell in cells:
        tallies.setdefault(cell.model, _ModelTally()).add(cell)
    ordered = sorted(tallies.items(), key=lambda item: item[0])
    ordered.sort(key=lambda item: item[1].last_completed_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return [tally.performance(model) for model, tally in ordered]


@dataclass(frozen=True)
class DayCount:
    """Jobs created on one UTC day that ended done or rejected, and how many were rejected."""

    day: date
    jobs: int
    rejected: int


def period_start(day: date, bucket: MonitoringBucket) -> date:
    """The first day of the period holding `day`: itself, or the Monday of its ISO week."""
    return day if bucket == MonitoringBucket.day else day - timedelta(days=day.weekday())


def ood_rejection(
    days: Iterable[DayCount], window: MonitoringWindow, bucket: MonitoringBucket
) -> list[OodRejectionPeriod]:
    """The rejection rate per period, for every period overlapping the window (oldest first;
    periods without jobs included, rate null, so a plot's time axis has no holes). The first and
    last periods count only the part inside the window."""
    step = timedelta(days=_BUCKET_DAYS[bucket])
    first = period_start(window.since.astimezone(UTC).date(), bucket)
    # `until` is exclusive: the last instant inside the window decides the last period.
    last = period_start((window.until - timedelta(microseconds=1)).astimezone(UTC).date(), bucket)
    totals: dict[date, list[int]] = {}
    start = first
    while start <= last:
        totals[start] = [0, 0]
        start += step
    for count in days:
        jobs_and_rejected = totals[period_start(count.day, bucket)]
        jobs_and_rejected[0] += count.jobs
        jobs_and_rejected[1] += count.rejected
    return [
        OodRejectionPeriod(
            period_start=start, jobs=jobs, rejected=rejected, rate=rejected / jobs if jobs else None
        )
        for start, (jobs, rejected) in totals.items()
    ]
