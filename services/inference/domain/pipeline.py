"""One job, start to finish: decode -> mark running -> predict -> quality -> OOD verdict -> report
upsert.

Rejected images: when the OOD service rejects an image (`rejected_ood` or `rejected_quality`)
the report has status `rejected`, carries the OOD verdict with every score, and has
`prediction=None` and no heatmap, so no triage level exists anywhere for the dashboard or the
API to show. The model's output for such an image is not a result: it is only kept implicitly
through the OOD scores (MSP, entropy, energy) that explain the rejection.

Clinical metadata: the task's `clinical` part (age, sex, body site; never identifiers) is given
to the model with the image. A bundle that fuses it encodes it, an image-only bundle ignores it,
and the prediction records the fields the model actually used (`Prediction.metadata_used`).

Idempotent on the job id: the report is written with PUT to the job's URL, so a redelivered
task replaces the same report instead of adding a second one.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import functools
import io
import logging
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from contracts.jobs import InferenceTask, JobStatus, StoredImage
from contracts.ood import OodDecision, OodScoreRequest, OodScoreResponse
from contracts.reports import JobFailure, JobView, ReportUpsert
from model_bundle.predictor import Predictor, RawOutput
from model_bundle.segmentation import segment_lesion
from services.inference.domain.clinical import metadata_used, model_context
from services.inference.domain.errors import ImageCorruptError, ImageTooLargeError
from services.inference.domain.ports import OodClient, ReportsClient, RunClaim
from services.inference.domain.quality import measure_quality

log = logging.getLogger("services.inference.pipeline")

_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}


def decode_image(stored: StoredImage) -> Image.Image:
    """The stored image as a fully loaded RGB PIL image; ImageCorruptError if it is not one."""
    try:
        data = base64.b64decode(stored.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageCorruptError("image data is not valid base64") from exc
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; treat that as too large too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format != _FORMATS[stored.media_type]:
                    raise ImageCorruptError(
                        "image bytes do not match the declared media type",
                        {"media_type": stored.media_type, "format": img.format},
                    )
                img.load()
                rgb = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError("image has too many pixels to decode safely") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageCorruptError("image cannot be decoded") from exc
    if rgb.size != (stored.width, stored.height):
        log.warning(
            "image.size_mismatch",
            extra={"declared": [stored.width, stored.height], "decoded": list(rgb.size)},
        )
    return rgb


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000.0, 2)


def _report(
    task: InferenceTask,
    predictor: Predictor,
    raw: RawOutput,
    image: Image.Image,
    verdict: OodScoreResponse,
    timings_ms: dict[str, float],
) -> ReportUpsert:
    """The job's report: prediction and heatmap source when OOD accepted the image, else only the
    verdict (a rejected image has no triage level anywhere)."""
    if verdict.decision is OodDecision.accepted:
        status = JobStatus.done
        used = metadata_used(predictor.manifest.metadata, task.clinical)
        prediction = predictor.postprocess(raw).model_copy(update={"metadata_used": used})
        width, height = image.size
        # The map and its geometry, not a PNG: the reports service renders it when first asked.
        heatmap = predictor.heatmap_source(raw, prediction.top_class, width, height)
        # Issue 12: what comparing this image with other images of its lesion needs; only for an
        # image of a tracked lesion (the segmentation is a third of a worker's time per image).
        embedding: str | None = embedding_f16_b64(raw) if task.track_lesion else None
        area: float | None = segment_lesion(image).area_fraction if task.track_lesion else None
    else:
        status, prediction, heatmap, embedding, area = JobStatus.rejected, None, None, None, None
    return ReportUpsert(
        job_id=task.job_id,
        tenant_id=task.tenant_id,
        status=status,
        prediction=prediction,
        ood=verdict,
        model=predictor.model_ref,
        heatmap=heatmap,
        timings_ms=timings_ms,
        embedding_f16_b64=embedding,
        lesion_area_fraction=area,
        return_job=task.awaited,
    )


def embedding_f16_b64(raw: RawOutput) -> str:
    """The pooled embedding as base64 of little-endian float16 (half the bytes of float32; cosine
    distances between such embeddings differ from float32's by 4e-5 at most on HAM10000 images)."""
    return base64.b64encode(raw.embedding.astype("<f2").tobytes()).decode("ascii")


def _ood_request(
    task: InferenceTask, predictor: Predictor, raw: RawOutput, image: Image.Image
) -> OodScoreRequest:
    return OodScoreRequest(
        model_sha256=predictor.manifest.onnx_sha256,
        logits=[float(v) for v in raw.logits],
        embedding=[float(v) for v in raw.embedding],
        tenant_id=task.tenant_id,
        quality=measure_quality(image).to_wire(),
    )


@functools.cache
def _claim_thread() -> ThreadPoolExecutor:
    """This process's thread for the mark-running call, made on first use (so in each prefork
    child, after the fork: threads do not survive one)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-claim")


def _claim_meanwhile(
    reports: ReportsClient, job_ids: list[str], tenant_id: str, request_id: str | None, runner: str | None
) -> Future[RunClaim]:
    """Mark the jobs running from another thread while this one runs the model (ONNX Runtime
    releases the GIL): the round trip to reports no longer adds to a job's latency. A job the
    claim says is finished or held elsewhere has its model output dropped, unused, as before it
    was never computed; only a redelivery (rare) pays for that."""
    context = contextvars.copy_context()  # the request id, for the client's log lines
    return _claim_thread().submit(
        context.run,
        reports.mark_many_running,
        job_ids,
        tenant_id=tenant_id,
        request_id=request_id,
        runner=runner,
    )


def run_job(
    task: InferenceTask,
    predictor: Predictor,
    ood: OodClient,
    reports: ReportsClient,
    clock: Callable[[], float] = time.perf_counter,
    runner: str | None = None,
) -> ReportUpsert:
    """Process one job and upsert its report; returns what was stored. Raises ImageCorruptError
    (permanent) or the clients' TransientError/PermanentError."""
    return run_job_stored(task, predictor, ood, reports, clock, runner)[0]


def run_job_stored(
    task: InferenceTask,
    predictor: Predictor,
    ood: OodClient,
    reports: ReportsClient,
    clock: Callable[[], float] = time.perf_counter,
    runner: str | None = None,
) -> tuple[ReportUpsert, JobView | None]:
    """As `run_job`, also returning the job as reports answered it once stored (for the
    job-finished notification, which then carries the result)."""
    t0 = clock()
    image = decode_image(task.image)
    t_decoded = clock()
    claiming = _claim_meanwhile(reports, [task.job_id], task.tenant_id, task.request_id, runner)
    raw = predictor.run([image], [model_context(task.clinical)])[0]
    t_inferred = clock()
    claim = claiming.result()
    if (current := claim.finished.get(task.job_id)) is not None:
        # A redelivered task (a worker died after finishing, a visibility timeout, the sweeper):
        # run it again never; the first result, or the failure the client was told, stands.
        raise AlreadyFinishedError(task.job_id, current)
    if task.job_id in claim.busy:
        raise AlreadyRunningError(task.job_id)
    t_claimed = clock()
    request = _ood_request(task, predictor, raw, image)
    t_measured = clock()
    verdict = ood.score(request, tenant_id=task.tenant_id, request_id=task.request_id)
    t_scored = clock()
    timings = {
        "decode": _ms(t0, t_decoded),
        "inference": _ms(t_decoded, t_inferred),
        "claim_wait": _ms(t_inferred, t_claimed),  # what the mark-running call added after the model
        "quality": _ms(t_claimed, t_measured),
        "ood": _ms(t_measured, t_scored),
    }
    report = _report(task, predictor, raw, image, verdict, timings)
    t_done = clock()
    report.timings_ms.update(postprocess=_ms(t_scored, t_done), total=_ms(t0, t_done))
    stored = reports.upsert_report(report, request_id=task.request_id)
    return report, stored


class AlreadyFinishedError(Exception):
    """The job already has its result (a redelivered task): nothing is run or written."""

    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} is already {status.value}")
        self.job_id, self.status = job_id, status


