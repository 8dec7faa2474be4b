"""Acting users for reports tests: real users of a tenant, and the header the gateway would send
for them (contracts.users.Actor)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from contracts.users import ACTOR_HEADER, Actor, Role
from services.reports.db.models import Tenant, User
from services.reports.db.tenants import get_or_create_user
from tests.reports.factories import tenant_headers

CLIENT_IP = "203.0.113.7"
USER_AGENT = "pytest-dashboard/1.0"


def make_user(db: Session, tenant_id: str, name: str, role: Role) -> User:
    """A user of the tenant (created, committed)."""
    tenant = db.get(Tenant, tenant_id)
    assert tenant is not None
    user, _ = get_or_create_user(db, tenant, name, role)
    return user


def actor_of(user: User, key_id: str = "key_test") -> Actor:
    """The actor the gateway would name for this user's request."""
    return Actor(
        user_id=user.id,
        user_name=user.name,
        role=Role(user.role),
        key_id=key_id,
        client_ip=CLIENT_IP,
        user_agent=USER_AGENT,
    )


def acting(
    user: User, tenant_id: str | None = None, *, key_id: str = "key_test", **extra: str
) -> dict[str, str]:
    """Headers of a request the gateway makes for `user` (through key `key_id`): tenant, actor,
    and any others."""
    actor = actor_of(user, key_id).to_header()
    return {**tenant_headers(tenant_id or user.tenant_id), ACTOR_HEADER: actor, **extra}
