"""API-key verification for the gateway."""

from __future__ import annotations

from contracts.records import ApiKeyVerifyRequest, ApiKeyVerifyResponse
from contracts.users import Role
from services.reports.api.deps import SessionDep, internal_router
from services.reports.db.tenants import verify_api_key

router = internal_router("auth")


@router.post("/internal/v1/auth/verify")
def verify(body: ApiKeyVerifyRequest, session: SessionDep) -> ApiKeyVerifyResponse:
    """Which tenant, user and role an API key belongs to; 401 auth.invalid_api_key if unknown or revoked."""
    key = verify_api_key(session, body.api_key)
    assert key.user is not None  # verify_api_key refuses keys without one
    return ApiKeyVerifyResponse(
        tenant_id=key.tenant_id,
        key_id=key.id,
        user_id=key.user.id,
        user_name=key.user.name,
        role=Role(key.user.role),
    )
