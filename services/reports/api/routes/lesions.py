"""Issue 12: lesions tracked over time: their images and comparisons."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Path as PathParam
from fastapi import Query, status
from pydantic import ValidationError

from contracts.lesions import (
    LESION_ID_PATTERN,
    ChangeCalibration,
    LesionComparison,
    LesionCreate,
    LesionHistory,
    LesionList,
    LesionView,
)
from services.common.request_id import current_request_id
from services.reports.api.deps import ActorDep, SessionDep, SettingsDep, TenantDep, internal_router
from services.reports.db.audit import record_read
from services.reports.db.lesions import (
    comparison_pair,
    create_lesion,
    get_lesion,
    lesion_image,
    lesion_jobs,
    lesion_view,
    list_lesions,
    measures,
)
from services.reports.domain.lesion_change import compare, consecutive_changes

log = logging.getLogger("services.reports.lesions")

router = internal_router("lesions")

LesionId = Annotated[str, PathParam(pattern=LESION_ID_PATTERN)]
JobId = Annotated[str, Query(min_length=1, max_length=64)]


@lru_cache(maxsize=4)
def load_change_calibration(path: str) -> tuple[ChangeCalibration | None, str | None]:
    """The calibration at `path` (read once per process), or None and why it is unusable."""
    try:
        return ChangeCalibration.model_validate(json.loads(Path(path).read_text())), None
    except FileNotFoundError:
        problem = "No change calibration was found (REPORTS_CHANGE_CALIBRATION): no change is flagged."
    except (OSError, ValueError, ValidationError):
        problem = (
            "The change calibration could not be read (REPORTS_CHANGE_CALIBRATION): no change is flagged."
        )
    log.warning("lesions.calibration_unusable", extra={"error": problem})
    return None, problem


@router.post("/internal/v1/lesions", status_code=status.HTTP_201_CREATED)
def add_lesion(body: LesionCreate, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> LesionView:
    """A new lesion of a patient (audited `lesion.create`)."""
    return create_lesion(session, tenant, body, actor, current_request_id())


@router.get("/internal/v1/lesions")
def read_lesions(
    tenant: TenantDep,
    session: SessionDep,
    actor: ActorDep,
    patient_ref: Annotated[str, Query(min_length=1, max_length=128)],
) -> LesionList:
    """A patient's lesions, oldest first (audited `lesion.read`)."""
    return LesionList(items=list_lesions(session, tenant, patient_ref, actor, current_request_id()))


@router.get("/internal/v1/lesions/{lesion_id}")
def read_lesion(
    lesion_id: LesionId, tenant: TenantDep, session: SessionDep, settings: SettingsDep, actor: ActorDep
) -> LesionHistory:
    """The lesion, its images oldest first and the comparison of each two consecutive done ones;
    404 `lesion.not_found` for another tenant's lesion (audited `lesion.read`)."""
    lesion = get_lesion(session, tenant, lesion_id)
    jobs = lesion_jobs(session, tenant, lesion)
    calibration, problem = load_change_calibration(settings.change_calibration)
    history = LesionHistory(
        lesion=lesion_view(lesion, [(job.id, job.created_at) for job in jobs]),
        images=[lesion_image(job) for job in jobs],
        changes=consecutive_changes(measures(session, jobs), calibration, problem),
    )
    record_read(
        session,
        tenant_id=tenant,
        actor=actor,
        action="lesion.read",
        resource_type="lesion",
        resource_id=lesion.id,
        details={"images": len(jobs)},
    )
    return history


@router.get("/internal/v1/lesions/{lesion_id}/comparison")
def compare_images(
    lesion_id: LesionId,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    from_job: JobId,
    to_job: JobId,
) -> LesionComparison:
    """Two done images of the lesion compared (audited `lesion.compare`): 404 `lesion.not_found`,
    404 `job.not_found`, 422 `lesion.job_not_in_lesion`, 409 `lesion.job_not_comparable`."""
    lesion = get_lesion(session, tenant, lesion_id)
    earlier, later = comparison_pair(session, tenant, lesion, from_job, to_job)
    calibration, problem = load_change_calibration(settings.change_calibration)
    comparison = compare(earlier, later, calibration, problem)
    record_read(
        session,
        tenant_id=tenant,
        actor=actor,
        action="lesion.compare",
        resource_type="lesion",
        resource_id=lesion.id,
        details={"from_job": from_job, "to_job": to_job, "changed": comparison.flags.changed},
    )
    return comparison
