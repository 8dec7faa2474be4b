"""The OOD service: `POST /v1/score`, `/healthz`, `/readyz`.

Start: `uvicorn --factory services.ood.api.app:create_app --port 8001`.
The bundle's manifest, and its OOD detector's statistics when it has one, are loaded once in
lifespan; a missing or corrupt bundle, statistics that do not match its model, or a tenant
acceptance level the detector has no thresholds for stop start-up.
ONNX Runtime is not needed here: scoring reads only logits, the embedding and the bundle's files.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from contracts.bundle import BundleManifest
from contracts.errors import DomainError, error_detail
from contracts.ood import (
    OodScoreBatchRequest,
    OodScoreBatchResponse,
    OodScoreItem,
    OodScoreRequest,
    OodScoreResponse,
)
from contracts.reports import ModelRef
from model_bundle.loader import load_manifest
from services.common.app_settings import app_settings, install_settings
from services.common.errors import error_responses, install_error_handlers
from services.common.internal_auth import internal_token_guard
from services.common.internal_docs import internal_fastapi
from services.common.json_logging import JsonFormatter, configure_logging
from services.common.request_context import RequestContextMiddleware
from services.ood.adapters.stats_file import load_detector_stats
from services.ood.config import Settings, get_settings
from services.ood.domain.errors import NotReadyError
from services.ood.domain.strictness import UnknownAcceptanceError
from services.ood.domain.verdict import Detector, build_detector, evaluate

log = logging.getLogger("services.ood")

# The OOD service's own `extra=` log fields, beside services.common.json_logging.COMMON_FIELDS.
LOG_FIELDS = (
    "items",
    "accepted",
    "errors",
    "decision",
    "rule",
    "model",
    "version",
    "sha256",
    "ood_rule",
    "tenants_with_own_acceptance",
)


def request_settings(request: Request) -> Settings:
    """The OOD service's settings (installed by create_app)."""
    settings: Settings = app_settings(request)
    return settings


SettingsDep = Annotated[Settings, Depends(request_settings)]


class Health(BaseModel):
    """Liveness: the process answers."""

    status: str = "ok"


class Readiness(BaseModel):
    """Readiness: the bundle is loaded; which one."""

    status: str = "ready"
    model: ModelRef
    ood_rule: list[str] = Field(description="the scores of the detector's rule; [] = seed rule only")


def get_manifest(request: Request) -> BundleManifest:
    """The bundle manifest loaded in lifespan."""
    manifest: BundleManifest | None = getattr(request.app.state, "manifest", None)
    if manifest is None:
        raise NotReadyError("the model bundle is not loaded")
    return manifest


ManifestDep = Annotated[BundleManifest, Depends(get_manifest)]


def get_detector(request: Request) -> Detector | None:
    """The fitted OOD detector loaded in lifespan; None when the bundle has only the seed rule."""
    detector: Detector | None = getattr(request.app.state, "detector", None)
    return detector


DetectorDep = Annotated[Detector | None, Depends(get_detector)]


# Only SkinTriage's services, which share the internal token, may score.
require_internal_token = internal_token_guard(request_settings)
router = APIRouter()


@router.post(
    "/v1/score",
    dependencies=[Depends(require_internal_token)],
    responses=error_responses(401, 409, 422, 500, 503),
    summary="Score one model output and decide whether it may be shown as a triage result",
)
def score(
    body: OodScoreRequest, manifest: ManifestDep, detector: DetectorDep, settings: SettingsDep
) -> OodScoreResponse:
    """Quality gate, then the bundle's OOD detector at the tenant's acceptance (or, without a
    detector, the seed dual MSP/entropy criterion)."""
    verdict = evaluate(body, manifest, settings.quality_thresholds(), detector)
    log.info(
        "ood.scored",
        extra={"decision": verdict.decision.value, "rule": verdict.rule, "tenant_id": body.tenant_id},
    )
    return verdict


@router.post(
    "/v1/score/batch",
    dependencies=[Depends(require_internal_token)],
    responses=error_responses(401, 422, 500, 503),
    summary="Score several model outputs in one call (a worker's micro-batch), each on its own",
)
def score_batch(
    body: OodScoreBatchRequest, manifest: ManifestDep, detector: DetectorDep, settings: SettingsDep
) -> OodScoreBatchResponse:
    """As `POST /v1/score` for every item; an item that `/v1/score` would refuse (a different
    model, bad logits or embedding) gets that error in its place and the others are still judged."""
    thresholds = settings.quality_thresholds()
    results = []
    for item in body.items:
        try:
            results.append(OodScoreItem(verdict=evaluate(item, manifest, thresholds, detector)))
        except DomainError as exc:
            results.append(OodScoreItem(error=error_detail(exc)))
    log.info(
        "ood.scored_batch",
        extra={
            "items": len(results),
            "accepted": sum(1 for r in results if r.verdict and r.verdict.decision.value == "accepted"),
            "errors": sum(1 for r in results if r.error),
        },
    )
    return OodScoreBatchResponse(results=results)


@router.get("/healthz")
def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", responses=error_responses(503))
def readyz(manifest: ManifestDep, detector: DetectorDep) -> Readiness:
    """The bundle is loaded and scoring can be served."""
    return Readiness(
        model=ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.onnx_sha256),
        ood_rule=list(detector.default.rule) if detector is not None else [],
    )


def load_detector(bundle_dir: Path, manifest: BundleManifest, settings: Settings) -> Detector | None:
    """The bundle's detector with every tenant's rule resolved; None for a seed-only bundle.
    Raises OodStatsError (stats absent or not matching the model) or UnknownAcceptanceError."""
    if manifest.ood_detector is None:
        if settings.tenant_acceptance:
            raise UnknownAcceptanceError(
                "OOD_TENANT_ACCEPTANCE is set but the bundle has no ood_detector to pick thresholds from"
            )
        return None
    stats = load_detector_stats(bundle_dir, manifest)
    return build_detector(manifest.ood_detector, stats, settings.tenant_acceptance)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; without `settings`, read them from the environment (and fail fast)."""
    resolved = settings if settings is not None else get_settings()
    configure_logging(JsonFormatter("ood", fields=LOG_FIELDS), resolved.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manifest = load_manifest(resolved.bundle_dir)
        detector = load_detector(resolved.bundle_dir, manifest, resolved)
        app.state.detector = detector
        app.state.manifest = manifest
        log.info(
            "ood.ready",
            extra={
                "model": manifest.name,
                "version": manifest.version,
                "sha256": manifest.onnx_sha256,
                "ood_rule": list(detector.default.rule) if detector is not None else None,
                "tenants_with_own_acceptance": sorted(detector.tenants) if detector is not None else [],
            },
        )
        yield
        app.state.manifest = None
        app.state.detector = None

    app = internal_fastapi("SkinTriage OOD", require_internal_token, version="1.0.0", lifespan=lifespan)
    app.state.manifest = None
    app.state.detector = None
    install_settings(app, resolved)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, service="ood")
    app.include_router(router)
    return app
