"""The opaque patient reference of a DICOM instance: a keyed hash of its PatientID per tenant.
The raw ID is never stored, logged or queued; the same patient of the same tenant always gets the
same reference (so a patient's images stay linked), and two tenants never share one."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "dicom-"
_DIGEST_CHARS = 40
_DERIVATION_LABEL = b"skintriage patient-ref key v1"


def derived_key(internal_token: str) -> bytes:
    """The key used when no GATEWAY_PATIENT_REF_KEY is set: derived from the internal token (never
    the token itself, so a leaked reference says nothing about it)."""
    return hmac.new(internal_token.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()


def dicom_patient_ref(key: bytes, tenant_id: str, patient_id: str) -> str:
    """`dicom-` + 40 hex characters of HMAC-SHA256(key, tenant id + PatientID)."""
    message = f"{tenant_id}\x00{patient_id.strip()}".encode()
    return PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()[:_DIGEST_CHARS]
