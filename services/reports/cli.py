"""Operator commands for tenants, users and API keys, against REPORTS_DATABASE_URL.

python -m services.reports.cli create-tenant NAME
python -m services.reports.cli create-user --tenant NAME --name USER --role clinician|integrator|admin
python -m services.reports.cli disable-user --tenant NAME --name USER
python -m services.reports.cli list-users --tenant NAME
python -m services.reports.cli create-key --tenant NAME [--user USER]   # prints the key once, on stdout
python -m services.reports.cli revoke-key KEY_ID
python -m services.reports.cli list-keys [--tenant NAME]

Changes to users and keys are written to the tenant's audit trail with no acting user and
details {"via": "cli"}, in the same transaction as the change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.audit import AuditAction
from contracts.users import Role
from services.reports.config import database_url_from_env
from services.reports.db.audit import record_audit
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.models import ApiKey, Tenant, User
from services.reports.db.tenants import (
    DEFAULT_ADMIN_NAME,
    find_tenant,
    get_or_create_tenant,
    get_or_create_user,
    list_api_keys,
)
from services.reports.db.users import add_api_key, add_user, disable_user, find_user, list_users, revoke_key
from services.reports.domain.errors import UserDisabledError, UserExistsError

EXIT_NOT_FOUND = 1
EXIT_NOT_MIGRATED = 2
EXIT_USAGE = 3
EXIT_CONFLICT = 4
# What the audit trail records of a CLI change: no acting user, and this.
VIA_CLI = {"via": "cli"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.reports.cli", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--database-url", help="default: $REPORTS_DATABASE_URL or sqlite:///var/skintriage.db"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tenant = commands.add_parser("create-tenant", help="create a tenant (no-op if it exists)")
    tenant.add_argument("name")
    user = commands.add_parser("create-user", help="create a user of a tenant, creating the tenant if needed")
    user.add_argument("--tenant", required=True, help="tenant name")
    user.add_argument("--name", required=True, help="the user's name (unique in the tenant)")
    user.add_argument("--role", required=True, choices=[role.value for role in Role])
    disable = commands.add_parser("disable-user", help="disable a user: their keys stop working")
    disable.add_argument("--tenant", required=True, help="tenant name")
    disable.add_argument("--name", required=True, help="the user's name")
    users = commands.add_parser("list-users", help="list a tenant's users")
    users.add_argument("--tenant", required=True, help="tenant name")
    create = commands.add_parser("create-key", help="create an API key, creating the tenant if needed")
    create.add_argument("--tenant", required=True, help="tenant name")
    create.add_argument(
        "--user",
        help=f"the user the key acts as (default: the tenant's {DEFAULT_ADMIN_NAME!r} admin, made if needed)",
    )
    create.add_argument(
        "--expires-in-days", type=float, help="the key stops working after this many days (default: never)"
    )
    revoke = commands.add_parser("revoke-key", help="revoke an API key by its id")
    revoke.add_argument("key_id")
    listing = commands.add_parser("list-keys", help="list API keys (never the keys themselves)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    return parser


def _create_tenant(session: Session, name: str) -> int:
    tenant, created = get_or_create_tenant(session, name)
    print(f"{'created' if created else 'exists'} tenant {tenant.name} ({tenant.id})", file=sys.stderr)
    print(tenant.id)
    return 0


def _audit(
    session: Session, tenant_id: str, action: AuditAction, resource_type: str, resource_id: str
) -> None:
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=None,
        action=action.value,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=None,
        details=VIA_CLI,
    )


def _existing_tenant(session: Session, name: str) -> Tenant | None:
    tenant = find_tenant(session, name)
    if tenant is None:
        print(f"no tenant named {name}", file=sys.stderr)
    return tenant


def _create_user(session: Session, tenant_name: str, name: str, role: Role) -> int:
    tenant, created = get_or_create_tenant(session, tenant_name)
    if created:
        print(f"created tenant {tenant.name} ({tenant.id})", file=sys.stderr)
    try:
        user = add_user(session, tenant.id, name, role)
        _audit(session, tenant.id, AuditAction.user_create, "user", user.id)
        session.commit()
    except (UserExistsError, IntegrityError):
        session.rollback()
        print(f"tenant {tenant.name} already has a user named {name}", file=sys.stderr)
        return EXIT_CONFLICT
    print(f"created {role.value} {user.name} ({user.id}) in tenant {tenant.name}", file=sys.stderr)
    print(user.id)
    return 0


def _disable_user(session: Session, tenant_name: str, name: str) -> int:
    tenant = _existing_tenant(session, tenant_name)
    user = find_user(session, tenant.id, name) if tenant is not None else None
    if tenant is None or user is None:
        print(f"no user named {name} in tenant {tenant_name}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if disable_user(session, user):
        _audit(session, tenant.id, AuditAction.user_disable, "user", user.id)
        session.commit()
    assert user.disabled_at is not None
    print(f"disabled {user.name} ({user.id}) at {user.disabled_at.isoformat()}", file=sys.stderr)
    return 0


def _list_users(session: Session, tenant_name: str) -> int:
    tenant = _existing_tenant(session, tenant_name)
    if tenant is None:
        return EXIT_NOT_FOUND
    print("user_id\tname\trole\tcreated_at\tdisabled_at")
    for user in list_users(session, tenant.id):
        disabled = user.disabled_at.isoformat() if user.disabled_at else "-"
        print(f"{user.id}\t{user.name}\t{user.role}\t{user.created_at.isoformat()}\t{disabled}")
    return 0


def _default_admin(session: Session, tenant: Tenant) -> User:
    """The tenant's `admin` user, made (and audited) if it has none; a concurrent maker wins."""
    user, _ = get_or_create_user(
        session,
        tenant,
        DEFAULT_ADMIN_NAME,
        Role.admin,
        on_create=lambda made: _audit(session, tenant.id, AuditAction.user_create, "user", made.id),
    )
    return user


