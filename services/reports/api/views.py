"""Database rows -> contract models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from sqlalchemy.orm import Session, object_session

from contracts.bundle import TriageLevel
from contracts.jobs import BatchCounts, DicomRef, ImageMetadata, JobStatus, Sex
from contracts.ood import OodScoreResponse
from contracts.records import BatchView
from contracts.reports import JobView, ModelRef, Prediction, ReportView
from contracts.reviews import DEFAULT_NEXT_STEPS, NextStepsUpdate, ReviewState
from contracts.users import UserRef
from services.reports.db.models import Batch, Job, Report, Review
from services.reports.db.reviews import latest_review, latest_reviews, review_view, tenant_next_steps
from services.reports.domain.reviews import next_step


def report_view(
    report: Report, reviews: Mapping[str, Review] | None = None, steps: NextStepsUpdate | None = None
) -> ReportView:
    """A stored report as the API shows it; a rejected one has no prediction or triage level.
    `reviews` (job id -> latest review, from `latest_reviews`) and `steps` (the tenant's next
    steps) spare a list a query per row; without them they are looked up."""
    session = object_session(report)
    review: Review | None = None
    if reviews is not None:
        review = reviews.get(report.job_id)
    elif session is not None:
        review = latest_review(session, report)
    if steps is None:
        steps = tenant_next_steps(session, report.tenant_id) if session is not None else DEFAULT_NEXT_STEPS
    status = JobStatus(report.status)
    prediction = None
    if status == JobStatus.done and report.top_class is not None:
        prediction = Prediction(
            probabilities=report.probabilities or {},
            top_class=report.top_class,
            malignant_probability=report.malignant_probability or 0.0,
            triage_level=report.triage_level or "",
            triage_threshold=report.triage_threshold or 0.0,
            conformal_set=report.conformal_set or [],
            conformal_coverage=report.conformal_coverage or 0.0,
            metadata_used=report.metadata_used,
            class_display_names=report.class_display_names or {},
            malignant_classes=report.malignant_classes or [],
        )
    model_level = cast(TriageLevel | None, report.triage_level if prediction else None)
    reviewed_level = cast(TriageLevel | None, review.triage_level if review is not None else None)
    return ReportView(
        job_id=report.job_id,
        status=status,
        triage_level=model_level,
        prediction=prediction,
        ood=OodScoreResponse.model_validate(report.ood) if report.ood is not None else None,
        model=ModelRef(name=report.model_name, version=report.model_version, sha256=report.model_sha256),
        timings_ms=report.timings or {},
        has_heatmap=report.has_heatmap,
        completed_at=report.completed_at,
        review=review_view(review, report) if review is not None else None,
        review_state=ReviewState(report.review_state or ReviewState.unreviewed.value),
        next_step=next_step(steps, model_level, reviewed_level) if model_level is not None else None,
    )


def job_views(session: Session, jobs: Sequence[Job]) -> list[JobView]:
    """Several jobs (a page of the list, a batch), their latest reviews loaded in one query."""
    reports = [job.report for job in jobs if job.report is not None]
    reviews = latest_reviews(session, reports)
    # One tenant's jobs in practice; looked up once per tenant whatever the page holds.
    steps = {tenant_id: tenant_next_steps(session, tenant_id) for tenant_id in {r.tenant_id for r in reports}}
    return [job_view(job, reviews, steps.get(job.tenant_id)) for job in jobs]


def job_view(
    job: Job, reviews: Mapping[str, Review] | None = None, steps: NextStepsUpdate | None = None
) -> JobView:
    """A job, with its result once there is one (see `report_view` for `reviews` and `steps`)."""
    return JobView(
        job_id=job.id,
        batch_id=job.batch_id,
        status=JobStatus(job.status),
        metadata=ImageMetadata(
            patient_ref=job.patient_ref,
            body_site=job.body_site,
            age=job.age,
            sex=cast(Sex | None, job.sex),
            client_ref=job.client_ref,
            lesion_id=job.lesion_id,
        ),
        dicom=DicomRef.model_validate(job.dicom) if job.dicom is not None else None,
        submitted_by=(
            UserRef(user_id=job.submitted_by, name=job.submitted_by_name or "")
            if job.submitted_by is not None
            else None
        ),
        created_at=job.created_at,
        updated_at=job.updated_at,
        result=report_view(job.report, reviews, steps) if job.report is not None else None,
        error_code=job.error_code,
    )


def batch_view(batch: Batch, counts: BatchCounts, jobs: list[Job]) -> BatchView:
    """A batch with its progress and its jobs."""
    session = object_session(batch)
    return BatchView(
        batch_id=batch.id,
        client_ref=batch.client_ref,
        created_at=batch.created_at,
        counts=counts,
        items=job_views(session, jobs) if session is not None else [job_view(job) for job in jobs],
    )
