"""Lesions followed over time (issue 12): creation, a patient's lesions, a lesion's images, the
check a job naming a lesion must pass, and what comparing two of its images needs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.bundle import TriageLevel
from contracts.jobs import ImageMetadata, JobStatus
from contracts.lesions import BodyMap, LesionCreate, LesionImage, LesionLaterality, LesionView
from contracts.reports import ModelRef
from contracts.users import Actor
from services.reports.db.audit import record_audit
from services.reports.db.models import Job, Lesion, Report, User
from services.reports.domain.errors import (
    JobNotFoundError,
    LesionJobMismatchError,
    LesionJobNotComparableError,
    LesionNotFoundError,
    LesionPatientMismatchError,
)
from services.reports.domain.lesion_change import ImageMeasures


def new_lesion_id() -> str:
    """A fresh lesion id: `les_` + 32 hex characters."""
    return f"les_{uuid.uuid4().hex}"


def get_lesion(session: Session, tenant_id: str, lesion_id: str) -> Lesion:
    """The tenant's lesion, or LesionNotFoundError (also for another tenant's lesion)."""
    lesion = session.get(Lesion, lesion_id)
    if lesion is None or lesion.tenant_id != tenant_id:
        raise LesionNotFoundError("no such lesion", details={"lesion_id": lesion_id})
    return lesion


def lesion_for_job(session: Session, tenant_id: str, metadata: ImageMetadata) -> Lesion | None:
    """The lesion a job's metadata names, checked: it must be the tenant's (404
    `lesion.not_found`) and the job's patient's (422 `lesion.patient_mismatch` when the job gives
    another patient_ref). None when the job names no lesion."""
    if metadata.lesion_id is None:
        return None
    lesion = get_lesion(session, tenant_id, metadata.lesion_id)
    if metadata.patient_ref is not None and metadata.patient_ref != lesion.patient_ref:
        raise LesionPatientMismatchError(
            "the lesion belongs to another patient than the job's patient_ref",
            details={"lesion_id": lesion.id},
        )
    return lesion


def _body_map(lesion: Lesion) -> BodyMap | None:
    if lesion.body_map_view is None or lesion.body_map_x is None or lesion.body_map_y is None:
        return None
    return BodyMap.model_validate(
        {"view": lesion.body_map_view, "x": lesion.body_map_x, "y": lesion.body_map_y}
    )


def lesion_view(lesion: Lesion, jobs: list[tuple[str, object]] | None = None) -> LesionView:
    """A lesion as the API shows it; `jobs` its (job id, created_at) oldest first."""
    jobs = jobs or []
    return LesionView(
        lesion_id=lesion.id,
        patient_ref=lesion.patient_ref,
        label=lesion.label,
        body_site=lesion.body_site,
        laterality=cast(LesionLaterality | None, lesion.laterality),
        body_map=_body_map(lesion),
        created_at=lesion.created_at,
        image_count=len(jobs),
        latest_job_id=jobs[-1][0] if jobs else None,
    )


def _jobs_by_lesion(
    session: Session, tenant_id: str, lesion_ids: Iterable[str]
) -> dict[str, list[tuple[str, object]]]:
    """Each lesion's (job id, created_at), oldest first."""
    ids = list(lesion_ids)
    found: dict[str, list[tuple[str, object]]] = {lesion_id: [] for lesion_id in ids}
    if not ids:
        return found
    rows = session.execute(
        select(Job.lesion_id, Job.id, Job.created_at)
        .where(Job.tenant_id == tenant_id, Job.lesion_id.in_(ids))
        .order_by(Job.created_at, Job.id)
    ).all()
    for row in rows:
        found[str(row.lesion_id)].append((row.id, row.created_at))
    return found


def create_lesion(
    session: Session, tenant_id: str, body: LesionCreate, actor: Actor | None, request_id: str | None
) -> LesionView:
    """A new lesion, audited `lesion.create` in the same transaction."""
    creator = actor.user_id if actor is not None and session.get(User, actor.user_id) is not None else None
    lesion = Lesion(
        id=new_lesion_id(),
        tenant_id=tenant_id,
        patient_ref=body.patient_ref,
        label=body.label,
        body_site=body.body_site,
        laterality=body.laterality,
        body_map_view=body.body_map.view if body.body_map else None,
        body_map_x=body.body_map.x if body.body_map else None,
        body_map_y=body.body_map.y if body.body_map else None,
        created_by=creator,
    )
    session.add(lesion)
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="lesion.create",
        resource_type="lesion",
        resource_id=lesion.id,
        request_id=request_id,
        details={"body_site": body.body_site, "laterality": body.laterality},
    )
    session.commit()
    return lesion_view(lesion)