def _create_key(
    session: Session, tenant_name: str, user_name: str | None, expires_in_days: float | None
) -> int:
    if expires_in_days is not None and expires_in_days <= 0:
        print("--expires-in-days must be positive", file=sys.stderr)
        return EXIT_USAGE
    if user_name is not None:
        found = _existing_tenant(session, tenant_name)
        user = find_user(session, found.id, user_name) if found is not None else None
        if found is None or user is None:
            print(f"no user named {user_name} in tenant {tenant_name}", file=sys.stderr)
            return EXIT_NOT_FOUND
        tenant = found
    else:
        tenant, created = get_or_create_tenant(session, tenant_name)
        if created:
            print(f"created tenant {tenant.name} ({tenant.id})", file=sys.stderr)
        user = _default_admin(session, tenant)
    lifetime = timedelta(days=expires_in_days) if expires_in_days is not None else None
    try:
        key, raw_key = add_api_key(session, user, lifetime)
    except UserDisabledError:
        print(f"user {user.name} is disabled", file=sys.stderr)
        return EXIT_CONFLICT
    _audit(session, tenant.id, AuditAction.key_create, "api_key", key.id)
    session.commit()
    print(
        f"created key {key.id} ({key.prefix}...) for {user.role} {user.name} of tenant {tenant.name} "
        f"({tenant.id}); store it now, it is not shown again",
        file=sys.stderr,
    )
    # The key alone on stdout, so `KEY=$(python -m services.reports.cli create-key ...)` works.
    print(raw_key)
    return 0


def _revoke_key(session: Session, key_id: str) -> int:
    key = session.get(ApiKey, key_id)
    if key is None:
        print(f"no API key with id {key_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if revoke_key(key):
        _audit(session, key.tenant_id, AuditAction.key_revoke, "api_key", key.id)
        session.commit()
    assert key.revoked_at is not None
    print(f"revoked key {key.id} ({key.prefix}...) at {key.revoked_at.isoformat()}", file=sys.stderr)
    return 0


def _list_keys(session: Session, tenant_name: str | None) -> int:
    # The user's columns come last, so scripts reading the earlier ones by position still work.
    print("key_id\ttenant\tprefix\tcreated_at\trevoked_at\texpires_at\tlast_used_at\tuser\trole")
    for key in list_api_keys(session, tenant_name):
        times = [key.revoked_at, key.expires_at, key.last_used_at]
        revoked, expires, used = (t.isoformat() if t else "-" for t in times)
        user, role = (key.user.name, key.user.role) if key.user is not None else ("-", "-")
        print(
            f"{key.id}\t{key.tenant.name}\t{key.prefix}\t{key.created_at.isoformat()}\t{revoked}\t{expires}\t{used}"
            f"\t{user}\t{role}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = _parser().parse_args(argv)
    engine = make_engine(args.database_url or database_url_from_env())
    try:
        if not inspect(engine).has_table("api_keys"):
            print(
                "the reports database has no tables; run "
                "`alembic -c services/reports/alembic.ini upgrade head` first",
                file=sys.stderr,
            )
            return EXIT_NOT_MIGRATED
        with make_sessionmaker(engine)() as session:
            if args.command == "create-tenant":
                return _create_tenant(session, args.name)
            if args.command == "create-user":
                return _create_user(session, args.tenant, args.name, Role(args.role))
            if args.command == "disable-user":
                return _disable_user(session, args.tenant, args.name)
            if args.command == "list-users":
                return _list_users(session, args.tenant)
            if args.command == "create-key":
                return _create_key(session, args.tenant, args.user, args.expires_in_days)
            if args.command == "revoke-key":
                return _revoke_key(session, args.key_id)
            return _list_keys(session, args.tenant)
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
