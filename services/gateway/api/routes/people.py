"""Issue 12: users, API keys, who am I, and the audit trail.

Everything but `GET /v1/me` is an admin's (403 `auth.forbidden` otherwise). Reports records each
change in the tenant's audit trail, naming the acting admin; this gateway forgets a revoked key, or
a disabled user's keys, at once (other replicas within their key-cache TTL).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from contracts.audit import DEFAULT_AUDIT_PAGE_SIZE, MAX_AUDIT_PAGE_SIZE, AuditAction, AuditPage
from contracts.text import NO_CONTROL_CHARACTERS, IsoDatetime
from contracts.users import ApiKeyCreate, ApiKeyCreated, ApiKeyList, Me, UserCreate, UserList, UserView
from services.gateway.api.deps import ID_PATTERN, AdminDep, ContextDep, PrincipalDep, RequestIdDep
from services.gateway.api.responses import api_key_route

router = APIRouter(tags=["people"])

UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a user id")]
KeyIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="an API key id")]
AuditFilterText = Annotated[str | None, Query(min_length=1, max_length=64, pattern=NO_CONTROL_CHARACTERS)]


@router.get(
    "/v1/me",
    response_model=Me,
    summary="Who the API key belongs to: the user, their role and tenant",
    responses=api_key_route(),
)
async def read_me(principal: PrincipalDep) -> Me:
    """The caller (any role)."""
    return Me(
        user_id=principal.user_id,
        name=principal.user_name,
        role=principal.role,
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
    )


@router.post(
    "/v1/users",
    response_model=UserView,
    status_code=status.HTTP_201_CREATED,
    summary="Add a user to the tenant (admin)",
    description="A `clinician` reads, reviews and signs off; an `integrator` (an EHR or script, API "
    "only) submits, reads and manages webhooks and the FHIR endpoint; an `admin` manages users, keys, "
    "integrations, the next steps, and reads the audit trail and monitoring. The user gets no key: "
    "make one with `POST /v1/users/{user_id}/api-keys`. 409 `user.exists` when the name is taken.",
    # 400 `request.malformed`: a body that is not JSON.
    responses=api_key_route(400, 403, 409),
)
async def create_user(
    body: UserCreate, context: ContextDep, principal: AdminDep, request_id: RequestIdDep
) -> UserView:
    """The new user."""
    return await context.reports.create_user(principal.tenant_id, body, request_id=request_id)


@router.get(
    "/v1/users",
    response_model=UserList,
    summary="The tenant's users, oldest first (admin)",
    responses=api_key_route(403),
)
async def list_users(context: ContextDep, principal: AdminDep, request_id: RequestIdDep) -> UserList:
    """Every user, disabled ones included (`disabled_at` set)."""
    return await context.reports.list_users(principal.tenant_id, request_id=request_id)


@router.post(
    "/v1/users/{user_id}/disable",
    response_model=UserView,
    summary="Disable a user: every key of theirs stops working (admin)",
    description="Users are never deleted (reviews and the audit trail name them). Idempotent: the first "
    "`disabled_at` is kept. 404 `user.not_found` (another tenant's user too); 409 `user.self` for "
    "the caller themselves.",
    responses=api_key_route(403, 404, 409),
)
async def disable_user(
    user_id: UserIdPath, context: ContextDep, principal: AdminDep, request_id: RequestIdDep
) -> UserView:
    """The user, disabled."""
    user = await context.reports.disable_user(principal.tenant_id, user_id, request_id=request_id)
    context.auth_cache.forget_user(user.user_id)
    return user


@router.post(
    "/v1/users/{user_id}/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Make an API key for a user; the key is shown once (admin)",
    description="Only the key's sha256 is stored: `api_key` is in this answer and nowhere else. "
    "`expires_in_days` (up to 3650) ends its validity; null = until revoked. 404 `user.not_found`; "
    "409 `user.disabled`.",
    # 400 `request.malformed`: a body that is not JSON.
    responses=api_key_route(400, 403, 404, 409),
)
async def create_api_key(
    user_id: UserIdPath,
    context: ContextDep,
    principal: AdminDep,
    request_id: RequestIdDep,
    body: ApiKeyCreate | None = None,
) -> ApiKeyCreated:
    """The new key."""
    return await context.reports.create_user_api_key(
        principal.tenant_id, user_id, body or ApiKeyCreate(), request_id=request_id
    )


@router.get(
    "/v1/api-keys",
    response_model=ApiKeyList,
    summary="The tenant's API keys, oldest first (admin)",
    description="Each key's non-secret prefix, its user and role, and when it was made, revoked, "
    "expires and was last used (to the minute). Never the keys themselves.",
    responses=api_key_route(403),
)
async def list_api_keys(context: ContextDep, principal: AdminDep, request_id: RequestIdDep) -> ApiKeyList:
    """Every key, revoked ones included."""
    return await context.reports.list_api_keys(principal.tenant_id, request_id=request_id)


@router.delete(
    "/v1/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API key (admin)",
    description="Refused at once by this gateway; other replicas refuse it within their key-cache TTL "
    "(`GATEWAY_AUTH_CACHE_SECONDS`). Idempotent. 404 `api_key.not_found`; 409 `api_key.self` for the "
    "key this request is made with (revoke it with another key).",
    responses=api_key_route(403, 404, 409),
)
async def revoke_api_key(
    key_id: KeyIdPath, context: ContextDep, principal: AdminDep, request_id: RequestIdDep
) -> Response:
    """The key no longer works."""
    await context.reports.revoke_api_key(principal.tenant_id, key_id, request_id=request_id)
    context.auth_cache.forget_key(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/audit",
    response_model=AuditPage,
    summary="The tenant's audit trail, newest first (admin)",
    description="Who (user, role, key) did what (`action` on a resource), when, and from where "
    "(client address, user agent, request id): every read of a report, image, heatmap, FHIR bundle "
    "or PDF, every worklist page, review, lesion write, user and key change and next-steps change. "
    "Entries are never changed or deleted through the API; they are purged past the retention "
    "period (`REPORTS_AUDIT_RETENTION_DAYS`). Reading the trail is itself recorded (`audit.read`). "
    "`since` inclusive, `until` exclusive (ISO 8601; UTC when no offset); `cursor` is the previous "
    "page's `next_cursor` (400 `cursor.invalid` otherwise).",
    responses=api_key_route(400, 403),
)
async def list_audit(
    context: ContextDep,
    principal: AdminDep,
    request_id: RequestIdDep,
    user_id: AuditFilterText = None,
    action: AuditAction | None = None,
    resource_type: Annotated[
        str | None, Query(min_length=1, max_length=32, pattern=NO_CONTROL_CHARACTERS)
    ] = None,
    resource_id: AuditFilterText = None,
    since: Annotated[IsoDatetime | None, Query(description="inclusive")] = None,
    until: Annotated[IsoDatetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE_SIZE)] = DEFAULT_AUDIT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> AuditPage:
    """A page of entries."""
    given = {
        "user_id": user_id,
        "action": action.value if action is not None else None,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "since": since.isoformat() if since is not None else None,
        "until": until.isoformat() if until is not None else None,
        "limit": str(limit),
        "cursor": cursor,
    }
    filters = {name: value for name, value in given.items() if value is not None}
    return await context.reports.list_audit(principal.tenant_id, filters, request_id=request_id)
