"""A finished job as documents for other systems: the printable PDF report and the FHIR R4
Bundle (which carries the PDF). Used by the API routes and by the dispatcher's FHIR pushes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from contracts.reports import JobView
from services.reports.api.views import job_view
from services.reports.config import Settings
from services.reports.db.jobs import get_job, get_job_image
from services.reports.db.reports import get_heatmap
from services.reports.domain.errors import JobNotFinishedError
from services.reports.domain.fhir_bundle import job_bundle
from services.reports.domain.lifecycle import FINAL_STATUSES
from services.reports.domain.report_pdf import render_report_pdf

BundleType = Literal["collection", "transaction"]


@dataclass(frozen=True)
class JobDocument:
    """What every document of a job is made from."""

    job: JobView
    image: bytes
    image_media_type: str
    heatmap_png: bytes | None


def load_job_document(session: Session, tenant_id: str, job_id: str) -> JobDocument:
    """The tenant's finished (done or rejected) job with its image and heatmap; JobNotFoundError
    for no such job, JobNotFinishedError while it has no result (queued, running or failed)."""
    view = job_view(get_job(session, tenant_id, job_id))
    if view.status not in FINAL_STATUSES or view.result is None:
        raise JobNotFinishedError(
            "the job has no result yet", details={"job_id": job_id, "status": view.status.value}
        )
    image, media_type = get_job_image(session, tenant_id, job_id)
    heatmap = get_heatmap(session, tenant_id, job_id) if view.result.has_heatmap else None
    return JobDocument(view, bytes(image), media_type, heatmap)


def report_pdf(document: JobDocument, now: datetime) -> bytes:
    """The printable report."""
    return render_report_pdf(
        document.job, image=document.image, heatmap_png=document.heatmap_png, generated_at=now
    )


def fhir_bundle_json(
    document: JobDocument, settings: Settings, bundle_type: BundleType, now: datetime
) -> bytes:
    """The FHIR R4 Bundle as compact JSON, with the printable report as the DiagnosticReport's
    presentedForm."""
    bundle = job_bundle(
        document.job,
        image=document.image,
        image_media_type=document.image_media_type,
        heatmap_png=document.heatmap_png,
        report_pdf=report_pdf(document, now),
        bundle_type=bundle_type,
        identifier_system=settings.fhir_identifier_system,
        patient_identifier_system=settings.fhir_patient_identifier_system,
        practitioner_identifier_system=settings.fhir_practitioner_identifier_system,
        generated_at=now,
    )
    return json.dumps(bundle, separators=(",", ":")).encode()
