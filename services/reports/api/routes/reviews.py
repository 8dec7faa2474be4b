"""Issue 12: clinicians' reviews and sign-off, and the tenant's next steps per triage level."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, status

from contracts.reviews import NextSteps, NextStepsUpdate, ReviewCreate, ReviewList, ReviewView
from services.common.request_id import current_request_id
from services.reports.api.deps import (
    ActorDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    internal_router,
    wake_dispatcher,
)
from services.reports.db.reviews import (
    create_review,
    list_reviews,
    put_next_steps,
    review_view,
    tenant_next_steps,
)

router = internal_router("reviews")

JobId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/internal/v1/jobs/{job_id}/reviews", status_code=status.HTTP_201_CREATED)
def post_review(
    job_id: JobId,
    body: ReviewCreate,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    request: Request,
) -> ReviewView:
    """A clinician's review of a done job: the next version (never an overwrite), audited, the
    report's review state updated and, where the tenant has a FHIR endpoint, the final bundle
    pushed. 403 `auth.forbidden` without a clinician acting; 404 `job.not_found`; 409
    `review.not_reviewable` / `review.conflict`; 422 `review.unknown_class`,
    `review.malignancy_unknown`, `review.malignancy_conflict`."""
    review, report = create_review(
        session,
        tenant,
        job_id,
        body,
        actor,
        request_id=current_request_id(),
        delivery_window=settings.delivery_window,
    )
    wake_dispatcher(request, session)
    return review_view(review, report)


@router.get("/internal/v1/jobs/{job_id}/reviews")
def get_reviews(job_id: JobId, tenant: TenantDep, session: SessionDep) -> ReviewList:
    """The job's reviews, version 1 first (404 `job.not_found` for another tenant's job)."""
    reviews, report = list_reviews(session, tenant, job_id)
    if report is None:
        return ReviewList(items=[])
    return ReviewList(items=[review_view(review, report) for review in reviews])


@router.get("/internal/v1/next-steps")
def get_next_steps(tenant: TenantDep, session: SessionDep) -> NextSteps:
    """The tenant's next step per triage level (its own, or the service's defaults)."""
    return tenant_next_steps(session, tenant)


@router.put("/internal/v1/next-steps")
def set_next_steps(
    body: NextStepsUpdate, tenant: TenantDep, session: SessionDep, actor: ActorDep
) -> NextSteps:
    """Set the tenant's own next steps (an admin's act, audited `next_steps.update`)."""
    return put_next_steps(session, tenant, body, actor, current_request_id())
