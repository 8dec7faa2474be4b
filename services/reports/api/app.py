"""The reports service's FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from services.common.app_settings import install_settings
from services.common.errors import install_error_handlers
from services.common.internal_docs import internal_fastapi
from services.common.json_logging import JsonFormatter, configure_logging
from services.common.request_context import RequestContextMiddleware
from services.common.task_queue import TaskQueue
from services.reports.api.deps import require_internal_token
from services.reports.api.routes import (
    auth,
    batches,
    health,
    integrations,
    jobs,
    lesions,
    monitoring,
    people,
    reports,
    reviews,
)
from services.reports.config import Settings, get_settings
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.reviews import NEXT_STEP_DEFAULTS_INFO
from services.reports.dispatcher import Dispatcher
from services.reports.sweeper import Sweeper

# The sweeper's and the dispatcher's own line fields, besides the common ones.
LOG_FIELDS = (
    "queue_depth",
    "republished",
    "abandoned",
    "delivery_id",
    "delivery_kind",
    "attempt",
    "delivered",
    "upstream_status",
    "error",
)


def start_sweeper(sessions: sessionmaker[Session], settings: Settings) -> Sweeper | None:
    """The sweeper's thread, when a broker is configured and the interval is not 0."""
    if settings.broker_url is None or settings.sweep_interval_seconds <= 0:
        return None
    sweeper = Sweeper(sessions, TaskQueue.from_broker_url(settings.broker_url), settings)
    sweeper.start()
    return sweeper


def start_dispatcher(sessions: sessionmaker[Session], settings: Settings) -> Dispatcher | None:
    """The dispatcher's thread (webhooks, FHIR pushes), unless its interval is 0."""
    if settings.delivery_interval_seconds <= 0:
        return None
    dispatcher = Dispatcher(sessions, settings)
    dispatcher.start()
    return dispatcher


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; without `settings`, read them from the environment (failing fast)."""
    resolved = settings if settings is not None else get_settings()
    configure_logging(JsonFormatter("reports", fields=LOG_FIELDS))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(resolved.database_url)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        # Views made with the app's sessions (routes, the dispatcher) suggest these next steps.
        app.state.sessionmaker.configure(info={NEXT_STEP_DEFAULTS_INFO: resolved.next_step_defaults})
        sweeper = start_sweeper(app.state.sessionmaker, resolved)
        app.state.dispatcher = start_dispatcher(app.state.sessionmaker, resolved)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.stop()
            if app.state.dispatcher is not None:
                app.state.dispatcher.stop()
            engine.dispose()

    app = internal_fastapi(
        "SkinTriage reports (internal)", require_internal_token, version="1.0.0", lifespan=lifespan
    )
    install_settings(app, resolved)
    app.state.known_tenants = set()  # tenant ids seen to exist (api/deps.py tenant_id)
    # A database that refuses, drops or times out connections is an outage: 503, not 500.
    install_error_handlers(
        app, unavailable={OperationalError: "database", InterfaceError: "database", PoolTimeout: "database"}
    )
    app.add_middleware(RequestContextMiddleware, service="reports")

    for module in (health, auth, batches, jobs, reports, integrations, people, reviews, lesions, monitoring):
        app.include_router(module.router)
    return app
