"""Request bodies for the reports API, valid unless told otherwise."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

# The PNG signature plus an IHDR-like tail: the service checks the signature, never decodes.
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(17))
MODEL = {"name": "tiny-test", "version": "0.0.1", "sha256": "a" * 64}


def tenant_headers(tenant_id: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant_id}


def stored_image(data: bytes = PNG_BYTES) -> dict[str, Any]:
    return {
        "media_type": "image/png",
        "width": 4,
        "height": 3,
        "sha256": hashlib.sha256(data).hexdigest(),
        "data_b64": base64.b64encode(data).decode(),
    }


def job_body(tenant_id: str, job_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": job_id or f"job_{uuid.uuid4().hex}",
        "tenant_id": tenant_id,
        "metadata": {"patient_ref": "patient-1", "body_site": "back", "age": 54, "sex": "female"},
        "image": stored_image(),
        "filename": "lesion.png",
    }
    body.update(fields)
    return body


def prediction(triage_level: str = "urgent") -> dict[str, Any]:
    return {
        "probabilities": {"mel": 0.7, "nv": 0.3},
        "top_class": "mel",
        "malignant_probability": 0.7,
        "triage_level": triage_level,
        "triage_threshold": 0.5,
        "conformal_set": ["mel", "nv"],
        "conformal_coverage": 0.9,
    }


def ood(decision: str = "accepted") -> dict[str, Any]:
    return {
        "scores": {"msp": 0.7, "entropy": 0.4},
        "decision": decision,
        "rule": None if decision == "accepted" else "msp",
        "reasons": [] if decision == "accepted" else ["low confidence"],
        "thresholds": {"msp_min": 0.3, "entropy_max": 0.9},
    }


def report_body(
    tenant_id: str,
    job_id: str,
    status: str = "done",
    triage_level: str = "urgent",
    decision: str = "accepted",
    heatmap: bytes | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant_id": tenant_id,
        "status": status,
        "prediction": prediction(triage_level),
        "ood": ood(decision),
        "model": MODEL,
        "heatmap_png_b64": base64.b64encode(heatmap).decode() if heatmap is not None else None,
        "timings_ms": {"predict": 12.5},
        "error_code": None if status == "done" else "ood.rejected",
    }
