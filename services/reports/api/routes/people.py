"""Issue 12: users, API keys, who am I, and the audit trail.

The gateway lets only admins reach these routes; here every change is recorded in the audit trail
in the same transaction as the change itself, naming the acting user (ActorDep).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Path, Query, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.audit import DEFAULT_AUDIT_PAGE_SIZE, MAX_AUDIT_PAGE_SIZE, AuditAction, AuditPage
from contracts.text import NO_CONTROL_CHARACTERS, IsoDatetime
from contracts.users import Actor, ApiKeyCreate, ApiKeyCreated, ApiKeyList, UserCreate, UserList, UserView
from services.common.request_id import current_request_id
from services.reports.api.deps import ActorDep, SessionDep, TenantDep, internal_router
from services.reports.db.audit import audit_event_view, list_audit, record_audit
from services.reports.db.users import (
    add_api_key,
    add_user,
    disable_user,
    get_api_key,
    get_user,
    key_created,
    key_view,
    list_tenant_keys,
    list_users,
    revoke_key,
    user_view,
)
from services.reports.domain.audit_listing import AuditFilters, decode_audit_cursor, encode_audit_cursor
from services.reports.domain.errors import ApiKeySelfError, UserExistsError, UserSelfError

router = internal_router("people")

Id = Annotated[str, Path(min_length=1, max_length=64)]
# Filter values are compared with stored columns, so they are bounded as the columns are.
FilterText = Annotated[str | None, Query(min_length=1, max_length=64, pattern=NO_CONTROL_CHARACTERS)]


def _audit(
    session: Session,
    tenant: str,
    actor: Actor | None,
    action: AuditAction,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    record_audit(
        session,
        tenant_id=tenant,
        actor=actor,
        action=action.value,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=current_request_id(),
        details=details,
    )


@router.post("/internal/v1/users", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> UserView:
    """A new user of the tenant (201); 409 user.exists when the name is taken."""
    user = add_user(session, tenant, body.name, body.role)
    _audit(
        session,
        tenant,
        actor,
        AuditAction.user_create,
        "user",
        user.id,
        {"name": user.name, "role": user.role},
    )
    try:
        session.commit()
    except IntegrityError as exc:
        # Another request created the same name between our check and our insert.
        session.rollback()
        raise UserExistsError("the tenant already has a user with this name", {"name": body.name}) from exc
    return user_view(user)


@router.get("/internal/v1/users")
def read_users(tenant: TenantDep, session: SessionDep) -> UserList:
    """The tenant's users, oldest first."""
    return UserList(items=[user_view(user) for user in list_users(session, tenant)])


@router.post("/internal/v1/users/{user_id}/disable")
def disable(user_id: Id, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> UserView:
    """Disable a user: their keys stop verifying at once (idempotent). 404 user.not_found; 409
    user.self when the acting user names themselves."""
    user = get_user(session, tenant, user_id)
    if actor is not None and actor.user_id == user.id:
        raise UserSelfError("you cannot disable yourself", {"user_id": user.id})
    if disable_user(session, user):
        _audit(session, tenant, actor, AuditAction.user_disable, "user", user.id, {"name": user.name})
        session.commit()
    return user_view(user)


@router.post("/internal/v1/users/{user_id}/api-keys", status_code=status.HTTP_201_CREATED)
def create_key(
    user_id: Id, body: ApiKeyCreate, tenant: TenantDep, session: SessionDep, actor: ActorDep
) -> ApiKeyCreated:
    """A new key for the user, shown once (201). 404 user.not_found; 409 user.disabled."""
    user = get_user(session, tenant, user_id)
    lifetime = timedelta(days=body.expires_in_days) if body.expires_in_days is not None else None
    key, raw_key = add_api_key(session, user, lifetime)
    details = {
        "user_id": user.id,
        "prefix": key.prefix,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }
    _audit(session, tenant, actor, AuditAction.key_create, "api_key", key.id, details)
    session.commit()
    return key_created(key, raw_key)


@router.get("/internal/v1/api-keys")
def read_keys(tenant: TenantDep, session: SessionDep) -> ApiKeyList:
    """The tenant's keys with their users, oldest first (never the keys themselves)."""
    return ApiKeyList(items=[key_view(key) for key in list_tenant_keys(session, tenant)])


@router.delete("/internal/v1/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_key(key_id: Id, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> Response:
    """Revoke a key (idempotent; the first revocation time is kept). 404 api_key.not_found; 409
    api_key.self for the key the acting admin is using (which would lock them out mid-session)."""
    key = get_api_key(session, tenant, key_id)
    if actor is not None and actor.key_id == key.id:
        raise ApiKeySelfError("you cannot revoke the key you are using: use another key", {"key_id": key.id})
    if revoke_key(key):
        _audit(session, tenant, actor, AuditAction.key_revoke, "api_key", key.id, {"user_id": key.user_id})
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _utc(value: datetime | None) -> datetime | None:
    """Query datetimes without an offset are taken as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.get("/internal/v1/audit")
def read_audit(
    tenant: TenantDep,
    session: SessionDep,
    actor: ActorDep,
    user_id: FilterText = None,
    action: AuditAction | None = None,
    resource_type: Annotated[
        str | None, Query(min_length=1, max_length=32, pattern=NO_CONTROL_CHARACTERS)
    ] = None,
    resource_id: FilterText = None,
    since: Annotated[IsoDatetime | None, Query(description="inclusive")] = None,
    until: Annotated[IsoDatetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE_SIZE)] = DEFAULT_AUDIT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    """The tenant's audit trail, newest first, filtered; reading it is itself recorded
    (`audit.read`, after the page is read, so a page never shows its own entry)."""
    filters = AuditFilters(
        user_id=user_id,
        action=action.value if action is not None else None,
        resource_type=resource_type,
        resource_id=resource_id,
        since=_utc(since),
        until=_utc(until),
    )
    after = decode_audit_cursor(cursor) if cursor else None
    events = list_audit(session, tenant, filters, limit + 1, after)
    next_cursor = None
    if len(events) > limit:
        events = events[:limit]
        next_cursor = encode_audit_cursor(events[-1].at, events[-1].id)
    page = AuditPage(items=[audit_event_view(event) for event in events], next_cursor=next_cursor)
    if actor is not None:
        asked = {
            name: value
            for name, value in {
                "user_id": user_id,
                "action": filters.action,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "since": filters.since.isoformat() if filters.since else None,
                "until": filters.until.isoformat() if filters.until else None,
                "cursor": bool(cursor) or None,
            }.items()
            if value is not None
        }
        _audit(
            session,
            tenant,
            actor,
            AuditAction.audit_read,
            "audit",
            None,
            {"filters": asked} if asked else None,
        )
        session.commit()
    return page
