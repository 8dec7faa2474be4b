"""Clinicians' reviews (versioned, never overwritten), the report's denormalised review state, and
the tenants' next steps (issue 12)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import cast

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.bundle import TriageLevel
from contracts.reviews import (
    DEFAULT_NEXT_STEPS,
    ConfirmedDiagnosisView,
    DiagnosisBasis,
    DiagnosisView,
    NextSteps,
    NextStepsUpdate,
    ReviewCreate,
    Reviewer,
    ReviewView,
)
from contracts.users import Actor
from services.reports.db.audit import record_audit
from services.reports.db.deliveries import plan_review_pushed
from services.reports.db.jobs import get_job
from services.reports.db.models import Report, Review, Tenant, User
from services.reports.db.types import utc_now
from services.reports.domain.reviews import (
    ReviewConflictError,
    ReviewedResult,
    ReviewForbiddenError,
    check_review,
    require_admin_or_fleet,
    require_clinician,
)

# Session.info key of the service's next steps (REPORTS_NEXT_STEP_*), set on the app's session
# factory, so every view made with one of its sessions (routes, the dispatcher's documents) uses
# them; a session without it (tests arranging rows) uses the contract's defaults.
NEXT_STEP_DEFAULTS_INFO = "skintriage.next_step_defaults"


def session_next_step_defaults(session: Session) -> NextStepsUpdate:
    """The service's next steps for a session of the app (the contract's defaults otherwise)."""
    configured = session.info.get(NEXT_STEP_DEFAULTS_INFO)
    return configured if isinstance(configured, NextStepsUpdate) else DEFAULT_NEXT_STEPS


def tenant_next_steps(session: Session, tenant_id: str) -> NextSteps:
    """The tenant's own next steps, or the service's (a list looks them up once per page:
    `api.views.job_views`)."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is not None and tenant.next_steps:
        return NextSteps(**tenant.next_steps, source="tenant")
    return NextSteps(**session_next_step_defaults(session).model_dump(), source="default")


def put_next_steps(
    session: Session, tenant_id: str, body: NextStepsUpdate, actor: Actor | None, request_id: str | None
) -> NextSteps:
    """Set the tenant's next steps (audited `next_steps.update` in the same transaction)."""
    require_admin_or_fleet(actor)
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None  # TenantDep checked it exists
    before = tenant.next_steps
    tenant.next_steps = body.model_dump()
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="next_steps.update",
        resource_type="tenant",
        resource_id=tenant_id,
        request_id=request_id,
        details={"before": before, "after": tenant.next_steps},
    )
    session.commit()
    return NextSteps(**body.model_dump(), source="tenant")


def _reviewed_result(report: Report) -> ReviewedResult:
    return ReviewedResult(
        job_id=report.job_id,
        status=report.status,
        model_triage_level=cast(TriageLevel | None, report.triage_level),
        class_codes=frozenset(report.probabilities or {}),
        malignant_classes=frozenset(report.malignant_classes or ()),
        malignancy_known=bool(report.malignant_classes),
    )


def _reviewer_user(session: Session, tenant_id: str, actor: Actor) -> User:
    """The clinician's user row: the gateway names a user of the caller's tenant, but a user of
    another tenant, a disabled one or an unknown id must not sign."""
    user = session.get(User, actor.user_id)
    if user is None or user.tenant_id != tenant_id or user.disabled_at is not None:
        raise ReviewForbiddenError(
            "the acting user may not review in this tenant", {"user_id": actor.user_id}
        )
    return user


