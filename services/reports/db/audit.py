"""The audit trail: one append-only row per read of a report, image or heatmap, per review and
per change of a user or key (issue 12)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from contracts.users import Actor
from services.reports.db.models import AuditEvent


def record_audit(
    session: Session,
    *,
    tenant_id: str,
    actor: Actor | None,
    action: str,
    resource_type: str,
    resource_id: str | None,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an entry to the session (the caller commits, in the same transaction as the write it
    records, so a write is never kept without its entry). `actor` None: the fleet itself or an
    operator's CLI."""
    event = AuditEvent(
        tenant_id=tenant_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        user_id=actor.user_id if actor else None,
        user_name=actor.user_name if actor else None,
        role=actor.role.value if actor else None,
        key_id=actor.key_id if actor else None,
        client_ip=actor.client_ip if actor else None,
        user_agent=actor.user_agent if actor else None,
        request_id=request_id,
        details=details,
    )
    session.add(event)
    return event
