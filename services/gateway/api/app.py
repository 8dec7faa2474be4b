"""The gateway's FastAPI app: `uvicorn --factory services.gateway.api.app:create_app --port 8000`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from contracts.reports import DISCLAIMER
from services.common.app_settings import install_settings
from services.common.json_logging import JsonFormatter, configure_logging
from services.common.request_context import RequestContextMiddleware
from services.gateway.adapters.finish_listener import Waiters, finish_listener
from services.gateway.adapters.reports_client import ReportsClient
from services.gateway.adapters.status_poller import StatusPoller
from services.gateway.adapters.task_publisher import CeleryTaskPublisher, TaskPublisher
from services.gateway.api.body_limit import BodyLimitMiddleware
from services.gateway.api.deps import GatewayContext
from services.gateway.api.errors import install_error_handlers
from services.gateway.api.metrics import Metrics
from services.gateway.api.openapi import install_openapi
from services.gateway.api.routes import (
    batches,
    dicom,
    health,
    images,
    integrations,
    jobs,
    lesions,
    monitoring,
    people,
    reports,
    reviews,
)
from services.gateway.api.submission import register_group
from services.gateway.config import Settings, get_settings
from services.gateway.domain.admission import QueueDepthGuard, TenantRateLimiter
from services.gateway.domain.auth import ApiKeyCache
from services.gateway.domain.group_commit import GroupCommit

# Room for the metadata fields and multipart boundaries around one image.
_FORM_OVERHEAD_BYTES = 64 * 1024
# Routes without an upload only ever receive small bodies (or none).
_DEFAULT_BODY_BYTES = 64 * 1024

# The gateway's own `extra=` log fields, beside services.common.json_logging.COMMON_FIELDS.
LOG_FIELDS = ("upstream_method", "upstream_path", "upstream_status", "contract", "errors", "jobs")

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
# The dashboard loads nothing from elsewhere: its own files, blob: URLs of images it fetched with
# the API key, and the camera's stream. The key lives in sessionStorage, so no inline script runs.
_DASHBOARD_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """The clinician dashboard (static HTML/CSS/ES modules, a pure client of the public API)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file, with the dashboard's security headers."""
        response = await super().get_response(path, scope)
        response.headers.update(_DASHBOARD_HEADERS)
        return response


class DashboardMount(Mount):
    """The dashboard at `/`, never answering for a path an API route owns: a method the route
    does not take (`GET /v1/images`) gets the router's 405 with the route's `Allow`, not the file
    server's 404, or its 405 advertising `GET, HEAD`."""

    def __init__(self, app: DashboardFiles, api_routes: list[BaseRoute]) -> None:
        super().__init__("/", app=app, name="dashboard")
        self.api_routes = api_routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """No match on an API route's path, whatever the method; else the mount's own match."""
        if any(route.matches(scope)[0] != Match.NONE for route in self.api_routes):
            return Match.NONE, {}
        return super().matches(scope)


def create_app(
    settings: Settings | None = None,
    *,
    publisher: TaskPublisher | None = None,
    listener: Waiters | None = None,
) -> FastAPI:
    """Build the app. `publisher` replaces the Celery publisher (tests pass an in-memory one);
    `listener` the job-finished listener of the broker (a test with an in-memory broker passes one
    on a real Redis)."""
    settings = settings or get_settings()
    configure_logging(JsonFormatter("gateway", fields=LOG_FIELDS))
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reports_client = ReportsClient.create(
            settings.reports_url,
            settings.internal_token.get_secret_value(),
            settings.reports_timeout_seconds,
        )
        task_publisher = publisher or CeleryTaskPublisher.from_broker_url(settings.broker_url)
        # Redis notifications where the broker has them, else one status poll for all waits.
        finished: Waiters = (
            listener
            or finish_listener(settings.broker_url)
            or StatusPoller(reports_client, settings.wait_poll_ms / 1000)
        )
        await finished.start()
        queue_guard = QueueDepthGuard(
            task_publisher.queue_depth,
            settings.max_queue_depth,
            retry_after_seconds=settings.queue_full_retry_after_seconds,
            cache_seconds=settings.queue_depth_cache_seconds,
        )
        app.state.context = GatewayContext(
            reports=reports_client,
            publisher=task_publisher,
            auth_cache=ApiKeyCache(settings.auth_cache_seconds, settings.auth_cache_max_entries),
            metrics=metrics,
            decode_slots=anyio.CapacityLimiter(settings.max_concurrent_decodes),
            rate_limiter=TenantRateLimiter(settings.tenant_rate_per_second, settings.tenant_burst),
            queue_guard=queue_guard,
            registrations=GroupCommit(
                register_group,
                settings.task_chunk_size,
                linger_seconds=settings.group_linger_ms / 1000,
                should_linger=queue_guard.backlog,
            ),
            finish_listener=finished,
        )
        try:
            yield
        finally:
            await finished.close()
            await reports_client.aclose()
            task_publisher.close()

    app = FastAPI(
        title="SkinTriage gateway",
        version="1.0.0",
        summary="Triage of dermoscopic skin-lesion images: decision support, not diagnosis.",
        description=DISCLAIMER,
        lifespan=lifespan,
    )
    install_settings(app, settings)
    install_error_handlers(app, metrics)
    install_openapi(app)
    for module in (
        images,
        batches,
        dicom,
        jobs,
        reviews,
        lesions,
        integrations,
        reports,
        people,
        monitoring,
        health,
    ):
        app.include_router(module.router)
    # Mounted last, so every API route keeps priority; only these static files are open.
    app.router.routes.append(
        DashboardMount(DashboardFiles(directory=DASHBOARD_DIR, html=True), list(app.router.routes))
    )

    body_limits = {
        "/v1/images": settings.max_upload_bytes + _FORM_OVERHEAD_BYTES,
        "/v1/batches": settings.max_batch_upload_bytes,
        "/v1/dicom": settings.max_dicom_bytes,
        "/dicomweb/studies": settings.max_stow_bytes,
    }
    # Added innermost first: the request-context middleware wraps everything, so even a
    # body-limit refusal carries the request id and is logged and counted.
    app.add_middleware(BodyLimitMiddleware, limit_for=lambda path: body_limits.get(path, _DEFAULT_BODY_BYTES))
    app.add_middleware(RequestContextMiddleware, service="gateway", observer=metrics)
    return app