def create_review(
    session: Session,
    tenant_id: str,
    job_id: str,
    body: ReviewCreate,
    actor: Actor | None,
    *,
    request_id: str | None,
    delivery_window: timedelta,
) -> tuple[Review, Report]:
    """Add the next version of the job's review, update the report's review state, audit it
    (`review.create`) and plan the FHIR push of the now-final bundle, all in one transaction.

    The report row is locked first (PostgreSQL; SQLite has one writer at a time), so concurrent
    reviews of one job take turns; a race the lock cannot stop still ends at the unique
    (job_id, version) constraint, answered as 409 `review.conflict`, never as two version 1s."""
    clinician = require_clinician(actor)
    job = get_job(session, tenant_id, job_id)
    report = session.scalar(
        select(Report).where(Report.job_id == job.id, Report.tenant_id == tenant_id).with_for_update()
    )
    if report is not None:
        # The lock's read may be served from the identity map: see what the lock holder committed.
        session.refresh(report)
    checked = check_review(
        body,
        _reviewed_result(report)
        if report is not None
        else ReviewedResult(job_id, job.status, None, frozenset(), frozenset(), False),
    )
    assert report is not None  # check_review refuses a job without a done report
    user = _reviewer_user(session, tenant_id, clinician)
    latest = session.scalar(select(func.max(Review.version)).where(Review.job_id == job.id)) or 0
    if body.expected_version is not None and body.expected_version != latest:
        raise ReviewConflictError(
            "the review changed since you saw it",
            {"job_id": job.id, "expected_version": body.expected_version, "latest_version": latest},
        )
    now = utc_now()
    working, confirmed = body.working_diagnosis, body.confirmed_diagnosis
    review = Review(
        id=f"rev_{uuid.uuid4().hex}",
        tenant_id=tenant_id,
        job_id=job.id,
        version=latest + 1,
        user_id=user.id,
        user_name=user.name,
        triage_level=body.triage_level,
        agrees_with_model=checked.agrees_with_model,
        working_diagnosis_code=working.code if working else None,
        working_diagnosis_text=working.text if working else None,
        note=body.note,
        confirmed_diagnosis_code=confirmed.code if confirmed else None,
        confirmed_diagnosis_text=confirmed.text if confirmed else None,
        confirmed_basis=confirmed.basis.value if confirmed else None,
        confirmed_malignant=checked.confirmed_malignant,
        created_at=now,
    )
    session.add(review)
    try:
        # The version's insert first: a concurrent review that took this version fails here, at
        # the unique (job_id, version), before anything else is written.
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ReviewConflictError(
            "another review of this job was written at the same moment", {"job_id": job.id}
        ) from exc
    report.review_state = checked.state.value
    report.review_version = review.version
    report.reviewed_at = now
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=clinician,
        action="review.create",
        resource_type="job",
        resource_id=job.id,
        request_id=request_id,
        details={
            "review_id": review.id,
            "version": review.version,
            "triage_level": body.triage_level,
            "model_triage_level": checked.model_triage_level,
            "agrees_with_model": checked.agrees_with_model,
            "review_state": checked.state.value,
        },
    )
    plan_review_pushed(session, job, review.version, now, delivery_window)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ReviewConflictError(
            "another review of this job was written at the same moment", {"job_id": job.id}
        ) from exc
    return review, report


def list_reviews(session: Session, tenant_id: str, job_id: str) -> tuple[list[Review], Report | None]:
    """The job's reviews, version 1 first, and its report (for the classes' display names)."""
    job = get_job(session, tenant_id, job_id)
    reviews = list(
        session.scalars(
            select(Review)
            .where(Review.job_id == job.id, Review.tenant_id == tenant_id)
            .order_by(Review.version)
        )
    )
    return reviews, job.report


def latest_reviews(session: Session, reports: Iterable[Report]) -> dict[str, Review]:
    """job id -> the latest review, for every reviewed report given, in ONE query (a page of the
    worklist must not cost a query per row)."""
    reviewed = [report.job_id for report in reports if report.review_version is not None]
    if not reviewed:
        return {}
    # Only each job's latest version (the report names it), never its earlier ones.
    latest = and_(Report.job_id == Review.job_id, Report.review_version == Review.version)
    rows = session.scalars(select(Review).join(Report, latest).where(Review.job_id.in_(reviewed)))
    return {row.job_id: row for row in rows}


def latest_review(session: Session, report: Report) -> Review | None:
    """The report's latest review, if any."""
    if report.review_version is None:
        return None
    return session.scalar(
        select(Review).where(Review.job_id == report.job_id, Review.version == report.review_version)
    )


def review_view(review: Review, report: Report) -> ReviewView:
    """A stored review as the API shows it: class codes with the model's display names, and the
    model's level from the report (which is never rewritten once done)."""
    names = report.class_display_names or {}
    working = None
    if review.working_diagnosis_code is not None or review.working_diagnosis_text is not None:
        code = review.working_diagnosis_code
        working = DiagnosisView(
            code=code,
            text=review.working_diagnosis_text,
            display_name=names.get(code, code) if code else None,
        )
    confirmed = None
    if review.confirmed_basis is not None:
        code = review.confirmed_diagnosis_code
        confirmed = ConfirmedDiagnosisView(
            code=code,
            text=review.confirmed_diagnosis_text,
            display_name=names.get(code, code) if code else None,
            basis=DiagnosisBasis(review.confirmed_basis),
            malignant=bool(review.confirmed_malignant),
        )
    return ReviewView(
        review_id=review.id,
        job_id=review.job_id,
        version=review.version,
        reviewer=Reviewer(user_id=review.user_id, name=review.user_name),
        triage_level=cast(TriageLevel, review.triage_level),
        model_triage_level=cast(TriageLevel, report.triage_level or review.triage_level),
        agrees_with_model=review.agrees_with_model,
        working_diagnosis=working,
        note=review.note,
        confirmed_diagnosis=confirmed,
        created_at=review.created_at,
    )