def list_lesions(
    session: Session, tenant_id: str, patient_ref: str, actor: Actor | None, request_id: str | None
) -> list[LesionView]:
    """A patient's lesions, oldest first (audited `lesion.read`: the list is clinical data)."""
    lesions = session.scalars(
        select(Lesion)
        .where(Lesion.tenant_id == tenant_id, Lesion.patient_ref == patient_ref)
        .order_by(Lesion.created_at, Lesion.id)
    ).all()
    jobs = _jobs_by_lesion(session, tenant_id, [lesion.id for lesion in lesions])
    # Reads are audited for users only (docs/CLINICAL_WORKFLOW.md): the fleet's own carry no actor.
    if actor is not None:
        record_audit(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="lesion.read",
            resource_type="lesion",
            resource_id=None,
            request_id=request_id,
            details={"lesions": len(lesions), "by": "patient_ref"},
        )
        session.commit()
    return [lesion_view(lesion, jobs[lesion.id]) for lesion in lesions]


def lesion_jobs(session: Session, tenant_id: str, lesion: Lesion) -> list[Job]:
    """The lesion's jobs with their reports, oldest first."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.tenant_id == tenant_id, Job.lesion_id == lesion.id)
            .order_by(Job.created_at, Job.id)
        ).all()
    )


def lesion_image(job: Job) -> LesionImage:
    """One job of a lesion as its history lists it."""
    report = job.report
    done = report is not None and report.status == JobStatus.done.value
    top_class = report.top_class if done and report is not None else None
    names = (report.class_display_names or {}) if report is not None else {}
    return LesionImage(
        job_id=job.id,
        created_at=job.created_at,
        status=JobStatus(job.status),
        triage_level=cast(TriageLevel | None, report.triage_level if done and report is not None else None),
        top_class=top_class,
        top_class_display_name=names.get(top_class, top_class) if top_class is not None else None,
        malignant_probability=report.malignant_probability if done and report is not None else None,
        lesion_area_fraction=report.lesion_area_fraction if done and report is not None else None,
        has_heatmap=bool(report.has_heatmap) if report is not None else False,
    )


def measures(session: Session, jobs: list[Job]) -> list[ImageMeasures]:
    """The comparison inputs of the done ones among `jobs`, in their order (the embedding is a
    deferred column: read here in one query, never with the history's reports)."""
    done = [job for job in jobs if job.report is not None and job.report.status == JobStatus.done.value]
    if not done:
        return []
    rows = session.execute(
        select(Report.job_id, Report.embedding).where(Report.job_id.in_([job.id for job in done]))
    ).all()
    embeddings = {row.job_id: row.embedding for row in rows}
    result: list[ImageMeasures] = []
    for job in done:
        report = job.report
        assert report is not None
        embedding = embeddings.get(job.id)
        result.append(
            ImageMeasures(
                job_id=job.id,
                taken_at=job.created_at,
                model=ModelRef(
                    name=report.model_name, version=report.model_version, sha256=report.model_sha256
                ),
                malignant_probability=report.malignant_probability,
                embedding_f16=bytes(embedding) if embedding is not None else None,
                area_fraction=report.lesion_area_fraction,
            )
        )
    return result


def comparison_pair(
    session: Session, tenant_id: str, lesion: Lesion, from_job: str, to_job: str
) -> tuple[ImageMeasures, ImageMeasures]:
    """The measures of two of the lesion's done images: 404 `job.not_found` for a job the tenant
    does not have, 422 `lesion.job_not_in_lesion` for another lesion's image, 409
    `lesion.job_not_comparable` for one without a result."""
    jobs: list[Job] = []
    for job_id in (from_job, to_job):
        # As db.jobs.get_job (which imports this module for job registration's lesion check).
        found = session.get(Job, job_id)
        if found is None or found.tenant_id != tenant_id:
            raise JobNotFoundError("no such job", details={"job_id": job_id})
        jobs.append(found)
    for job in jobs:
        if job.lesion_id != lesion.id:
            raise LesionJobMismatchError(
                "the job is not an image of this lesion", details={"job_id": job.id, "lesion_id": lesion.id}
            )
        if job.report is None or job.report.status != JobStatus.done.value:
            raise LesionJobNotComparableError(
                "only done images can be compared", details={"job_id": job.id, "status": job.status}
            )
    first, second = measures(session, jobs)
    return first, second
