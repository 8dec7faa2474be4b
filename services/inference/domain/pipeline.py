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
import io
import logging
import time
import warnings
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from contracts.jobs import InferenceTask, JobStatus, StoredImage
from contracts.ood import OodDecision, OodScoreRequest
from contracts.reports import ReportUpsert
from model_bundle.predictor import Predictor
from services.inference.domain.clinical import metadata_used, model_context
from services.inference.domain.errors import ImageCorruptError, ImageTooLargeError
from services.inference.domain.ports import OodClient, ReportsClient
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


def run_job(
    task: InferenceTask,
    predictor: Predictor,
    ood: OodClient,
    reports: ReportsClient,
    clock: Callable[[], float] = time.perf_counter,
) -> ReportUpsert:
    """Process one job and upsert its report; returns what was stored. Raises ImageCorruptError
    (permanent) or the clients' TransientError/PermanentError."""
    t0 = clock()
    image = decode_image(task.image)
    t_decoded = clock()
    reports.mark_running(task.job_id, tenant_id=task.tenant_id, request_id=task.request_id)
    t_marked = clock()
    raw = predictor.run([image], [model_context(task.clinical)])[0]
    t_inferred = clock()
    quality = measure_quality(image)
    t_measured = clock()
    verdict = ood.score(
        OodScoreRequest(
            model_sha256=predictor.manifest.onnx_sha256,
            logits=[float(v) for v in raw.logits],
            embedding=[float(v) for v in raw.embedding],
            tenant_id=task.tenant_id,
            quality=quality.to_wire(),
        ),
        tenant_id=task.tenant_id,
        request_id=task.request_id,
    )
    t_scored = clock()
    if verdict.decision is OodDecision.accepted:
        status = JobStatus.done
        used = metadata_used(predictor.manifest.metadata, task.clinical)
        prediction = predictor.postprocess(raw).model_copy(update={"metadata_used": used})
        width, height = image.size
        # The map and its geometry, not a PNG: the reports service renders it when first asked.
        heatmap = predictor.heatmap_source(raw, prediction.top_class, width, height)
    else:
        status, prediction, heatmap = JobStatus.rejected, None, None
    t_done = clock()
    report = ReportUpsert(
        job_id=task.job_id,
        tenant_id=task.tenant_id,
        status=status,
        prediction=prediction,
        ood=verdict,
        model=predictor.model_ref,
        heatmap=heatmap,
        timings_ms={
            "decode": _ms(t0, t_decoded),
            "inference": _ms(t_marked, t_inferred),
            "quality": _ms(t_inferred, t_measured),
            "ood": _ms(t_measured, t_scored),
            "postprocess": _ms(t_scored, t_done),
            "total": _ms(t0, t_done),
        },
    )
    reports.upsert_report(report, request_id=task.request_id)
    return report