class AlreadyRunningError(Exception):
    """Another message for the job holds its live lease (a retry of it waiting in a worker when
    the sweeper re-published it): that runner runs it, this one leaves it alone."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is being run by another task")
        self.job_id = job_id


@dataclass(frozen=True)
class JobOutcome:
    """How one job of a micro-batch ended: done, rejected, or failed with an error code."""

    job_id: str
    status: JobStatus
    error_code: str | None = None
    job: JobView | None = None  # as stored, when a request waits for it (`InferenceTask.awaited`)


def _fail(reports: ReportsClient, task: InferenceTask, code: str, message: str) -> JobOutcome:
    """Record one job of a micro-batch as failed (its neighbours go on)."""
    failure = JobFailure(job_id=task.job_id, tenant_id=task.tenant_id, error_code=code, message=message)
    reports.fail_job(failure, request_id=task.request_id)
    log.warning("job.failed_in_chunk", extra={"job_id": task.job_id, "error_code": code})
    return JobOutcome(task.job_id, JobStatus.failed, code)


def run_chunk(
    tasks: list[InferenceTask],
    predictor: Predictor,
    ood: OodClient,
    reports: ReportsClient,
    clock: Callable[[], float] = time.perf_counter,
    runner: str | None = None,
) -> list[JobOutcome]:
    """Process a micro-batch of one tenant's jobs under `runner`'s lease: one mark-running call,
    the model (image by image, while reports marks them running), one OOD call and one reports
    write for all of them, with an outcome per job except those another runner holds (in
    `tasks`' order). A job that cannot be decoded, or
    that OOD or reports refuse, fails alone; a transient failure of a service raises, and the
    whole micro-batch is retried (every write is idempotent on the job id). Each report's timings
    are the micro-batch's, divided per job."""
    tenant_id, request_id = tasks[0].tenant_id, tasks[0].request_id
    outcomes: dict[str, JobOutcome] = {}
    t0 = clock()
    decoded: list[tuple[InferenceTask, Image.Image]] = []
    for task in tasks:
        try:
            decoded.append((task, decode_image(task.image)))
        except (ImageCorruptError, ImageTooLargeError) as exc:
            outcomes[task.job_id] = _fail(reports, task, exc.code, exc.message)
    t_decoded = clock()
    if not decoded:
        return [outcomes[task.job_id] for task in tasks if task.job_id in outcomes]
    claiming = _claim_meanwhile(reports, [task.job_id for task, _ in decoded], tenant_id, request_id, runner)
    # Image by image: on these CPUs ONNX Runtime takes 6.1 ms per image at batch 1 against 6.7 at
    # batch 8 (one thread), and each job gets exactly the numbers it would get alone.
    all_raws = [predictor.run([image], [model_context(task.clinical)])[0] for task, image in decoded]
    t_inferred = clock()
    claim = claiming.result()
    t_claimed = clock()
    for job_id, status in claim.finished.items():  # redelivered: their first result stands
        outcomes[job_id] = JobOutcome(job_id, status)
    # Another task holds these (two messages for one job): it runs them, this one skips them.
    claimed = [
        (pair, raw)
        for pair, raw in zip(decoded, all_raws, strict=True)
        if pair[0].job_id not in claim.finished and pair[0].job_id not in claim.busy
    ]
    if not claimed:
        return [outcomes[task.job_id] for task in tasks if task.job_id in outcomes]
    decoded, raws = [pair for pair, _ in claimed], [raw for _, raw in claimed]
    requests = [
        _ood_request(task, predictor, raw, image) for (task, image), raw in zip(decoded, raws, strict=True)
    ]
    t_measured = clock()
    verdicts = ood.score_many(requests, tenant_id=tenant_id, request_id=request_id)
    t_scored = clock()
    n = len(decoded)
    timings = {
        "decode": _ms(t0, t_decoded) / n,
        "inference": _ms(t_decoded, t_inferred) / n,
        "claim_wait": _ms(t_inferred, t_claimed) / n,
        "quality": _ms(t_claimed, t_measured) / n,
        "ood": _ms(t_measured, t_scored) / n,
        "chunk_jobs": float(len(tasks)),
    }
    upserts = []
    for (task, image), raw, item in zip(decoded, raws, verdicts, strict=True):
        if item.verdict is None:
            error = item.error
            code, message = (error.code, error.message) if error else ("internal", "no verdict")
            outcomes[task.job_id] = _fail(reports, task, code, message)
            continue
        upserts.append(_report(task, predictor, raw, image, item.verdict, dict(timings)))
    if upserts:
        t_built = clock()
        for report in upserts:
            report.timings_ms.update(postprocess=_ms(t_scored, t_built) / len(upserts))
        stored = reports.upsert_reports(upserts, tenant_id=tenant_id, request_id=request_id)
        by_id = {task.job_id: task for task in tasks}
        for report, result in zip(upserts, stored, strict=True):
            if result.error is None:
                outcomes[report.job_id] = JobOutcome(report.job_id, report.status, job=result.job)
            else:
                task = by_id[report.job_id]
                outcomes[report.job_id] = _fail(reports, task, result.error.code, result.error.message)
    return [outcomes[task.job_id] for task in tasks if task.job_id in outcomes]
