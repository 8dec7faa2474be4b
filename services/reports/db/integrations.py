"""A tenant's webhook endpoints and FHIR endpoint: made, listed, rotated, removed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.audit import AuditAction
from contracts.integrations import (
    FhirEndpointConfig,
    FhirEndpointView,
    WebhookCreate,
    WebhookCreated,
    WebhookSecret,
    WebhookView,
)
from contracts.users import Actor
from services.common.request_id import current_request_id
from services.reports.db.audit import record_audit
from services.reports.db.models import FhirEndpoint, WebhookEndpoint
from services.reports.domain.errors import FhirEndpointNotFoundError, WebhookNotFoundError
from services.reports.domain.smart_auth import SigningKey, new_signing_key, public_jwks
from services.reports.domain.webhook_signing import new_secret


def webhook_view(endpoint: WebhookEndpoint, now: datetime) -> WebhookView:
    """An endpoint as listed; a rotation's overlap shows only while it lasts."""
    overlap = endpoint.previous_secret_expires_at
    return WebhookView(
        webhook_id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,  # type: ignore[arg-type]  # validated into WebhookEvent
        description=endpoint.description,
        created_at=endpoint.created_at,
        previous_secret_expires_at=overlap if overlap is not None and overlap > now else None,
    )


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one during a
    rotation's overlap (receivers that have not switched yet still verify)."""
    active = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and expires > now:
        active.append(endpoint.previous_secret)
    return active


def audit_write(
    session: Session,
    tenant_id: str,
    actor: Actor | None,
    action: AuditAction,
    resource: tuple[str, str],
    details: dict[str, object] | None = None,
) -> None:
    """The audit entry of an integration change (`resource`: type and id), added before the change
    commits, so both are kept or neither."""
    resource_type, resource_id = resource
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=action.value,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=current_request_id(),
        details=dict(details) if details else None,
    )


def create_webhook(
    session: Session, tenant_id: str, body: WebhookCreate, now: datetime, actor: Actor | None = None
) -> WebhookCreated:
    """A new endpoint and its secret (shown this once; the URL is https, `WebhookCreate` says so),
    audited `webhook.create`."""
    endpoint = WebhookEndpoint(
        id=f"wh_{uuid.uuid4().hex}",
        tenant_id=tenant_id,
        url=body.url,
        events=sorted({event.value for event in body.events}),
        description=body.description,
        secret=new_secret(),
        created_at=now,
    )
    session.add(endpoint)
    audit_write(session, tenant_id, actor, AuditAction.webhook_create, ("webhook", endpoint.id))
    session.commit()
    return WebhookCreated(**webhook_view(endpoint, now).model_dump(), secret=endpoint.secret)


def get_webhook(session: Session, tenant_id: str, webhook_id: str) -> WebhookEndpoint:
    """The tenant's live endpoint, or WebhookNotFoundError."""
    endpoint = session.get(WebhookEndpoint, webhook_id)
    if endpoint is None or endpoint.tenant_id != tenant_id or endpoint.removed_at is not None:
        raise WebhookNotFoundError("no such webhook endpoint", details={"webhook_id": webhook_id})
    return endpoint


def list_webhooks(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    """The tenant's live endpoints, oldest first."""
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.removed_at.is_(None))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    )


def rotate_webhook_secret(
    session: Session,
    tenant_id: str,
    webhook_id: str,
    now: datetime,
    overlap: timedelta,
    actor: Actor | None = None,
) -> WebhookSecret:
    """A new current secret; the old one keeps signing for `overlap` (two active secrets).
    Audited `webhook.rotate_secret`."""
    endpoint = get_webhook(session, tenant_id, webhook_id)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + overlap
    endpoint.secret = new_secret()
    audit_write(session, tenant_id, actor, AuditAction.webhook_rotate_secret, ("webhook", endpoint.id))
    session.commit()
    return WebhookSecret(
        webhook_id=endpoint.id,
        secret=endpoint.secret,
        previous_secret_expires_at=endpoint.previous_secret_expires_at if overlap > timedelta(0) else None,
    )


def remove_webhook(
    session: Session, tenant_id: str, webhook_id: str, now: datetime, actor: Actor | None = None
) -> None:
    """No new deliveries to it (pending ones fail `webhook.removed` when their turn comes).
    Audited `webhook.remove`."""
    endpoint = get_webhook(session, tenant_id, webhook_id)
    endpoint.removed_at = now
    audit_write(session, tenant_id, actor, AuditAction.webhook_remove, ("webhook", endpoint.id))
    session.commit()


def signing_key(endpoint: FhirEndpoint) -> SigningKey:
    """The endpoint's SMART Backend Services key."""
    return SigningKey(endpoint.algorithm, endpoint.key_id, endpoint.private_key_pem)


def fhir_endpoint_view(endpoint: FhirEndpoint) -> FhirEndpointView:
    """The endpoint with its public JWKS (never the private key)."""
    return FhirEndpointView(
        base_url=endpoint.base_url,
        token_url=endpoint.token_url,
        client_id=endpoint.client_id,
        scope=endpoint.scope,
        algorithm=endpoint.algorithm,  # type: ignore[arg-type]  # written from SigningAlgorithm
        key_id=endpoint.key_id,
        jwks=public_jwks(signing_key(endpoint)),
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def get_fhir_endpoint(session: Session, tenant_id: str) -> FhirEndpoint:
    """The tenant's FHIR endpoint, or FhirEndpointNotFoundError."""
    endpoint = session.get(FhirEndpoint, tenant_id)
    if endpoint is None:
        raise FhirEndpointNotFoundError("no FHIR endpoint is configured", details={"tenant_id": tenant_id})
    return endpoint


def put_fhir_endpoint(
    session: Session, tenant_id: str, body: FhirEndpointConfig, now: datetime, actor: Actor | None = None
) -> tuple[FhirEndpoint, bool]:
    """Set the tenant's FHIR endpoint (flag: newly made). A key pair is made the first time, when
    the algorithm changes, or when asked (`rotate_key`); otherwise the registered key stays.
    Audited `fhir_endpoint.update` (details: whether the key changed)."""
    endpoint = session.get(FhirEndpoint, tenant_id)
    created = endpoint is None
    if endpoint is None:
        endpoint = FhirEndpoint(tenant_id=tenant_id, created_at=now)
        session.add(endpoint)
    new_key = created or body.rotate_key or endpoint.algorithm != body.algorithm
    if new_key:
        key = new_signing_key(body.algorithm)
        endpoint.algorithm, endpoint.key_id, endpoint.private_key_pem = (
            key.algorithm,
            key.key_id,
            key.private_key_pem,
        )
    endpoint.base_url = body.base_url
    endpoint.token_url = body.token_url
    endpoint.client_id = body.client_id
    endpoint.scope = body.scope
    endpoint.updated_at = now
    audit_write(
        session,
        tenant_id,
        actor,
        AuditAction.fhir_endpoint_update,
        ("fhir_endpoint", tenant_id),
        {"created": created, "new_key": new_key, "base_url": body.base_url},
    )
    session.commit()
    return endpoint, created


def remove_fhir_endpoint(session: Session, tenant_id: str, actor: Actor | None = None) -> None:
    """No more pushes (pending ones fail `fhir_endpoint.removed` when their turn comes). Audited
    `fhir_endpoint.remove`."""
    session.delete(get_fhir_endpoint(session, tenant_id))
    audit_write(session, tenant_id, actor, AuditAction.fhir_endpoint_remove, ("fhir_endpoint", tenant_id))
    session.commit()
