"""Tenants, their users and the users' API keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from contracts.users import Role
from services.reports.db.models import ApiKey, Tenant, User
from services.reports.db.types import utc_now
from services.reports.db.users import add_api_key, add_user, find_user, revoke_key
from services.reports.domain.api_keys import hash_api_key, new_tenant_id
from services.reports.domain.errors import InvalidApiKeyError, TenantNotFoundError, UserExistsError

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


def get_or_create_user(
    session: Session,
    tenant: Tenant,
    name: str,
    role: Role,
    on_create: Callable[[User], None] | None = None,
) -> tuple[User, bool]:
    """The tenant's user named `name` (created with `role` if needed; an existing user keeps its
    role); the flag says whether it was created. `on_create` runs on a new user before the commit
    (the CLI records its audit entry there, in the same transaction); a concurrent maker wins."""
    user = find_user(session, tenant.id, name)
    if user is not None:
        return user, False
    try:
        user = add_user(session, tenant.id, name, role)
        if on_create is not None:
            on_create(user)
        session.commit()
    except (UserExistsError, IntegrityError):
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
    key, raw_key = add_api_key(session, user, expires_in)
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
    if revoke_key(key):
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
