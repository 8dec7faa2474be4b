"""Reports: the idempotent upsert from the worker, and heatmap reads."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.jobs import JobStatus
from contracts.reports import HeatmapSource, ReportUpsert
from model_bundle.heatmap import render_heatmap
from services.reports.db.deliveries import plan_job_finished
from services.reports.db.jobs import get_job
from services.reports.db.models import Job, Report
from services.reports.db.types import utc_now
from services.reports.domain.errors import HeatmapNotFoundError
from services.reports.domain.lifecycle import FINAL_STATUSES
from services.reports.domain.payloads import decode_embedding

log = logging.getLogger("services.reports.reports")


def _apply(report: Report, body: ReportUpsert, heatmap: bytes | None) -> None:
    """Overwrite every field: a redelivered result replaces the earlier one entirely."""
    prediction = body.prediction
    report.status = body.status.value
    # A rejected image carries the OOD verdict and never a triage level.
    report.triage_level = (
        prediction.triage_level if prediction is not None and body.status == JobStatus.done else None
    )
    report.triage_threshold = prediction.triage_threshold if prediction is not None else None
    report.top_class = prediction.top_class if prediction is not None else None
    report.malignant_probability = prediction.malignant_probability if prediction is not None else None
    report.probabilities = dict(prediction.probabilities) if prediction is not None else None
    report.conformal_set = list(prediction.conformal_set) if prediction is not None else None
    report.conformal_coverage = prediction.conformal_coverage if prediction is not None else None
    used = prediction.metadata_used if prediction is not None else None
    report.metadata_used = list(used) if used is not None else None
    names = prediction.class_display_names if prediction is not None else None
    report.class_display_names = dict(names) if names else None
    malignant = prediction.malignant_classes if prediction is not None else None
    report.malignant_classes = list(malignant) if malignant else None
    report.ood = body.ood.model_dump(mode="json") if body.ood is not None else None
    report.ood_decision = body.ood.decision.value if body.ood is not None else None
    report.model_name = body.model.name
    report.model_version = body.model.version
    report.model_sha256 = body.model.sha256
    report.timings = dict(body.timings_ms)
    report.heatmap_png = heatmap
    report.heatmap_source = body.heatmap.model_dump(mode="json") if body.heatmap is not None else None
    # Issue 12: for comparing a lesion's images (checked by payloads.check_comparison_fields).
    embedding = body.embedding_f16_b64
    report.embedding = decode_embedding(embedding) if embedding is not None else None
    report.lesion_area_fraction = body.lesion_area_fraction
    report.completed_at = utc_now()


def _stage(session: Session, tenant_id: str, body: ReportUpsert, heatmap: bytes | None) -> tuple[Job, bool]:
    """Write the report and finish the job in the session (not yet committed); the flag says
    whether this ended the job now. A job that already has its result keeps it: the first result
    stands, and a late redelivery (a task the broker handed out twice) changes nothing."""
    job = get_job(session, tenant_id, body.job_id)
    # Both lines below mean a job was run when it should not have been (the worker skips ended
    # jobs): the fault tests and `make chaos` count them.
    if JobStatus(job.status) in FINAL_STATUSES and job.report is not None:
        log.warning("report.redelivered", extra={"job_id": job.id, "tenant_id": tenant_id})
        return job, False
    if job.status == JobStatus.failed.value:
        log.warning("report.after_failure", extra={"job_id": job.id, "tenant_id": tenant_id})
    report = job.report  # loaded with the job (selectin): no second lookup
    if report is None:
        report = Report(job_id=job.id, tenant_id=tenant_id)
        job.report = report
    _apply(report, body, heatmap)
    job.status = body.status.value
    job.error_code = body.error_code
    job.updated_at = utc_now()
    return job, True


def _store(
    session: Session, tenant_id: str, body: ReportUpsert, heatmap: bytes | None, delivery_window: timedelta
) -> Job:
    job, ended = _stage(session, tenant_id, body, heatmap)
    if ended:
        plan_job_finished(session, [job], utc_now(), delivery_window)
    session.commit()
    # heatmap_png is deferred; has_heatmap is computed by the database.
    assert job.report is not None
    session.refresh(job.report, ["has_heatmap"])
    return job


def upsert_report(
    session: Session, tenant_id: str, body: ReportUpsert, heatmap: bytes | None, delivery_window: timedelta
) -> Job:
    """Store the job's result (one row per job, updated on redelivery) and finish the job, with
    the deliveries that calls for (retried for `delivery_window`)."""
    try:
        return _store(session, tenant_id, body, heatmap, delivery_window)
    except IntegrityError:
        # A concurrent delivery inserted the row between our read and our insert: update it.
        session.rollback()
        return _store(session, tenant_id, body, heatmap, delivery_window)


def upsert_many(
    session: Session,
    tenant_id: str,
    items: list[tuple[ReportUpsert, bytes | None]],
    delivery_window: timedelta,
) -> list[Job]:
    """Store several jobs' results in ONE transaction (a worker's micro-batch), each as
    `upsert_report` would; if it cannot commit (a concurrent first delivery of the same job), it
    is rolled back and each is stored on its own."""
    loaded = load_jobs(session, tenant_id, [body.job_id for body, _ in items])
    staged = [_stage(session, tenant_id, body, heatmap) for body, heatmap in items]
    del loaded  # held until here: the session keeps loaded rows only while they are referenced
    try:
        plan_job_finished(session, [job for job, ended in staged if ended], utc_now(), delivery_window)
        session.commit()
    except IntegrityError:
        session.rollback()
        return [upsert_report(session, tenant_id, body, heatmap, delivery_window) for body, heatmap in items]
    return [job for job, _ in staged]


def load_jobs(session: Session, tenant_id: str, job_ids: list[str]) -> list[Job]:
    """Load the tenant's jobs of a micro-batch (with their reports) in one query, so that each
    job's lookup that follows is answered by the session (while the caller holds the list), not
    by one query per job."""
    return list(session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.id.in_(job_ids))))


def refresh_has_heatmap(session: Session, jobs: list[Job]) -> None:
    """Reload the stored reports of `jobs` in one query: `has_heatmap` is computed by the
    database, so a report just written knows it only once read back."""
    job_ids = [job.id for job in jobs if job.report is not None]
    if job_ids:
        statement = select(Report).where(Report.job_id.in_(job_ids))
        session.scalars(statement.execution_options(populate_existing=True)).all()


def get_heatmap(session: Session, tenant_id: str, job_id: str) -> bytes:
    """The job's heatmap PNG, rendered from its stored map on the first request and kept from then
    on; JobNotFoundError for no such job, HeatmapNotFoundError if it has none."""
    get_job(session, tenant_id, job_id)
    row = session.execute(
        select(Report.heatmap_png, Report.heatmap_source).where(
            Report.job_id == job_id, Report.tenant_id == tenant_id
        )
    ).one_or_none()
    if row is None or (row.heatmap_png is None and row.heatmap_source is None):
        raise HeatmapNotFoundError("this job has no heatmap", details={"job_id": job_id})
    if row.heatmap_png is not None:
        return bytes(row.heatmap_png)
    png = render_heatmap(HeatmapSource.model_validate(row.heatmap_source))
    # Two first requests at once both render the same bytes (rendering is deterministic), so the
    # later write changes nothing; the condition keeps a redelivered report's own PNG.
    session.execute(
        update(Report).where(Report.job_id == job_id, Report.heatmap_png.is_(None)).values(heatmap_png=png)
    )
    session.commit()
    return png
