"""FastAPI dependencies: settings, a database session per request, internal auth, tenant."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from services.reports.config import Settings, get_settings
from services.reports.db.tenants import require_tenant
from services.reports.domain.errors import InternalTokenInvalidError

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request) -> Iterator[Session]:
    """A session for this request, from the factory built in the app's lifespan."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def require_internal_token(
    settings: SettingsDep,
    x_internal_token: Annotated[str | None, Header()] = None,
) -> None:
    """Every internal route needs the shared token (compared in constant time)."""
    expected = settings.internal_token.get_secret_value().encode()
    if x_internal_token is None or not hmac.compare_digest(x_internal_token.encode(), expected):
        raise InternalTokenInvalidError("missing or invalid internal token")


def tenant_id(
    session: SessionDep,
    x_tenant_id: Annotated[str, Header(min_length=1, max_length=64)],
) -> str:
    """The caller's tenant, which must exist; every query below is scoped by it."""
    return require_tenant(session, x_tenant_id).id


TenantDep = Annotated[str, Depends(tenant_id)]


def internal_router(tag: str) -> APIRouter:
    """A router whose routes all require the internal token.

    Routes spell out their full path (`/internal/v1/...`) instead of using an include prefix,
    so the matched route's template, which the request log records, is the whole path.
    """
    return APIRouter(tags=[tag], dependencies=[Depends(require_internal_token)])
