"""EHR integration (issue 11): signed webhooks, the FHIR endpoint results are pushed to, and the
log of every delivery (gateway <-> reports, and the public API's bodies)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from contracts.text import NO_CONTROL_CHARACTERS

MAX_URL_LENGTH = 2048
FHIR_JSON_MEDIA_TYPE = "application/fhir+json"
# Receivers get clinical data: https only, a host name or IPv4 address (so no `user:password@`;
# IPv6 literals are not taken: name the host), an optional port and path, no fragment, no
# whitespace or control characters.
RECEIVER_URL_PATTERN = r"^https://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?(/[^\s\x00-\x1f\x7f#]*)?$"


class WebhookEvent(StrEnum):
    """What a webhook endpoint can subscribe to."""

    job_finished = "job.finished"  # a job reached done, rejected or failed
    batch_finished = "batch.finished"  # every job of a batch reached one of those


class DeliveryKind(StrEnum):
    """Where a delivery goes: a tenant's webhook endpoint, or its FHIR server."""

    webhook = "webhook"
    fhir = "fhir"


class DeliveryStatus(StrEnum):
    """pending (waiting for its next attempt) -> delivered | failed (given up; can be replayed)."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"


# A subject is a job for `job.finished` and FHIR pushes, a batch for `batch.finished`.
FHIR_PUSH_EVENT = "fhir.push"


class WebhookCreate(BaseModel):
    """A new webhook endpoint: an HTTPS URL and the events it receives."""

    url: str = Field(max_length=MAX_URL_LENGTH, pattern=RECEIVER_URL_PATTERN, description="https:// only")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WebhookEvent))
    description: str | None = Field(default=None, max_length=256, pattern=NO_CONTROL_CHARACTERS)


class WebhookView(BaseModel):
    """A webhook endpoint as listed (its secret is shown once, when made or rotated)."""

    webhook_id: str
    url: str
    events: list[WebhookEvent]
    description: str | None = None
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        default=None,
        description="until then, deliveries are signed with the previous secret too (a rotation's overlap)",
    )


class WebhookSecret(BaseModel):
    """A signing secret, shown once (Standard Webhooks: `whsec_` + base64 of 32 random bytes)."""

    webhook_id: str
    secret: str
    previous_secret_expires_at: datetime | None = None


class WebhookCreated(WebhookView):
    """A new endpoint with its secret, which is never shown again."""

    secret: str


class WebhookList(BaseModel):
    """A tenant's webhook endpoints, oldest first."""

    items: list[WebhookView]


SigningAlgorithm = Literal["RS384", "ES384"]


class FhirEndpointConfig(BaseModel):
    """Where finished jobs' transaction bundles are POSTed, and how SkinTriage authenticates there:
    SMART Backend Services (OAuth2 client credentials with a `private_key_jwt` client assertion).
    The key pair is made by SkinTriage; register the public JWKS with the EHR's authorisation server."""

    base_url: str = Field(
        max_length=MAX_URL_LENGTH, pattern=RECEIVER_URL_PATTERN, description="FHIR base URL (https://)"
    )
    token_url: str = Field(
        max_length=MAX_URL_LENGTH, pattern=RECEIVER_URL_PATTERN, description="OAuth2 token URL (https://)"
    )
    client_id: str = Field(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)
    scope: str = Field(
        default="system/DiagnosticReport.c system/Observation.c system/Media.c system/Device.c "
        "system/Provenance.c",
        min_length=1,
        max_length=1024,
        pattern=NO_CONTROL_CHARACTERS,
    )
    algorithm: SigningAlgorithm = "ES384"
    rotate_key: bool = Field(
        default=False, strict=True, description="make a new key pair (the old one stops working)"
    )


class FhirEndpointView(BaseModel):
    """The tenant's FHIR endpoint and the public key set to register with its authorisation server."""

    base_url: str
    token_url: str
    client_id: str
    scope: str
    algorithm: SigningAlgorithm
    key_id: str
    jwks: dict[str, list[dict[str, str]]]
    created_at: datetime
    updated_at: datetime


class DeliveryView(BaseModel):
    """One delivery and how it went."""

    delivery_id: str
    kind: DeliveryKind
    event: str
    status: DeliveryStatus
    webhook_id: str | None = None
    job_id: str | None = None
    batch_id: str | None = None
    attempts: int
    last_status_code: int | None = Field(default=None, description="the receiver's last HTTP status")
    last_error: str | None = Field(default=None, description="why the last attempt failed")
    created_at: datetime
    next_attempt_at: datetime | None = Field(default=None, description="while pending")
    delivered_at: datetime | None = None
    give_up_at: datetime


class DeliveryList(BaseModel):
    """Deliveries, newest first."""

    items: list[DeliveryView]
