"""The OOD service: `POST /v1/score`, `/healthz`, `/readyz`.

Start: `uvicorn --factory services.ood.api.app:create_app --port 8001`.
The bundle's manifest is loaded once in lifespan; a missing or corrupt bundle stops start-up.
ONNX Runtime is not needed here: scoring reads only logits, the embedding and bundle.json.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from pydantic import BaseModel

from contracts.bundle import BundleManifest
from contracts.errors import ErrorBody
from contracts.ood import OodScoreRequest, OodScoreResponse
from contracts.reports import ModelRef
from model_bundle.loader import load_manifest
from services.ood.api.errors import InternalTokenInvalidError, NotReadyError, install_error_handlers
from services.ood.api.middleware import RequestContextMiddleware
from services.ood.config import Settings, get_settings
from services.ood.domain.verdict import evaluate
from services.ood.json_logging import configure_logging

log = logging.getLogger("services.ood")

SettingsDep = Annotated[Settings, Depends(get_settings)]


class Health(BaseModel):
    """Liveness: the process answers."""

    status: str = "ok"


class Readiness(BaseModel):
    """Readiness: the bundle is loaded; which one."""

    status: str = "ready"
    model: ModelRef


def get_manifest(request: Request) -> BundleManifest:
    """The bundle manifest loaded in lifespan."""
    manifest: BundleManifest | None = getattr(request.app.state, "manifest", None)
    if manifest is None:
        raise NotReadyError("the model bundle is not loaded")
    return manifest


ManifestDep = Annotated[BundleManifest, Depends(get_manifest)]


def require_internal_token(
    settings: SettingsDep, x_internal_token: Annotated[str | None, Header()] = None
) -> None:
    """Only SkinTriage's services, which share the internal token, may call."""
    expected = settings.internal_token.get_secret_value().encode()
    if x_internal_token is None or not hmac.compare_digest(x_internal_token.encode(), expected):
        raise InternalTokenInvalidError("missing or invalid X-Internal-Token")


_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody} for status in (401, 409, 422, 500, 503)
}
router = APIRouter()


@router.post(
    "/v1/score",
    dependencies=[Depends(require_internal_token)],
    responses=_ERRORS,
    summary="Score one model output and decide whether it may be shown as a triage result",
)
def score(body: OodScoreRequest, manifest: ManifestDep, settings: SettingsDep) -> OodScoreResponse:
    """Quality gate, then the dual MSP/entropy criterion, at the loaded bundle's thresholds."""
    verdict = evaluate(body, manifest, settings.quality_thresholds())
    log.info(
        "ood.scored",
        extra={"decision": verdict.decision.value, "rule": verdict.rule, "tenant_id": body.tenant_id},
    )
    return verdict


@router.get("/healthz")
def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", responses={503: {"model": ErrorBody}})
def readyz(manifest: ManifestDep) -> Readiness:
    """The bundle is loaded and scoring can be served."""
    return Readiness(
        model=ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.onnx_sha256)
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; without `settings`, read them from the environment (and fail fast)."""
    resolved = settings if settings is not None else get_settings()
    configure_logging(resolved.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manifest = load_manifest(resolved.bundle_dir)
        app.state.manifest = manifest
        log.info(
            "ood.ready",
            extra={"model": manifest.name, "version": manifest.version, "sha256": manifest.onnx_sha256},
        )
        yield
        app.state.manifest = None

    app = FastAPI(title="SkinTriage OOD", version="1.0.0", lifespan=lifespan)
    app.state.manifest = None
    app.dependency_overrides[get_settings] = lambda: resolved
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(router)
    return app
