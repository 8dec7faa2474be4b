"""OOD service client: POST /v1/score."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from contracts.ood import (
    OodScoreBatchRequest,
    OodScoreBatchResponse,
    OodScoreItem,
    OodScoreRequest,
    OodScoreResponse,
)
from services.inference.adapters.internal_http import InternalHttpClient
from services.inference.domain.errors import UpstreamRejectedError


class HttpOodClient:
    """Implements domain.ports.OodClient over HTTP."""

    def __init__(
        self, base_url: str, token: str, timeout_seconds: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = InternalHttpClient("ood", base_url, token, timeout_seconds, transport)

    def score(self, request: OodScoreRequest, *, tenant_id: str, request_id: str | None) -> OodScoreResponse:
        """Ask for a verdict on one model output."""
        response = self._http.send(
            "POST",
            "/v1/score",
            body=request.model_dump(mode="json"),
            tenant_id=tenant_id,
            request_id=request_id,
        )
        try:
            return OodScoreResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamRejectedError(
                "ood", response.status_code, "ood.bad_response", "OOD answered with an invalid body"
            ) from exc

    def score_many(
        self, requests: list[OodScoreRequest], *, tenant_id: str, request_id: str | None
    ) -> list[OodScoreItem]:
        """Verdicts for a micro-batch in one call: one item per request, in order, each a verdict
        or the error `score` would have raised for it."""
        body = OodScoreBatchRequest(items=requests)
        response = self._http.send(
            "POST",
            "/v1/score/batch",
            body=body.model_dump(mode="json"),
            tenant_id=tenant_id,
            request_id=request_id,
        )
        try:
            results = OodScoreBatchResponse.model_validate_json(response.content).results
        except ValidationError as exc:
            raise UpstreamRejectedError(
                "ood", response.status_code, "ood.bad_response", "OOD answered with an invalid body"
            ) from exc
        if len(results) != len(requests):
            raise UpstreamRejectedError(
                "ood", response.status_code, "ood.bad_response", "OOD answered a different number of items"
            )
        return results

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
