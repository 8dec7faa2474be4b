"""`POST /v1/batches` (many files, or one zip) and `GET /v1/batches/{id}`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, BinaryIO

import anyio.to_thread
from fastapi import APIRouter, File, Response, UploadFile

from contracts.errors import DomainError, ErrorDetail, error_detail
from contracts.jobs import ImageMetadata, InferenceTask
from contracts.public import BatchAccepted, BatchItemAccepted, BatchItemRejected
from contracts.records import BatchCreate, BatchView
from services.common.errors import RequestInvalidError
from services.gateway.api.deps import (
    BatchIdPath,
    ContextDep,
    GatewayContext,
    IdempotencyKeyDep,
    MetadataDep,
    PrincipalDep,
    RequestIdDep,
    SettingsDep,
    batch_limits,
)
from services.gateway.api.responses import SUBMITTED_HEADERS, api_key_route
from services.gateway.api.submission import (
    batch_id_for,
    chunks,
    inference_task,
    job_create,
    new_id,
    queue_tasks,
    replay_task,
)
from services.gateway.domain.auth import Principal
from services.gateway.domain.batch import PreparedItem, prepare_batch
from services.gateway.domain.errors import BatchNoValidItemsError, UpstreamError

router = APIRouter(tags=["batches"])


@router.post(
    "/v1/batches",
    status_code=202,
    response_model=BatchAccepted,
    summary="Submit many images at once (several `files`, or one zip archive)",
    description=(
        "Multipart: repeat `files` once per image, or send one zip as `archive` (a single "
        "`files` part that is a zip is treated the same). Directories, `__MACOSX/` and dotfiles "
        "inside a zip are ignored. Each image is checked on its own: the answer lists every "
        "file, either in `items` (with its job id) or in `rejected` (with its error code). "
        "Metadata fields apply to every image. With an `Idempotency-Key` a repeated request "
        "returns the same batch and job ids and queues nothing new."
    ),
    responses={
        202: {
            "model": BatchAccepted,
            "description": "Registered; every file is listed in `items` or `rejected`",
            "headers": SUBMITTED_HEADERS,
        },
        # 400 `request.malformed` (multipart that does not parse); 413 too many files, entries or
        # bytes; 422 no file, both `files` and `archive`, no acceptable image, a corrupt zip.
        # (issue 12) 404 `lesion.not_found` when every image names a lesion the tenant lacks.
        **api_key_route(400, 404, 413, 422, 429),
    },
    # Exactly one of `files` and `archive` (the route answers 422 `request.invalid` to both, and
    # 422 `batch.empty` to neither).
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "oneOf": [{"required": ["files"]}, {"required": ["archive"]}],
                    }
                }
            }
        }
    },
)
async def submit_batch(
    response: Response,
    settings: SettingsDep,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
    metadata: MetadataDep,
    files: Annotated[
        list[UploadFile] | None,
        File(description="the images, one part each", json_schema_extra={"minItems": 1}),
    ] = None,
    archive: Annotated[UploadFile | None, File(description="a zip archive of images")] = None,
    idempotency_key: IdempotencyKeyDep = None,
) -> BatchAccepted:
    """Validate every file, register one batch and a job per good file, queue the new jobs."""
    if files and archive is not None:
        raise RequestInvalidError("send either `files` or one `archive`, not both")
    uploads: list[tuple[str | None, BinaryIO]] = [(f.filename, f.file) for f in files or []]
    prepared = await anyio.to_thread.run_sync(
        prepare_batch,
        uploads,
        archive.file if archive else None,
        batch_limits(settings),
        limiter=context.decode_slots,
    )
    good = [item for item in prepared if item.image is not None]
    rejected = [_rejection(item.index, item.filename, item.error) for item in prepared if item.error]
    if not good:
        raise BatchNoValidItemsError(
            "no file of the batch is an acceptable image",
            {"rejected": [r.model_dump(mode="json") for r in rejected]},
        )

    await context.admit(principal.tenant_id, len(good))
    batch_id = batch_id_for(principal.tenant_id, idempotency_key) if idempotency_key else new_id()
    batch, replayed = await context.reports.create_batch(
        principal.tenant_id,
        BatchCreate(batch_id=batch_id, client_ref=metadata.client_ref, total=len(good)),
        request_id=request_id,
    )
    # Registered in groups, one reports call each, with bounded parallelism, and each group's new
    # jobs queued as one chunk (one worker micro-batch) as soon as it is registered, so workers
    # start while later groups register. Every group runs to its end even if another fails, so a
    # failure is reported per item and a retry with the same key completes the batch.
    gate = asyncio.Semaphore(settings.register_concurrency)
    groups = registration_groups(good, settings.task_chunk_size, MAX_REGISTRATION_BYTES)
    grouped = await asyncio.gather(
        *(
            _register_group(
                gate, context, group, principal, metadata, batch.batch_id, idempotency_key, request_id
            )
            for group in groups
        )
    )
    outcomes = [outcome for group_outcomes in grouped for outcome in group_outcomes]
    accepted = [o.item for o in outcomes if isinstance(o, _Registered)]
    failures = [o for o in outcomes if isinstance(o, _Failed)]
    if not accepted:
        raise failures[0].error  # e.g. reports or the broker is down: 503, nothing to list
    failed = [_rejection(f.index, f.filename, f.error) for f in failures]

    status_url = f"/v1/batches/{batch.batch_id}"
    response.headers["Location"] = status_url
    if replayed:
        response.headers["Idempotent-Replay"] = "true"
    return BatchAccepted(
        batch_id=batch.batch_id,
        status_url=status_url,
        accepted=len(accepted),
        rejected=sorted(rejected + failed, key=lambda r: r.index),
        items=sorted(accepted, key=lambda a: a.index),
    )


@router.get(
    "/v1/batches/{batch_id}",
    response_model=BatchView,
    summary="A batch's progress: counts by status and its jobs",
    responses=api_key_route(404),
)
async def get_batch(
    batch_id: BatchIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> BatchView:
    """Counts (queued, running, done, rejected, failed) and one entry per job."""
    return await context.reports.get_batch(principal.tenant_id, batch_id, request_id=request_id)


# Base64 image bytes per registration call: a batch of large images is split further, so no
# request to reports grows without bound (10 MiB uploads re-encode to far less in practice).
MAX_REGISTRATION_BYTES = 16 * 1024 * 1024


def registration_groups(items: list[PreparedItem], max_jobs: int, max_bytes: int) -> list[list[PreparedItem]]:
    """`items` in order, cut as evenly as `chunks` cuts (at most `max_jobs` each), and a group
    over `max_bytes` of base64 image cut further (a group always holds at least one item)."""
    groups: list[list[PreparedItem]] = []
    for even in chunks(items, max_jobs):
        size = max_bytes + 1  # start a new group at the first item
        for item in even:
            assert item.image is not None
            weight = len(item.image.data_b64)
            if size + weight > max_bytes:
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += weight
    return groups


async def _register_group(
    gate: asyncio.Semaphore,
    context: GatewayContext,
    items: list[PreparedItem],
    principal: Principal,
    metadata: ImageMetadata,
    batch_id: str,
    idempotency_key: str | None,
    request_id: str,
) -> list[_Registered | _Failed]:
    """One reports call registers the group; each item is registered, a replay, or refused."""
    registrations = []
    for item in items:
        assert item.image is not None
        # One key per item, derived from the batch's: a replayed batch replays each job.
        key = f"{idempotency_key}:{item.index}" if idempotency_key else None
        registrations.append(job_create(principal, item.image, metadata, item.filename, key, batch_id))
    async with gate:
        try:
            results = await context.reports.create_jobs(
                registrations, tenant_id=principal.tenant_id, request_id=request_id
            )
        except DomainError as exc:
            return [_Failed(item.index, item.filename, exc) for item in items]
    outcomes: list[_Registered | _Failed] = []
    tasks: list[InferenceTask] = []
    for item, result in zip(items, results, strict=True):
        if result.job is None:
            error = result.error or ErrorDetail(code="internal", message="reports registered nothing")
            outcomes.append(
                _Failed(
                    item.index, item.filename, UpstreamError(422, error.code, error.message, error.details)
                )
            )
            continue
        assert item.image is not None
        accepted = BatchItemAccepted(index=item.index, filename=item.filename, job_id=result.job.job_id)
        if not result.replayed:
            task: InferenceTask | None = inference_task(
                result.job, principal.tenant_id, item.image, metadata, request_id
            )
        else:  # a replay queues only a job that never reached the queue
            try:
                _, task = await replay_task(
                    context, result.job, principal.tenant_id, item.image, metadata, request_id
                )
            except DomainError as exc:
                outcomes.append(_Failed(item.index, item.filename, exc))
                continue
        outcomes.append(_Registered(accepted))
        if task is not None:
            tasks.append(task)
    if tasks:
        try:
            await queue_tasks(context, tasks, request_id=request_id)
        except DomainError as exc:
            unqueued = {task.job_id for task in tasks}
            return [
                _Failed(o.item.index, o.item.filename, exc)
                if isinstance(o, _Registered) and o.item.job_id in unqueued
                else o
                for o in outcomes
            ]
    return outcomes


def _rejection(index: int, filename: str | None, error: DomainError | None) -> BatchItemRejected:
    assert error is not None
    return BatchItemRejected(
        index=index,
        filename=filename,
        error=error_detail(error),
    )


@dataclass(frozen=True)
class _Registered:
    """A good image registered as a job (and queued, unless it was a replay)."""

    item: BatchItemAccepted


@dataclass(frozen=True)
class _Failed:
    """A good image whose registration or queueing failed."""

    index: int
    filename: str | None
    error: DomainError
