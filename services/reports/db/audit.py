"""The audit trail: one append-only row per read of a report, image or heatmap, per review and
per change of a user or key (issue 12); the admins' filtered listing, and the retention purge
(the only delete there is)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from contracts.audit import AuditEventView
from contracts.users import Actor
from services.common.request_id import current_request_id
from services.reports.db.models import AuditEvent
from services.reports.domain.audit_listing import AuditFilters


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


def record_read(
    session: Session,
    *,
    tenant_id: str,
    actor: Actor | None,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record a user's read of clinical data under this request's id, and commit (a read writes
    nothing else). The fleet's own reads (workers, the dispatcher: `actor` None) are not recorded."""
    if actor is None:
        return
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=current_request_id(),
        details=details,
    )
    session.commit()


def audit_event_view(event: AuditEvent) -> AuditEventView:
    """An entry as the API shows it."""
    return AuditEventView(
        event_id=event.id,
        at=event.at,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        user_id=event.user_id,
        user_name=event.user_name,
        role=event.role,
        key_id=event.key_id,
        client_ip=event.client_ip,
        user_agent=event.user_agent,
        request_id=event.request_id,
        details=event.details,
    )


def list_audit(
    session: Session,
    tenant_id: str,
    filters: AuditFilters,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> list[AuditEvent]:
    """Up to `limit` of the tenant's entries, newest first, strictly after the cursor position
    (keyset on (at, id): ix_audit_events_tenant_at serves it)."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if filters.user_id is not None:
        stmt = stmt.where(AuditEvent.user_id == filters.user_id)
    if filters.action is not None:
        stmt = stmt.where(AuditEvent.action == filters.action)
    if filters.resource_type is not None:
        stmt = stmt.where(AuditEvent.resource_type == filters.resource_type)
    if filters.resource_id is not None:
        stmt = stmt.where(AuditEvent.resource_id == filters.resource_id)
    if filters.since is not None:
        stmt = stmt.where(AuditEvent.at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEvent.at < filters.until)
    if after is not None:
        at, event_id = after
        stmt = stmt.where(or_(AuditEvent.at < at, and_(AuditEvent.at == at, AuditEvent.id < event_id)))
    stmt = stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def purge_audit_chunk(session: Session, older_than: datetime, chunk_size: int) -> int:
    """Delete up to `chunk_size` of the oldest entries (every tenant's) made before `older_than`,
    and commit; returns how many went. Bounded so that a first purge of years of entries never
    holds one long transaction (the caller repeats while chunks come back full)."""
    ids = list(
        session.scalars(
            select(AuditEvent.id)
            .where(AuditEvent.at < older_than)
            .order_by(AuditEvent.at, AuditEvent.id)
            .limit(chunk_size)
        )
    )
    if not ids:
        session.rollback()
        return 0
    session.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids)))
    session.commit()
    return len(ids)
