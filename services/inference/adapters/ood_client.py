"""OOD service client: POST /v1/score."""

from __future__ import annotations

import httpx

from contracts.ood import (
    OodScoreBatchRequest,
    OodScoreBatchResponse,
    OodScoreItem,
    OodScoreRequest,
    OodScoreResponse,
)
from services.inference.adapters.internal_http import InternalHttpClient, bad_answer, parse_answer


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
            body=request,
            tenant_id=tenant_id,
            request_id=request_id,
        )
        return parse_answer("ood", OodScoreResponse, response)

    def score_many(
        self, requests: list[OodScoreRequest], *, tenant_id: str, request_id: str | None
    ) -> list[OodScoreItem]:
        """Verdicts for a micro-batch in one call: one item per request, in order, each a verdict
        or the error `score` would have raised for it."""
        body = OodScoreBatchRequest(items=requests)
        response = self._http.send(
            "POST",
            "/v1/score/batch",
            body=body,
            tenant_id=tenant_id,
            request_id=request_id,
        )
        results = parse_answer("ood", OodScoreBatchResponse, response).results
        if len(results) != len(requests):
            raise bad_answer("ood", response, "answered a different number of items")
        return results

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
