"""A tiny FastAPI app wearing the shared middleware, handlers and internal-token guard, and a
fixture that routes every log line through the shared JSON handler into `capsys`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, SecretStr

from contracts.errors import DomainError
from services.common.errors import install_error_handlers
from services.common.internal_auth import internal_token_guard
from services.common.json_logging import JsonFormatter, configure_logging
from services.common.request_context import RequestContextMiddleware

SERVICE = "tiny"
TOKEN = "tiny-internal-token-0123456789"
SECRET = "postgresql://user:hunter2@db/skintriage"

log = logging.getLogger("tests.common.tiny")


class LesionNotFoundError(DomainError):
    """A typed domain error, as a service's domain would raise."""

    code, status = "lesion.not_found", 404


class Measurement(BaseModel):
    """A body with rules the schema enforces."""

    patient_ref: str
    age: int = Field(ge=0, le=130)


class TinySettings(BaseModel):
    """Stands in for a service's Settings: it holds the shared token."""

    internal_token: SecretStr


@lru_cache
def get_settings() -> TinySettings:
    """The tiny service's cached settings dependency."""
    return TinySettings(internal_token=SecretStr(TOKEN))


def create_tiny_app() -> FastAPI:
    """A service built the way every SkinTriage service is, with one route per behaviour."""
    app = FastAPI()
    require_internal_token = internal_token_guard(get_settings)

    @app.get("/lesions/{lesion_id}")
    def read_lesion(lesion_id: str, request: Request) -> dict[str, Any]:
        log.info("lesion.read")
        request.state.tenant_id = "tenant-a"
        return {"lesion_id": lesion_id, "request_id": request.state.request_id}

    @app.get("/missing")
    def missing() -> None:
        raise LesionNotFoundError("no such lesion", {"lesion_id": "l-1"})

    @app.post("/measurements")
    def measure(body: Measurement) -> dict[str, int]:
        return {"age": body.age}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"cannot reach {SECRET}")

    @app.get("/internal", dependencies=[Depends(require_internal_token)])
    def internal() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/settings-token")
    def settings_token(settings: Annotated[TinySettings, Depends(get_settings)]) -> dict[str, int]:
        return {"length": len(settings.internal_token.get_secret_value())}

    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, service=SERVICE)
    return app


@pytest.fixture
def app() -> FastAPI:
    return create_tiny_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as started:
        yield started


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """The shared JSON handler installed for the test; call the fixture's value to get the JSON
    objects written to stdout so far."""
    root = logging.getLogger()
    level = root.level
    configure_logging(JsonFormatter(SERVICE))

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    yield read
    for handler in [h for h in root.handlers if h.get_name() == "skintriage-json"]:
        root.removeHandler(handler)
    root.setLevel(level)
