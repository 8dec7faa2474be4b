"""A tenant's users and their API keys, as its admins manage them (issue 12).

Every change here is added to the caller's session without committing: the caller records the
audit entry of the change (services.reports.db.audit.record_audit) and commits both at once, so
a change is never kept without its entry.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager

from contracts.users import ApiKeyCreated, ApiKeyView, Role, UserView
from services.reports.db.models import ApiKey, User
from services.reports.db.types import utc_now
from services.reports.domain.api_keys import (
    display_prefix,
    generate_api_key,
    hash_api_key,
    new_key_id,
    new_user_id,
)
from services.reports.domain.errors import (
    ApiKeyNotFoundError,
    UserDisabledError,
    UserExistsError,
    UserNotFoundError,
)


def user_view(user: User) -> UserView:
    """A user as the API shows it."""
    return UserView(
        user_id=user.id,
        name=user.name,
        role=Role(user.role),
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


def key_view(key: ApiKey) -> ApiKeyView:
    """A key as listed (never the key itself)."""
    user = key.user
    return ApiKeyView(
        key_id=key.id,
        prefix=key.prefix,
        user_id=user.id if user else None,
        user_name=user.name if user else None,
        role=Role(user.role) if user else None,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
    )


def find_user(session: Session, tenant_id: str, name: str) -> User | None:
    """The tenant's user with this name, if any."""
    return session.scalar(select(User).where(User.tenant_id == tenant_id, User.name == name))


def get_user(session: Session, tenant_id: str, user_id: str) -> User:
    """The tenant's user with this id; UserNotFoundError otherwise (another tenant's too)."""
    user = session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise UserNotFoundError("no such user")
    return user


def add_user(session: Session, tenant_id: str, name: str, role: Role) -> User:
    """A new user of the tenant, flushed (so its id and times are set); UserExistsError when the
    name is taken. The unique (tenant_id, name) constraint still guards a concurrent insert."""
    if find_user(session, tenant_id, name) is not None:
        raise UserExistsError("the tenant already has a user with this name", {"name": name})
    user = User(id=new_user_id(), tenant_id=tenant_id, name=name, role=role.value, created_at=utc_now())
    session.add(user)
    session.flush()
    return user


def list_users(session: Session, tenant_id: str) -> list[User]:
    """The tenant's users, oldest first."""
    stmt = select(User).where(User.tenant_id == tenant_id).order_by(User.created_at, User.id)
    return list(session.scalars(stmt))


def disable_user(session: Session, user: User) -> bool:
    """Disable the user (their keys stop verifying at once); idempotent, the first time is kept.
    True when this call disabled them."""
    if user.disabled_at is not None:
        return False
    user.disabled_at = utc_now()
    return True


def add_api_key(session: Session, user: User, expires_in: timedelta | None = None) -> tuple[ApiKey, str]:
    """A new key for an enabled user, valid for `expires_in` or until revoked: the row (flushed)
    and the raw key, which is never stored. UserDisabledError for a disabled user."""
    if user.disabled_at is not None:
        raise UserDisabledError("a disabled user cannot be given a key", {"user_id": user.id})
    raw_key = generate_api_key()
    now = utc_now()
    key = ApiKey(
        id=new_key_id(),
        tenant_id=user.tenant_id,
        user_id=user.id,
        prefix=display_prefix(raw_key),
        key_sha256=hash_api_key(raw_key),
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    session.add(key)
    session.flush()
    return key, raw_key


def key_created(key: ApiKey, raw_key: str) -> ApiKeyCreated:
    """The answer to a key's creation: the one time the key is shown."""
    assert key.user_id is not None  # add_api_key always names the user
    return ApiKeyCreated(
        key_id=key.id,
        api_key=raw_key,
        prefix=key.prefix,
        user_id=key.user_id,
        created_at=key.created_at,
        expires_at=key.expires_at,
    )


def get_api_key(session: Session, tenant_id: str, key_id: str) -> ApiKey:
    """The tenant's key with this id; ApiKeyNotFoundError otherwise (another tenant's too)."""
    key = session.get(ApiKey, key_id)
    if key is None or key.tenant_id != tenant_id:
        raise ApiKeyNotFoundError("no such API key")
    return key


def list_tenant_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys with their users, oldest first."""
    stmt = (
        select(ApiKey)
        .outerjoin(ApiKey.user)
        .options(contains_eager(ApiKey.user))
        .where(ApiKey.tenant_id == tenant_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return list(session.scalars(stmt))


def revoke_key(key: ApiKey) -> bool:
    """Revoke a key; idempotent, the first revocation time is kept. True when this call revoked it."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = utc_now()
    return True
