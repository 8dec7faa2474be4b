"""FastAPI dependencies: settings, a database session per request, internal auth, tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from contracts.users import ACTOR_HEADER, Actor
from services.common.app_settings import app_settings
from services.common.internal_auth import internal_token_guard
from services.reports.config import Settings
from services.reports.db.deliveries import DELIVERIES_ADDED
from services.reports.db.tenants import require_tenant


def request_settings(request: Request) -> Settings:
    """The reports service's settings (installed by create_app)."""
    settings: Settings = app_settings(request)
    return settings


SettingsDep = Annotated[Settings, Depends(request_settings)]


def get_session(request: Request) -> Iterator[Session]:
    """A session for this request, from the factory built in the app's lifespan."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# Every internal route needs the shared token.
require_internal_token = internal_token_guard(request_settings)


def tenant_id(
    request: Request,
    session: SessionDep,
    x_tenant_id: Annotated[str, Header(min_length=1, max_length=64)],
) -> str:
    """The caller's tenant, which must exist; every query below is scoped by it (and the request's
    log line names it). Tenants are never deleted, so one seen once is not looked up again by this
    process (a query per internal request saved; py-spy put it at a tenth of reports' time)."""
    known: set[str] = request.app.state.known_tenants
    if x_tenant_id not in known:
        require_tenant(session, x_tenant_id)
        known.add(x_tenant_id)
    request.state.tenant_id = x_tenant_id
    return x_tenant_id


TenantDep = Annotated[str, Depends(tenant_id)]


def acting_user(
    actor_header: Annotated[
        str | None,
        Header(alias=ACTOR_HEADER, max_length=4096, description="who is acting (set by the gateway)"),
    ] = None,
) -> Actor | None:
    """Who the gateway says is acting (contracts.users.Actor); None for the fleet's own calls
    (workers, the sweeper) and for a header that does not parse."""
    return Actor.from_header(actor_header) if actor_header else None


ActorDep = Annotated[Actor | None, Depends(acting_user)]


def internal_router(tag: str) -> APIRouter:
    """A router whose routes all require the internal token.

    Routes spell out their full path (`/internal/v1/...`) instead of using an include prefix,
    so the matched route's template, which the request log records, is the whole path.
    """
    return APIRouter(tags=[tag], dependencies=[Depends(require_internal_token)])


# Images, heatmaps and clinical documents: no shared cache may keep them.
NO_STORE = {"Cache-Control": "no-store"}


def wake_dispatcher(request: Request, session: Session | None = None) -> None:
    """Deliveries may have been written: this process's dispatcher looks now rather than at its
    next round (another replica's finds them at its next round). With `session`, only when that
    session's transactions added deliveries (`deliveries.DELIVERIES_ADDED`)."""
    if session is not None and not session.info.pop(DELIVERIES_ADDED, False):
        return
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()
