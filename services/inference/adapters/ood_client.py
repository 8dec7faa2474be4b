"""OOD service client: POST /v1/score."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from contracts.ood import OodScoreRequest, OodScoreResponse
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

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
