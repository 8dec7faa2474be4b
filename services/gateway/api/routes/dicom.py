"""DICOM ingest (issue 11): `POST /v1/dicom` (one instance) and DICOMweb STOW-RS
`POST /dicomweb/studies`, so a PACS or a dermatoscope that speaks DICOM sends directly. An instance
becomes an ordinary job: its pixels go through the same checks and re-encoding as any upload, its
PatientID becomes an opaque per-tenant reference, and only the fields `domain/dicom.py` maps are
kept (the UIDs, for the FHIR output)."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from contracts.errors import DomainError
from contracts.jobs import DicomRef, ImageMetadata, StoredImage
from contracts.public import JobAccepted
from contracts.reports import JobView
from services.gateway.api.deps import (
    ContextDep,
    IdempotencyKeyDep,
    PrincipalDep,
    RequestIdDep,
    SettingsDep,
    image_limits,
)
from services.gateway.api.prefer import parse_wait
from services.gateway.api.responses import SUBMITTED_HEADERS, api_key_route
from services.gateway.api.submission import Submitted, answer_submitted, submit_job
from services.gateway.config import Settings
from services.gateway.domain.auth import Principal
from services.gateway.domain.dicom import (
    DICOM_JSON_MEDIA_TYPE,
    DICOM_MEDIA_TYPE,
    DicomInstance,
    DicomMediaTypeError,
    StowResult,
    parse_media_type,
    parse_stow_request,
    read_dicom,
    stow_response,
)
from services.gateway.domain.errors import BatchTooManyItemsError
from services.gateway.domain.patient_ref import derived_key, dicom_patient_ref
from services.gateway.domain.upload_validation import prepare_image

router = APIRouter(tags=["dicom"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _ingest(data: bytes, settings: Settings) -> tuple[DicomInstance, StoredImage]:
    """Read the instance and put its pixels through the upload checks (one thread, one decode slot)."""
    instance = read_dicom(
        data,
        max_pixels=settings.max_pixels,
        max_bytes=settings.max_dicom_bytes,
        # Downscaled to what the upload checks keep anyway: a large instance's PNG stays small.
        max_side=settings.reencode_max_side,
    )
    # The PNG made from a large uncompressed instance may exceed the upload cap, which is for
    # what clients send; the instance itself was bounded by max_dicom_bytes.
    limits = image_limits(settings)
    limits = dataclasses.replace(limits, max_upload_bytes=max(limits.max_upload_bytes, len(instance.png)))
    return instance, prepare_image(instance.png, limits)


def _metadata(instance: DicomInstance, principal: Principal, settings: Settings) -> ImageMetadata:
    key = (
        settings.patient_ref_key.get_secret_value().encode()
        if settings.patient_ref_key is not None
        else derived_key(settings.internal_token.get_secret_value())
    )
    patient_ref = (
        dicom_patient_ref(key, principal.tenant_id, instance.patient_id) if instance.patient_id else None
    )
    return ImageMetadata(
        patient_ref=patient_ref, body_site=instance.body_site, age=instance.age, sex=instance.sex
    )


def _dicom_ref(instance: DicomInstance) -> DicomRef:
    return DicomRef(
        study_instance_uid=instance.study_instance_uid,
        series_instance_uid=instance.series_instance_uid,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        laterality=instance.laterality,
        acquired_at=instance.acquired_at,
    )


async def _submit_instance(
    data: bytes,
    *,
    settings: Settings,
    context: ContextDep,
    principal: Principal,
    idempotency_key: str | None,
    request_id: str,
    awaited: bool = False,
) -> tuple[DicomInstance, Submitted]:
    instance, image = await anyio.to_thread.run_sync(
        partial(_ingest, data, settings), limiter=context.decode_slots
    )
    submitted = await submit_job(
        context,
        principal=principal,
        image=image,
        metadata=_metadata(instance, principal, settings),
        filename=f"{instance.sop_instance_uid}.dcm",
        # An instance sent twice (a PACS retrying) is the same job: its SOP Instance UID is unique.
        idempotency_key=idempotency_key or f"dicom:{instance.sop_instance_uid}",
        batch_id=None,
        request_id=request_id,
        dicom=_dicom_ref(instance),
        awaited=awaited,
    )
    return instance, submitted


@router.post(
    "/v1/dicom",
    status_code=202,
    response_model=JobAccepted | JobView,
    summary="Submit one DICOM instance (dermoscopic or VL photographic image) for triage",
    description=(
        "The body is one DICOM Part 10 file (`Content-Type: application/dicom`): Dermoscopic "
        "Photography or VL Photographic Image Storage, uncompressed, JPEG baseline or RLE. The first "
        "frame is triaged like an uploaded image; PatientID becomes an opaque per-tenant `patient_ref`; "
        "body site, laterality, age, sex, acquisition time and the UIDs are kept, nothing else. The SOP "
        "Instance UID is the default `Idempotency-Key`. Answers as `POST /v1/images` (202, or 200 with "
        "`Prefer: wait=N`)."
    ),
    openapi_extra={"requestBody": {"required": True, "content": {DICOM_MEDIA_TYPE: _BINARY}}},
    responses={
        200: {
            "model": JobView,
            "description": "Finished within the `Prefer: wait` window",
            "headers": SUBMITTED_HEADERS,
        },
        202: {"model": JobAccepted, "description": "Accepted and queued", "headers": SUBMITTED_HEADERS},
        # 413 the body or its pixels; 415 not application/dicom, another SOP class or transfer
        # syntax; 422 `dicom.malformed`, `dicom.no_pixels`; 429 the tenant's rate.
        **api_key_route(400, 413, 415, 429),
    },
)
async def submit_dicom(
    request: Request,
    response: Response,
    settings: SettingsDep,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKeyDep = None,
    prefer: Annotated[str | None, Header(description="`wait=N`: wait up to N seconds for the result")] = None,
) -> JobAccepted | JobView:
    """Read the instance, register the job, queue it."""
    if parse_media_type(request.headers.get("content-type", ""))[0] != DICOM_MEDIA_TYPE:
        raise DicomMediaTypeError("send the instance as `Content-Type: application/dicom`")
    await context.admit(principal.tenant_id, 1)
    data = await request.body()
    wait = parse_wait(prefer, settings.max_wait_seconds)
    _, submitted = await _submit_instance(
        data,
        settings=settings,
        context=context,
        principal=principal,
        idempotency_key=idempotency_key,
        request_id=request_id,
        awaited=wait > 0,
    )
    return await answer_submitted(
        response,
        context,
        submitted,
        tenant_id=principal.tenant_id,
        wait=wait,
        request_id=request_id,
    )


@router.post(
    "/dicomweb/studies",
    response_class=JSONResponse,
    summary="DICOMweb STOW-RS: store instances (each becomes a triage job)",
    description=(
        'The body is `multipart/related; type="application/dicom"`, one instance per part, each as '
        "`POST /v1/dicom` takes it. The answer is a Store Instances response in DICOM JSON: the stored "
        "instances in ReferencedSOPSequence (00081199) with their job's URL, refused ones in "
        "FailedSOPSequence (00081198) with a DICOM failure reason (00081197). 200: all stored; 202: "
        "some; 409: none. A 503 (the queue or a dependency is down) refuses the whole request: retry "
        "it (instances already stored are found again by their SOP Instance UID)."
    ),
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/related": _BINARY}}},
    responses={
        200: {
            "content": {DICOM_JSON_MEDIA_TYPE: {"schema": {"type": "object"}}},
            "description": "All instances stored",
        },
        202: {
            "content": {DICOM_JSON_MEDIA_TYPE: {"schema": {"type": "object"}}},
            "description": "Some stored",
        },
        409: {
            "content": {DICOM_JSON_MEDIA_TYPE: {"schema": {"type": "object"}}},
            "description": "None stored",
        },
        # 400 `dicomweb.malformed` or too many parts; 415 not multipart/related of application/dicom.
        **api_key_route(400, 413, 415, 429),
    },
)
async def store_instances(
    request: Request,
    settings: SettingsDep,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
) -> JSONResponse:
    """Each part is read and submitted on its own; the answer says which were stored."""
    parts = parse_stow_request(request.headers.get("content-type", ""), await request.body())
    if len(parts) > settings.max_batch_items:
        raise BatchTooManyItemsError(
            "too many instances in one request",
            {"max_items": settings.max_batch_items, "received": len(parts)},
        )
    await context.admit(principal.tenant_id, len(parts))
    results: list[StowResult] = []
    for part in parts:
        if part.error is not None or part.data is None:
            results.append(StowResult(failure=part.error))
            continue
        try:
            instance, submitted = await _submit_instance(
                part.data,
                settings=settings,
                context=context,
                principal=principal,
                idempotency_key=None,
                request_id=request_id,
            )
        except DomainError as exc:
            # An outage is the whole request's (the sender retries it); an instance's own fault
            # is that instance's failure, and the others are stored all the same.
            if exc.status >= 500 or exc.status == 429:
                raise
            results.append(StowResult(failure=exc))
            continue
        results.append(
            StowResult(
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
                job_id=submitted.job.job_id,
            )
        )
    status, body = stow_response(results, retrieve_base=str(request.base_url).rstrip("/"))
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON_MEDIA_TYPE)
