"""Checks on what the gateway and the worker send, beyond what their schemas can express."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math

from contracts.jobs import StoredImage
from contracts.reports import HeatmapSource, ReportUpsert
from services.reports.domain.errors import ImageInvalidError, ReportInvalidError
from services.reports.domain.lifecycle import REPORT_STATUSES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRIAGE_LEVELS = frozenset({"urgent", "routine", "monitor"})


def _b64decode(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def decode_image(image: StoredImage) -> bytes:
    """The image's bytes, checked against the sha256 the gateway computed when re-encoding."""
    try:
        raw = _b64decode(image.data_b64)
    except (binascii.Error, ValueError) as exc:
        raise ImageInvalidError("image data is not valid base64") from exc
    if not raw:
        raise ImageInvalidError("image data is empty")
    if hashlib.sha256(raw).hexdigest() != image.sha256.lower():
        raise ImageInvalidError("image data does not match its sha256")
    return raw


def check_heatmap_source(source: HeatmapSource) -> None:
    """Reject a map that could not be rendered later: bad base64 or not rows x cols bytes."""
    try:
        cells = len(_b64decode(source.cam_u8_b64))
    except (binascii.Error, ValueError) as exc:
        raise ReportInvalidError("heatmap map is not valid base64") from exc
    if cells != source.rows * source.cols:
        raise ReportInvalidError(
            "heatmap map does not have rows x cols bytes",
            details={"rows": source.rows, "cols": source.cols, "bytes": cells},
        )


def check_report(report: ReportUpsert) -> bytes | None:
    """Reject a report that cannot be shown consistently; return the decoded heatmap PNG, if the
    worker sent one ready-made (a `heatmap` source is checked and stored as it is)."""
    if report.status not in REPORT_STATUSES:
        raise ReportInvalidError(
            "a report's status must be done or rejected", details={"status": report.status.value}
        )
    if report.status == "done":
        if report.prediction is None:
            raise ReportInvalidError("a done report needs a prediction")
        if report.prediction.triage_level not in TRIAGE_LEVELS:
            raise ReportInvalidError(
                "unknown triage level", details={"triage_level": report.prediction.triage_level}
            )
    if report.heatmap is not None:
        check_heatmap_source(report.heatmap)
    check_comparison_fields(report)
    if report.heatmap_png_b64 is None:
        return None
    try:
        heatmap = _b64decode(report.heatmap_png_b64)
    except (binascii.Error, ValueError) as exc:
        raise ReportInvalidError("heatmap is not valid base64") from exc
    if not heatmap.startswith(PNG_SIGNATURE):
        raise ReportInvalidError("heatmap is not a PNG")
    return heatmap


# Issue 12: a pooled embedding has at least this many and at most this many values (float16).
MIN_EMBEDDING_VALUES = 8
MAX_EMBEDDING_VALUES = 6144


def decode_embedding(data_b64: str) -> bytes:
    """The embedding's float16 bytes (little-endian), checked for a sane length; ReportInvalidError
    otherwise."""
    try:
        raw = _b64decode(data_b64)
    except (binascii.Error, ValueError) as exc:
        raise ReportInvalidError("embedding is not valid base64") from exc
    values, odd = divmod(len(raw), 2)
    if odd or not MIN_EMBEDDING_VALUES <= values <= MAX_EMBEDDING_VALUES:
        raise ReportInvalidError(
            "embedding must be float16 values of a sane count",
            details={
                "bytes": len(raw),
                "min_values": MIN_EMBEDDING_VALUES,
                "max_values": MAX_EMBEDDING_VALUES,
            },
        )
    return raw


def check_comparison_fields(report: ReportUpsert) -> None:
    """Reject an embedding or lesion area that a comparison could not use."""
    if report.embedding_f16_b64 is not None:
        decode_embedding(report.embedding_f16_b64)
    area = report.lesion_area_fraction
    if area is not None and not (math.isfinite(area) and 0.0 <= area <= 1.0):
        raise ReportInvalidError("lesion_area_fraction must be in [0, 1]")
