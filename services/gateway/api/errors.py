"""The gateway's extension of the shared error handlers (`services/common/errors.py`): the public
names of the framework's HTTP error codes, the Bearer challenge on every 401, and metrics.
Downstream codes passing through and timeouts becoming 503 `upstream.unavailable` are the reports
client's work (`adapters/reports_client.py`)."""

from __future__ import annotations

from fastapi import FastAPI

from services.common import errors
from services.gateway.api.metrics import Metrics

# Public codes the gateway has always answered; the internal services use the shared names.
PUBLIC_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "upload.too_large",
}
BEARER_CHALLENGE = 'Bearer realm="skintriage"'


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Register the shared handlers with the gateway's codes, challenge and error counter."""
    errors.install_error_handlers(
        app, http_codes=PUBLIC_HTTP_CODES, challenge=BEARER_CHALLENGE, observer=metrics
    )
