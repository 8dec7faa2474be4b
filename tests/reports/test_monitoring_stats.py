"""Performance monitoring's arithmetic (services/reports/domain/monitoring_stats.py), without a
database: Wilson intervals against published values, age bands at their edges, body-site keys,
the folding of grouped counts into model figures, the OOD periods and the window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from contracts.monitoring import MonitoringBucket
from services.reports.domain.monitoring_stats import (
    AGE_BANDS,
    Confusion,
    DayCount,
    MonitoringWindow,
    ReportCell,
    age_band,
    model_performance,
    monitoring_window,
    ood_rejection,
    period_start,
    site_key,
    wilson_interval,
)

MODEL_A = ("skin", "1.0.0", "a" * 64)
MODEL_B = ("skin", "2.0.0", "b" * 64)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


# Wilson 95% intervals as scipy.stats.binomtest(k, n).proportion_ci(method="wilson") gives them
# (and, for 8/10, as Newcombe 1998 tabulates: 0.490 to 0.943).
@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (8, 10, 0.490162, 0.943318),
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        (1, 1, 0.206549, 1.0),
        (0, 1, 0.0, 0.793451),
        (3, 4, 0.300642, 0.954413),
        (2, 3, 0.207660, 0.938508),
        (1, 2, 0.094531, 0.905469),
        (45, 50, 0.786398, 0.956524),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_stays_inside_zero_and_one() -> None:
    for trials in range(1, 60):
        for successes in (0, trials):
            low, high = wilson_interval(successes, trials)
            assert 0.0 <= low <= high <= 1.0


@pytest.mark.parametrize(("successes", "trials"), [(0, 0), (3, 2), (-1, 4)])
def test_wilson_interval_refuses_impossible_counts(successes: int, trials: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, trials)


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "<30"),
        (29, "<30"),
        (30, "30-44"),
        (44, "30-44"),
        (45, "45-59"),
        (59, "45-59"),
        (60, "60-74"),
        (74, "60-74"),
        (75, "75+"),
        (130, "75+"),
        (None, "unknown"),
    ],
)
def test_age_bands_at_their_edges(age: int | None, band: str) -> None:
    assert age_band(age) == band


def test_age_bands_are_listed_in_age_order_with_unknown_last() -> None:
    assert AGE_BANDS == ("<30", "30-44", "45-59", "60-74", "75+", "unknown")


@pytest.mark.parametrize(
    ("body_site", "key"),
    [
        ("back", "back"),
        (" Back ", "back"),
        ("Lower Extremity", "lower extremity"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_site_keys_merge_spellings_and_name_missing_sites_unknown(body_site: str | None, key: str) -> None:
    assert site_key(body_site) == key


def test_confusion_sensitivity_and_specificity_with_intervals() -> None:
    confusion = Confusion()
    confusion.add(model_urgent=True, malignant=True, count=8)
    confusion.add(model_urgent=False, malignant=True, count=2)
    confusion.add(model_urgent=False, malignant=False, count=2)
    confusion.add(model_urgent=True, malignant=False, count=1)
    assert confusion.confirmed == 13
    sensitivity = confusion.sensitivity()
    assert sensitivity is not None
    assert (sensitivity.value, sensitivity.positives) == (0.8, 10)
    assert (sensitivity.ci_low, sensitivity.ci_high) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    specificity = confusion.specificity()
    assert specificity is not None
    assert (specificity.value, specificity.negatives) == (pytest.approx(2 / 3), 3)
    assert (specificity.ci_low, specificity.ci_high) == pytest.approx((0.207660, 0.938508), abs=1e-6)


def test_confusion_without_a_denominator_is_null() -> None:
    confusion = Confusion()
    confusion.add(model_urgent=True, malignant=True, count=1)
    assert confusion.specificity() is None
    assert Confusion().sensitivity() is None


def _cell(
    model: tuple[str, str, str] = MODEL_A,
    count: int = 1,
    *,
    status: str = "done",
    reviewed: bool = False,
    agrees_with_model: bool | None = None,
    confirmed_malignant: bool | None = None,
    model_urgent: bool = False,
    body_site: str | None = None,
    age: int | None = None,
    last_completed_at: datetime = T0,
) -> ReportCell:
    return ReportCell(
        model=model,
        status=status,
        reviewed=reviewed,
        agrees_with_model=agrees_with_model,
        confirmed_malignant=confirmed_malignant,
        model_urgent=model_urgent,
        body_site=body_site,
        age=age,
        count=count,
        last_completed_at=last_completed_at,
    )


def test_model_performance_folds_cells_into_counts_and_rates() -> None:
    cells = [
        _cell(count=3),  # unreviewed results
        _cell(status="rejected", count=2),
        _cell(reviewed=True, agrees_with_model=True, count=4),
        _cell(reviewed=True, agrees_with_model=False, count=1),
        _cell(
            reviewed=True,
            agrees_with_model=True,
            confirmed_malignant=True,
            model_urgent=True,
            body_site="Back",
            age=50,
        ),
        _cell(reviewed=True, agrees_with_model=False, confirmed_malignant=True, body_site="back", age=80),
        _cell(reviewed=True, agrees_with_model=True, confirmed_malignant=False, age=20, count=2),
    ]
    [performance] = model_performance(cells)
    assert performance.model.version == "1.0.0"
    assert (performance.results, performance.rejected) == (12, 2)
    assert (performance.reviewed, performance.overridden) == (9, 2)
    assert performance.override_rate == pytest.approx(2 / 9)
    assert performance.confirmed == 4
    assert performance.malignant_sensitivity is not None
    assert (performance.malignant_sensitivity.value, performance.malignant_sensitivity.positives) == (0.5, 2)
    assert performance.specificity is not None
    assert (performance.specificity.value, performance.specificity.negatives) == (1.0, 2)
    assert [(s.key, s.confirmed) for s in performance.by_site] == [("back", 2), ("unknown", 2)]
    assert [(b.key, b.confirmed) for b in performance.by_age_band] == [("<30", 2), ("45-59", 1), ("75+", 1)]


def test_a_model_without_reviews_has_null_rates() -> None:
    [performance] = model_performance([_cell(count=5)])
    assert performance.override_rate is None
    assert performance.malignant_sensitivity is None
    assert performance.specificity is None
    assert (performance.by_site, performance.by_age_band) == ([], [])


def test_models_are_kept_apart_and_the_most_recently_used_comes_first() -> None:
    cells = [
        _cell(MODEL_A, count=2, last_completed_at=T0),
        _cell(MODEL_B, count=1, last_completed_at=T0 + timedelta(days=1)),
        _cell(MODEL_A, status="rejected", last_completed_at=T0 - timedelta(days=1)),
    ]
    performances = model_performance(cells)
    assert [(p.model.version, p.results, p.rejected) for p in performances] == [
        ("2.0.0", 1, 0),
        ("1.0.0", 2, 1),
    ]


def test_week_periods_start_on_monday() -> None:
    assert period_start(date(2026, 11, 8), MonitoringBucket.week) == date(2026, 11, 2)  # a Sunday
    assert period_start(date(2026, 11, 2), MonitoringBucket.week) == date(2026, 11, 2)
    assert period_start(date(2026, 11, 8), MonitoringBucket.day) == date(2026, 11, 8)


def test_ood_rejection_fills_every_period_of_the_window() -> None:
    window = MonitoringWindow(since=T0 + timedelta(days=2), until=datetime(2026, 11, 17, tzinfo=UTC))
    days = [
        DayCount(day=date(2026, 11, 4), jobs=4, rejected=1),
        DayCount(day=date(2026, 11, 8), jobs=6, rejected=1),
        DayCount(day=date(2026, 11, 16), jobs=5, rejected=5),
    ]
    weeks = ood_rejection(days, window, MonitoringBucket.week)
    # The window starts on a Wednesday and ends at midnight before Tuesday 17: three weeks touched.
    assert [(p.period_start, p.jobs, p.rejected, p.rate) for p in weeks] == [
        (date(2026, 11, 2), 10, 2, 0.2),
        (date(2026, 11, 9), 0, 0, None),
        (date(2026, 11, 16), 5, 5, 1.0),
    ]
    by_day = ood_rejection(days, window, MonitoringBucket.day)
    assert [p.period_start for p in by_day] == [date(2026, 11, 4) + timedelta(days=i) for i in range(13)]
    assert by_day[0].rate == 0.25
    assert sum(p.jobs for p in by_day) == 15


def test_the_window_defaults_to_the_last_ninety_days() -> None:
    window = monitoring_window(None, None, T0)
    assert (window.since, window.until) == (T0 - timedelta(days=90), T0)
    until = datetime(2026, 1, 1)  # naive: taken as UTC
    window = monitoring_window(None, until, T0)
    assert (window.since, window.until) == (
        until.replace(tzinfo=UTC) - timedelta(days=90),
        until.replace(tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (T0, T0),
        (T0, T0 - timedelta(seconds=1)),
        (T0 - timedelta(days=732), T0),
    ],
)
def test_an_empty_reversed_or_overlong_window_is_refused(since: datetime, until: datetime) -> None:
    with pytest.raises(ValueError):
        monitoring_window(since, until, T0)
