"""Database rows -> contract models."""

from __future__ import annotations

from typing import cast

from contracts.bundle import TriageLevel
from contracts.jobs import BatchCounts, DicomRef, ImageMetadata, JobStatus, Sex
from contracts.ood import OodScoreResponse
from contracts.records import BatchView
from contracts.reports import JobView, ModelRef, Prediction, ReportView
from services.reports.db.models import Batch, Job, Report


def report_view(report: Report) -> ReportView:
    """A stored report as the API shows it; a rejected one has no prediction or triage level."""
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
        )
    return ReportView(
        job_id=report.job_id,
        status=status,
        triage_level=cast(TriageLevel | None, report.triage_level if prediction else None),
        prediction=prediction,
        ood=OodScoreResponse.model_validate(report.ood) if report.ood is not None else None,
        model=ModelRef(name=report.model_name, version=report.model_version, sha256=report.model_sha256),
        timings_ms=report.timings or {},
        has_heatmap=report.has_heatmap,
        completed_at=report.completed_at,
    )


def job_view(job: Job) -> JobView:
    """A job, with its result once there is one."""
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
        ),
        dicom=DicomRef.model_validate(job.dicom) if job.dicom is not None else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        result=report_view(job.report) if job.report is not None else None,
        error_code=job.error_code,
    )


def batch_view(batch: Batch, counts: BatchCounts, jobs: list[Job]) -> BatchView:
    """A batch with its progress and its jobs."""
    return BatchView(
        batch_id=batch.id,
        client_ref=batch.client_ref,
        created_at=batch.created_at,
        counts=counts,
        items=[job_view(job) for job in jobs],
    )
