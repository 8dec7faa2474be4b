"""Operator commands for tenants and API keys, against REPORTS_DATABASE_URL.

python -m services.reports.cli create-tenant NAME
python -m services.reports.cli create-key --tenant NAME   # prints the key once, on stdout
python -m services.reports.cli revoke-key KEY_ID
python -m services.reports.cli list-keys [--tenant NAME]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from services.reports.config import database_url_from_env
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.tenants import create_api_key, get_or_create_tenant, list_api_keys, revoke_api_key

EXIT_NOT_FOUND = 1
EXIT_NOT_MIGRATED = 2
EXIT_USAGE = 3


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
    create = commands.add_parser("create-key", help="create an API key, creating the tenant if needed")
    create.add_argument("--tenant", required=True, help="tenant name")
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


def _create_key(session: Session, tenant_name: str, expires_in_days: float | None) -> int:
    if expires_in_days is not None and expires_in_days <= 0:
        print("--expires-in-days must be positive", file=sys.stderr)
        return EXIT_USAGE
    tenant, created = get_or_create_tenant(session, tenant_name)
    if created:
        print(f"created tenant {tenant.name} ({tenant.id})", file=sys.stderr)
    lifetime = timedelta(days=expires_in_days) if expires_in_days is not None else None
    key, raw_key = create_api_key(session, tenant, lifetime)
    print(
        f"created key {key.id} ({key.prefix}...) for tenant {tenant.name} ({tenant.id}); "
        "store it now, it is not shown again",
        file=sys.stderr,
    )
    # The key alone on stdout, so `KEY=$(python -m services.reports.cli create-key ...)` works.
    print(raw_key)
    return 0


def _revoke_key(session: Session, key_id: str) -> int:
    key = revoke_api_key(session, key_id)
    if key is None:
        print(f"no API key with id {key_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    assert key.revoked_at is not None
    print(f"revoked key {key.id} ({key.prefix}...) at {key.revoked_at.isoformat()}", file=sys.stderr)
    return 0


def _list_keys(session: Session, tenant_name: str | None) -> int:
    print("key_id\ttenant\tprefix\tcreated_at\trevoked_at\texpires_at\tlast_used_at")
    for key in list_api_keys(session, tenant_name):
        times = [key.revoked_at, key.expires_at, key.last_used_at]
        revoked, expires, used = (t.isoformat() if t else "-" for t in times)
        print(
            f"{key.id}\t{key.tenant.name}\t{key.prefix}\t{key.created_at.isoformat()}\t{revoked}\t{expires}\t{used}"
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
            if args.command == "create-key":
                return _create_key(session, args.tenant, args.expires_in_days)
            if args.command == "revoke-key":
                return _revoke_key(session, args.key_id)
            return _list_keys(session, args.tenant)
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
