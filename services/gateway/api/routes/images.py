"""`POST /v1/images`: submit one image for triage."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, Header, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from contracts.public import JobAccepted
from contracts.reports import JobView
from services.gateway.api.deps import (
    ContextDep,
    IdempotencyKeyDep,
    MetadataDep,
    PrincipalDep,
    RequestIdDep,
    SettingsDep,
    image_limits,
)
from services.gateway.api.prefer import parse_wait
from services.gateway.api.responses import SUBMITTED_HEADERS, api_key_route
from services.gateway.api.submission import answer_submitted, submit_job
from services.gateway.domain.batch import clean_filename, read_bounded
from services.gateway.domain.errors import UploadTooLargeError
from services.gateway.domain.upload_validation import prepare_image

router = APIRouter(tags=["images"])

_HEADERS = {
    **SUBMITTED_HEADERS,
    "Preference-Applied": {
        "description": "`wait=N`: the seconds of `Prefer: wait` the call honoured",
        "required": False,
        "schema": {"type": "string"},
    },
}


@router.post(
    "/v1/images",
    status_code=202,
    response_model=JobAccepted | JobView,
    summary="Submit one dermoscopic image for triage",
    description=(
        "Multipart upload: `file` (JPEG, PNG or WebP, sniffed from the bytes) plus optional "
        "metadata fields. The image is checked, turned upright, stripped of all metadata "
        "(EXIF, GPS, ICC, text) and re-encoded before it is stored or queued. Answers 202 with "
        "the job's `status_url`. With `Prefer: wait=N` (N <= the server's maximum) the call "
        "waits up to N seconds and answers 200 with the finished job if it is done by then. "
        "The same `Idempotency-Key` returns the original job and queues nothing new."
    ),
    responses={
        200: {
            "model": JobView,
            "description": "Finished within the `Prefer: wait` window",
            "headers": _HEADERS,
        },
        202: {
            "model": JobAccepted,
            "description": "Accepted and queued",
            "headers": _HEADERS,
        },
        # 400 `image.empty`, `request.malformed` (multipart that does not parse); 413 the file or
        # its pixels; 415 not a still JPEG/PNG/WebP in a supported mode; 429 the tenant's rate;
        # (issue 12) 404 `lesion.not_found`, 422 `lesion.patient_mismatch` for the `lesion_id` field.
        **api_key_route(400, 404, 413, 415, 429),
    },
)
async def submit_image(
    response: Response,
    settings: SettingsDep,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
    metadata: MetadataDep,
    file: Annotated[UploadFile, File(description="the image (JPEG, PNG or WebP)")],
    idempotency_key: IdempotencyKeyDep = None,
    prefer: Annotated[str | None, Header(description="`wait=N`: wait up to N seconds for the result")] = None,
) -> JobAccepted | JobView:
    """Validate, strip and re-encode the image, register the job, queue it."""
    # Before the decode: a refused upload costs no CPU and leaves nothing registered.
    await context.admit(principal.tenant_id, 1)
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise UploadTooLargeError("the file is larger than allowed", {"max_bytes": settings.max_upload_bytes})
    data = await run_in_threadpool(read_bounded, file.file, settings.max_upload_bytes)
    image = await anyio.to_thread.run_sync(
        prepare_image, data, image_limits(settings), limiter=context.decode_slots
    )
    wait = parse_wait(prefer, settings.max_wait_seconds)
    submitted = await submit_job(
        context,
        principal=principal,
        image=image,
        metadata=metadata,
        filename=clean_filename(file.filename),
        idempotency_key=idempotency_key,
        batch_id=None,
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
