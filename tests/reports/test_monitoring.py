"""`GET /internal/v1/monitoring` on SQLite and PostgreSQL: jobs, reports and reviews are written
directly, and every figure is checked against values counted by hand (the intervals against
scipy's Wilson intervals, see test_monitoring_stats.py)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.users import ACTOR_HEADER, Actor, Role
from services.reports.db.models import AuditEvent, Job, Report, Review, Tenant
from services.reports.db.tenants import get_or_create_user
from tests.reports.factories import PNG_BYTES, tenant_headers

MONITORING = "/internal/v1/monitoring"
MODEL_A = ("skin-triage", "1.0.0", "a" * 64)
MODEL_B = ("skin-triage", "2.0.0", "b" * 64)
# The same name and version as A but other weights: a different model to monitor.
MODEL_A_REBUILT = ("skin-triage", "1.0.0", "c" * 64)
SINCE = datetime(2026, 10, 1, tzinfo=UTC)  # a Thursday
UNTIL = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
IN_WINDOW = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)


@dataclass
class Case:
    """One finished job and its report; `reviews` are (agrees_with_model, confirmed_malignant) per
    version, oldest first."""

    status: str = "done"
    triage_level: str | None = "urgent"
    body_site: str | None = "back"
    age: int | None = 33
    reviews: list[tuple[bool, bool | None]] = field(default_factory=list)
    model: tuple[str, str, str] = MODEL_A
    completed_at: datetime = IN_WINDOW
    created_at: datetime | None = None


def _clinician(db: Session, tenant_id: str) -> str:
    user, _ = get_or_create_user(db, db.get_one(Tenant, tenant_id), "Dr Monitor", Role.clinician)
    db.commit()
    return user.id


def _add(
    db: Session, tenant_id: str, case: Case, clinician_id: str | None = None, *, with_report: bool = True
) -> str:
    """Write the job, its report and its reviews as the services would have."""
    job_id = f"job_{uuid.uuid4().hex}"
    created_at = case.created_at or case.completed_at - timedelta(minutes=1)
    db.add(
        Job(
            id=job_id,
            tenant_id=tenant_id,
            status=case.status,
            body_site=case.body_site,
            age=case.age,
            image=PNG_BYTES,
            media_type="image/png",
            width=4,
            height=3,
            image_sha256=hashlib.sha256(PNG_BYTES).hexdigest(),
            created_at=created_at,
        )
    )
    db.flush()
    if not with_report:
        db.commit()
        return job_id
    name, version, sha256 = case.model
    report = Report(
        job_id=job_id,
        tenant_id=tenant_id,
        status=case.status,
        triage_level=case.triage_level if case.status == "done" else None,
        model_name=name,
        model_version=version,
        model_sha256=sha256,
        timings={},
        completed_at=case.completed_at,
    )
    db.add(report)
    for version_number, (agrees, malignant) in enumerate(case.reviews, start=1):
        assert clinician_id is not None
        db.add(
            Review(
                id=f"rev_{uuid.uuid4().hex}",
                tenant_id=tenant_id,
                job_id=job_id,
                version=version_number,
                user_id=clinician_id,
                user_name="Dr Monitor",
                triage_level=case.triage_level or "routine",
                agrees_with_model=agrees,
                confirmed_malignant=malignant,
                confirmed_basis=None if malignant is None else "histopathology",
                created_at=case.completed_at + timedelta(hours=version_number),
            )
        )
        report.review_version = version_number
        # Monitoring tells only unreviewed from reviewed (the latest review says the rest).
        report.review_state = "signed_off"
    db.commit()
    return job_id


def _add_job(db: Session, tenant_id: str, status: str, created_at: datetime) -> None:
    """A job without a report (the OOD figures read the jobs table only)."""
    _add(
        db, tenant_id, Case(status=status, created_at=created_at, completed_at=created_at), with_report=False
    )


def _monitoring(client: TestClient, tenant_id: str, **params: str) -> dict[str, Any]:
    response = client.get(MONITORING, params={**WINDOW, **params}, headers=tenant_headers(tenant_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _model(body: dict[str, Any], model: tuple[str, str, str]) -> dict[str, Any]:
    name, version, sha256 = model
    [found] = [
        m for m in body["models"] if m["model"] == {"name": name, "version": version, "sha256": sha256}
    ]
    return found


def _rate(value: float, ci_low: float, ci_high: float, count: int, denominator: str) -> dict[str, Any]:
    return {
        "value": pytest.approx(value),
        "ci_low": pytest.approx(ci_low, abs=1e-6),
        "ci_high": pytest.approx(ci_high, abs=1e-6),
        denominator: count,
    }


def _sens(value: float, low: float, high: float, positives: int) -> dict[str, Any]:
    return _rate(value, low, high, positives, "positives")


def _spec(value: float, low: float, high: float, negatives: int) -> dict[str, Any]:
    return _rate(value, low, high, negatives, "negatives")


# Model A's month: 13 results, 2 rejected; 11 reviewed, 4 overridden by their latest review; 7
# confirmed diagnoses: TP #1 #2 #7, FN #3, FP #4, TN #5 #6.
CASES_A = [
    Case(triage_level="urgent", body_site="back", age=50, reviews=[(True, True)]),  # 1 TP
    Case(triage_level="urgent", body_site="back", age=62, reviews=[(True, True)]),  # 2 TP
    Case(triage_level="routine", body_site="face", age=80, reviews=[(False, True)]),  # 3 FN, overridden
    Case(triage_level="urgent", body_site="back", age=25, reviews=[(False, False)]),  # 4 FP, overridden
    Case(triage_level="monitor", body_site="face", age=40, reviews=[(True, False)]),  # 5 TN
    Case(triage_level="routine", body_site=None, age=None, reviews=[(True, False)]),  # 6 TN
    Case(triage_level="urgent", body_site=" Back", age=47, reviews=[(True, True)]),  # 7 TP
    Case(triage_level="urgent", reviews=[(True, None)]),  # 8 signed off
    Case(triage_level="routine", body_site="face", reviews=[(False, None)]),  # 9 overridden
    Case(triage_level="urgent"),  # 10 unreviewed
    Case(triage_level="routine"),  # 11 unreviewed
    Case(status="rejected"),  # 12
    Case(status="rejected"),  # 13
    # 14: the first review overrode and confirmed malignancy; the latest agrees and confirms nothing.
    Case(triage_level="routine", body_site="face", age=70, reviews=[(False, True), (True, None)]),
    # 15: the first review agreed; the latest overrides.
    Case(triage_level="urgent", body_site="face", age=70, reviews=[(True, None), (False, None)]),
]


@pytest.fixture
def clinician(db: Session, tenant: str) -> str:
    return _clinician(db, tenant)


def test_a_models_counts_and_override_rate(
    client: TestClient, db: Session, tenant: str, clinician: str
) -> None:
    for case in CASES_A:
        _add(db, tenant, case, clinician)
    model = _model(_monitoring(client, tenant), MODEL_A)
    assert (model["results"], model["rejected"]) == (13, 2)
    assert (model["reviewed"], model["overridden"]) == (11, 4)
    assert model["override_rate"] == pytest.approx(4 / 11)
    assert model["confirmed"] == 7


def test_sensitivity_and_specificity_against_the_latest_confirmed_diagnoses(
    client: TestClient, db: Session, tenant: str, clinician: str
) -> None:
    for case in CASES_A:
        _add(db, tenant, case, clinician)
    model = _model(_monitoring(client, tenant), MODEL_A)
    # TP 3, FN 1 (#14's malignancy was withdrawn by its latest review, so it does not count).
    assert model["malignant_sensitivity"] == _sens(0.75, 0.300642, 0.954413, 4)
    # TN 2, FP 1.
    assert model["specificity"] == _spec(2 / 3, 0.207660, 0.938508, 3)


def test_sensitivity_and_specificity_per_body_site(
    client: TestClient, db: Session, tenant: str, clinician: str
) -> None:
    for case in CASES_A:
        _add(db, tenant, case, clinician)
    by_site = _model(_monitoring(client, tenant), MODEL_A)["by_site"]
    assert by_site == [
        # #1 #2 #7 (" Back") TP, #4 FP.
        {
            "key": "back",
            "confirmed": 4,
            "malignant_sensitivity": _sens(1.0, 0.438503, 1.0, 3),
            "specificity": _spec(0.0, 0.0, 0.793451, 1),
        },
        # #3 FN, #5 TN.
        {
            "key": "face",
            "confirmed": 2,
            "malignant_sensitivity": _sens(0.0, 0.0, 0.793451, 1),
            "specificity": _spec(1.0, 0.206549, 1.0, 1),
        },
        # #6 TN, no site given.
        {
            "key": "unknown",
            "confirmed": 1,
            "malignant_sensitivity": None,
            "specificity": _spec(1.0, 0.206549, 1.0, 1),
        },
    ]


def test_sensitivity_and_specificity_per_age_band(
    client: TestClient, db: Session, tenant: str, clinician: str
) -> None:
    for case in CASES_A:
        _add(db, tenant, case, clinician)
    by_age = _model(_monitoring(client, tenant), MODEL_A)["by_age_band"]
    one_negative_wrong = _spec(0.0, 0.0, 0.793451, 1)
    one_negative_right = _spec(1.0, 0.206549, 1.0, 1)
    assert by_age == [
        {"key": "<30", "confirmed": 1, "malignant_sensitivity": None, "specificity": one_negative_wrong},  # 4
        {
            "key": "30-44",
            "confirmed": 1,
            "malignant_sensitivity": None,
            "specificity": one_negative_right,
        },  # 5
        {
            "key": "45-59",
            "confirmed": 2,
            "malignant_sensitivity": _sens(1.0, 0.34238, 1.0, 2),
            "specificity": None,
        },
        {
            "key": "60-74",
            "confirmed": 1,
            "malignant_sensitivity": _sens(1.0, 0.206549, 1.0, 1),
            "specificity": None,
        },
        {
            "key": "75+",
            "confirmed": 1,
            "malignant_sensitivity": _sens(0.0, 0.0, 0.793451, 1),
            "specificity": None,
        },
        {
            "key": "unknown",
            "confirmed": 1,
            "malignant_sensitivity": None,
            "specificity": one_negative_right,
        },  # 6
    ]


def test_model_versions_are_kept_apart_newest_first(
    client: TestClient, db: Session, tenant: str, clinician: str
) -> None:
    later = IN_WINDOW + timedelta(days=5)
    _add(db, tenant, Case(model=MODEL_A, reviews=[(True, True)]), clinician)
    _add(db, tenant, Case(model=MODEL_A, status="rejected"))
    _add(db, tenant, Case(model=MODEL_B, completed_at=later, reviews=[(False, False)]), clinician)
    _add(db, tenant, Case(model=MODEL_B, completed_at=later, triage_level="routine"))
    _add(
        db,
        tenant,
        Case(model=MODEL_A_REBUILT, completed_at=later - timedelta(days=1), triage_level="monitor"),
    )
    body = _monitoring(client, tenant)
    assert [m["model"]["sha256"] for m in body["models"]] == [MODEL_B[2], MODEL_A_REBUILT[2], MODEL_A[2]]
    a, b, rebuilt = _model(body, MODEL_A), _model(body, MODEL_B), _model(body, MODEL_A_REBUILT)
    assert [(m["results"], m["rejected"], m["reviewed"], m["overridden"]) for m in (a, b, rebuilt)] == [
        (1, 1, 1, 0),
        (2, 0, 1, 1),
        (1, 0, 0, 0),
    ]
    assert a["malignant_sensitivity"] == _sens(1.0, 0.206549, 1.0, 1)
    assert a["specificity"] is None
    assert b["malignant_sensitivity"] is None
    assert b["specificity"] == _spec(0.0, 0.0, 0.793451, 1)
    assert (rebuilt["override_rate"], rebuilt["malignant_sensitivity"], rebuilt["by_site"]) == (
        None,
        None,
        [],
    )


def test_only_reports_completed_in_since_until_count(client: TestClient, db: Session, tenant: str) -> None:
    micro = timedelta(microseconds=1)
    for completed_at in (SINCE - micro, SINCE, UNTIL - micro, UNTIL, UNTIL + timedelta(days=3)):
        _add(db, tenant, Case(completed_at=completed_at, created_at=SINCE - timedelta(days=1)))
    model = _model(_monitoring(client, tenant), MODEL_A)
    assert model["results"] == 2  # at `since` (inclusive) and just before `until` (exclusive)


def test_another_tenants_rows_are_never_counted(
    client: TestClient, db: Session, tenant: str, other_tenant: str, clinician: str
) -> None:
    _add(db, tenant, Case(reviews=[(True, True)]), clinician)
    _add(db, tenant, Case(status="rejected"))
    theirs = _clinician(db, other_tenant)
    for case in (Case(reviews=[(False, False)]), Case(status="rejected"), Case(model=MODEL_B)):
        _add(db, other_tenant, case, theirs)
    ours = _monitoring(client, tenant, bucket="day")
    assert [m["model"]["version"] for m in ours["models"]] == ["1.0.0"]
    model = ours["models"][0]
    assert (model["results"], model["rejected"], model["reviewed"], model["overridden"]) == (1, 1, 1, 0)
    assert model["specificity"] is None
    assert sum(p["jobs"] for p in ours["ood_rejection"]) == 2
    assert sum(p["rejected"] for p in ours["ood_rejection"]) == 1
    other = _monitoring(client, other_tenant)
    assert sum(m["results"] for m in other["models"]) == 2
    assert sum(p["jobs"] for p in other["ood_rejection"]) == 3


def _ood_jobs(db: Session, tenant: str) -> None:
    """Jobs created in October 2026: per day, (done, rejected); failed and queued jobs never ended
    as done or rejected, and jobs outside the window are not counted."""
    plan = {
        datetime(2026, 10, 1, 0, 0, tzinfo=UTC): ("done", "done", "rejected"),  # Thursday
        datetime(2026, 10, 4, 23, 59, tzinfo=UTC): ("rejected",),  # Sunday, same ISO week
        datetime(2026, 10, 5, 0, 1, tzinfo=UTC): ("done", "failed", "queued"),  # Monday
        datetime(2026, 10, 20, 8, 0, tzinfo=UTC): ("rejected", "rejected", "done", "done"),
        datetime(2026, 10, 31, 23, 59, tzinfo=UTC): ("done",),  # the window's last minute
        datetime(2026, 9, 30, 23, 59, tzinfo=UTC): ("rejected",),  # before `since`
        datetime(2026, 11, 1, 0, 0, tzinfo=UTC): ("rejected",),  # at `until`: excluded
    }
    for created_at, statuses in plan.items():
        for status in statuses:
            _add_job(db, tenant, status, created_at)


def test_ood_rejection_per_iso_week(client: TestClient, db: Session, tenant: str) -> None:
    _ood_jobs(db, tenant)
    weeks = _monitoring(client, tenant, bucket="week")["ood_rejection"]
    # Every week from the Monday before `since` to the week of the window's last day, oldest first.
    assert [w["period_start"] for w in weeks] == [
        "2026-09-28",
        "2026-10-05",
        "2026-10-12",
        "2026-10-19",
        "2026-10-26",
    ]
    assert [(w["jobs"], w["rejected"]) for w in weeks] == [(4, 2), (1, 0), (0, 0), (4, 2), (1, 0)]
    assert [w["rate"] for w in weeks] == [0.5, 0.0, None, 0.5, 0.0]


def test_ood_rejection_per_day(client: TestClient, db: Session, tenant: str) -> None:
    _ood_jobs(db, tenant)
    body = _monitoring(client, tenant, bucket="day")
    assert body["bucket"] == "day"
    days = {date.fromisoformat(d["period_start"]): d for d in body["ood_rejection"]}
    assert sorted(days) == [date(2026, 10, 1) + timedelta(days=i) for i in range(31)]
    assert (days[date(2026, 10, 1)]["jobs"], days[date(2026, 10, 1)]["rejected"]) == (3, 1)
    assert days[date(2026, 10, 1)]["rate"] == pytest.approx(1 / 3)
    assert (days[date(2026, 10, 4)]["jobs"], days[date(2026, 10, 4)]["rate"]) == (1, 1.0)
    assert (days[date(2026, 10, 5)]["jobs"], days[date(2026, 10, 5)]["rate"]) == (1, 0.0)
    assert (days[date(2026, 10, 20)]["jobs"], days[date(2026, 10, 20)]["rate"]) == (4, 0.5)
    assert (days[date(2026, 10, 31)]["jobs"], days[date(2026, 10, 31)]["rate"]) == (1, 0.0)
    assert sum(d["jobs"] for d in days.values()) == 10
    assert days[date(2026, 10, 2)] == {"period_start": "2026-10-02", "jobs": 0, "rejected": 0, "rate": None}


def test_the_window_is_echoed_and_defaults_to_the_last_ninety_days(client: TestClient, tenant: str) -> None:
    response = client.get(MONITORING, headers=tenant_headers(tenant))
    assert response.status_code == 200
    body = response.json()
    since, until = datetime.fromisoformat(body["since"]), datetime.fromisoformat(body["until"])
    assert until - since == timedelta(days=90)
    assert abs(datetime.now(UTC) - until) < timedelta(minutes=1)
    assert (body["bucket"], body["models"]) == ("week", [])
    assert 13 <= len(body["ood_rejection"]) <= 14  # the weeks 90 days touch


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-11-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
        {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
        {"since": "2023-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
        {"bucket": "month"},
        {"since": "1700000000"},
    ],
)
def test_a_bad_window_or_bucket_is_request_invalid(
    client: TestClient, tenant: str, params: dict[str, str]
) -> None:
    response = client.get(MONITORING, params=params, headers=tenant_headers(tenant))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


def test_a_users_read_is_audited(client: TestClient, db: Session, tenant: str) -> None:
    actor = Actor(user_id="usr-admin", user_name="Ada Admin", role=Role.admin, key_id="key-1")
    headers = {**tenant_headers(tenant), ACTOR_HEADER: actor.to_header(), "X-Request-ID": "req-monitoring-1"}
    response = client.get(MONITORING, params={**WINDOW, "bucket": "day"}, headers=headers)
    assert response.status_code == 200
    [event] = db.scalars(select(AuditEvent)).all()
    assert (event.tenant_id, event.action, event.resource_type, event.resource_id) == (
        tenant,
        "monitoring.read",
        "monitoring",
        None,
    )
    assert (event.user_id, event.user_name, event.role, event.key_id) == (
        "usr-admin",
        "Ada Admin",
        "admin",
        "key-1",
    )
    assert event.request_id == "req-monitoring-1"
    assert event.details == {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), "bucket": "day"}


def test_the_fleets_own_read_is_not_audited(client: TestClient, db: Session, tenant: str) -> None:
    assert client.get(MONITORING, params=WINDOW, headers=tenant_headers(tenant)).status_code == 200
    assert db.scalars(select(AuditEvent)).all() == []
