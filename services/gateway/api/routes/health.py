"""Liveness, readiness and metrics: the only routes that take no API key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from contracts.public import Health
from services.common.errors import DependencyUnavailableError
from services.gateway.api.deps import ContextDep, RequestIdDep, require_operator_token
from services.gateway.api.responses import open_route

router = APIRouter(tags=["operations"])

_CHECK_TIMEOUT_SECONDS = 5.0


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness: the process is serving",
    responses=open_route(),
)
async def healthz() -> Health:
    """Always ok while the event loop runs; checks no dependency."""
    return Health()


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: reports and the task broker are reachable",
    responses=open_route(503),
)
async def readyz(context: ContextDep, request_id: RequestIdDep) -> Health:
    """200 when every dependency answers, else 503 `dependency.unavailable` naming the failures."""
    reports_ok, broker_ok = await asyncio.gather(
        _bounded(context.reports.ready(request_id=request_id)),
        _bounded(context.publisher.ping()),
    )
    checks = {
        "reports": "ok" if reports_ok else "unavailable",
        "broker": "ok" if broker_ok else "unavailable",
    }
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        raise DependencyUnavailableError(
            f"not ready: {', '.join(failed)} unavailable", {"failed": failed, "checks": checks}
        )
    return Health(checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (operators: `Authorization: Bearer <internal token>`)",
    responses={200: {"content": {"text/plain": {}}}, **open_route(401)},
)
async def metrics(context: ContextDep, _: Annotated[None, Depends(require_operator_token)]) -> Response:
    """Request counts and latencies by route template, error codes, tasks queued."""
    body, content_type = context.metrics.render()
    return Response(content=body, media_type=content_type)


async def _bounded(check: Awaitable[bool]) -> bool:
    """A check that hangs or raises counts as failed."""
    try:
        return await asyncio.wait_for(check, _CHECK_TIMEOUT_SECONDS)
    except Exception:  # TimeoutError included
        return False
