"""Liveness and readiness probes (no token: the orchestrator calls them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from services.reports.domain.errors import DatabaseUnavailableError

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Probe result."""

    status: str = "ok"


@router.get("/healthz")
def healthz() -> Health:
    """The process is up (no dependency checked, so a database outage does not restart it)."""
    return Health()


@router.get("/readyz", responses={503: {"description": "database unavailable"}})
def readyz(request: Request) -> Health:
    """The database answers `SELECT 1`."""
    engine: Engine = request.app.state.engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseUnavailableError("database is not reachable") from exc
    return Health()
