"""Tenants, their users and the users' API keys."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from contracts.users import Role
from services.reports.db.models import ApiKey, Tenant, User
from services.reports.db.types import utc_now
from services.reports.domain.api_keys import (
    display_prefix,
    generate_api_key,
    hash_api_key,
    new_key_id,
    new_tenant_id,
    new_user_id,
)
from services.reports.domain.errors import InvalidApiKeyError, TenantNotFoundError

LAST_USED_RESOLUTION = timedelta(minutes=1)
# The user a key acts as when it is made without naming one (the CLI's default, and what keys
# made before users became: migration 0007).
DEFAULT_ADMIN_NAME = "admin"


def require_tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant with this id, or TenantNotFoundError."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise TenantNotFoundError("unknown tenant")
    return tenant


def find_tenant(session: Session, name: str) -> Tenant | None:
    """The tenant with this name, if any."""
    return session.scalar(select(Tenant).where(Tenant.name == name))


def get_or_create_tenant(session: Session, name: str) -> tuple[Tenant, bool]:
    """The tenant named `name`, created if needed; the flag says whether it was created."""
    tenant = find_tenant(session, name)
    if tenant is not None:
        return tenant, False
    tenant = Tenant(id=new_tenant_id(), name=name)
    session.add(tenant)
    try:
        session.commit()
    except IntegrityError:
        # Another process created it between our read and our insert.
        session.rollback()
        existing = find_tenant(session, name)
        if existing is None:
            raise
        return existing, False
    return tenant, True


def find_user(session: Session, tenant_id: str, name: str) -> User | None:
    """The tenant's user with this name, if any."""
    return session.scalar(select(User).where(User.tenant_id == tenant_id, User.name == name))


def get_or_create_user(session: Session, tenant: Tenant, name: str, role: Role) -> tuple[User, bool]:
    """The tenant's user named `name` (created with `role` if needed; an existing user keeps its
    role); the flag says whether it was created."""
    user = find_user(session, tenant.id, name)
    if user is not None:
        return user, False
    user = User(id=new_user_id(), tenant_id=tenant.id, name=name, role=role.value)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = find_user(session, tenant.id, name)
        if existing is None:
            raise
        return existing, False
    return user, True


def create_api_key(
    session: Session, tenant: Tenant, expires_in: timedelta | None = None, user: User | None = None
) -> tuple[ApiKey, str]:
    """A new key for the tenant's `user` (default: its `admin` user, created if needed), valid for
    `expires_in` or until revoked: the stored row and the raw key, which is never stored."""
    if user is None:
        user, _ = get_or_create_user(session, tenant, DEFAULT_ADMIN_NAME, Role.admin)
    elif user.tenant_id != tenant.id:
        raise ValueError("the user belongs to another tenant")
    raw_key = generate_api_key()
    key = ApiKey(
        id=new_key_id(),
        tenant_id=tenant.id,
        user_id=user.id,
        prefix=display_prefix(raw_key),
        key_sha256=hash_api_key(raw_key),
        expires_at=utc_now() + expires_in if expires_in is not None else None,
    )
    session.add(key)
    session.commit()
    return key, raw_key


def verify_api_key(session: Session, raw_key: str) -> ApiKey:
    """The live key matching `raw_key`, with its (enabled) user loaded; unknown, revoked and
    expired keys, keys without a user and keys of a disabled user all raise InvalidApiKeyError.
    Records `last_used_at`, at most once per LAST_USED_RESOLUTION per key (a write per
    verification would be one per request)."""
    key = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_api_key(raw_key)))
    now = utc_now()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise InvalidApiKeyError("API key is not valid")
    if key.user is None or key.user.disabled_at is not None:
        raise InvalidApiKeyError("API key is not valid")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.commit()
    return key


def revoke_api_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke a key (idempotent: the first revocation time is kept); None if no such key."""
    key = session.get(ApiKey, key_id)
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utc_now()
        session.commit()
    return key


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[ApiKey]:
    """Keys, oldest first, optionally of one tenant."""
    stmt = (
        select(ApiKey)
        .join(ApiKey.tenant)
        .options(contains_eager(ApiKey.tenant))
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    return list(session.scalars(stmt))
