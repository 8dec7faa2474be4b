"""HTTP adapters: headers sent, and which failures are transient or permanent."""

from __future__ import annotations

import pickle

import httpx
import pytest
import respx

from contracts.ood import OodScoreRequest
from contracts.reports import JobFailure
from services.inference.adapters.ood_client import HttpOodClient
from services.inference.adapters.reports_client import HttpReportsClient
from services.inference.domain.errors import (
    PermanentError,
    TransientError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from tests.inference.conftest import OOD_URL, REPORTS_URL, TOKEN

REQUEST = OodScoreRequest(model_sha256="a" * 64, logits=[0.1, 0.2], embedding=[1.0])


def _ood() -> HttpOodClient:
    return HttpOodClient(OOD_URL, TOKEN, timeout_seconds=1.0)


@pytest.mark.parametrize(
    "outcome",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.Response(500),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(503),
        httpx.Response(429),
    ],
)
def test_unreachable_slow_or_failing_ood_is_a_transient_error(outcome: object) -> None:
    with respx.mock() as router:
        router.post(f"{OOD_URL}/v1/score").mock(side_effect=[outcome])

        with pytest.raises(TransientError) as caught:
            _ood().score(REQUEST, tenant_id="t", request_id=None)

    assert caught.value.code == "upstream.unavailable"


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_ood_4xx_is_a_permanent_error_keeping_the_downstream_code(status: int) -> None:
    with respx.mock() as router:
        router.post(f"{OOD_URL}/v1/score").respond(
            status, json={"error": {"code": "ood.some_code", "message": "no"}}
        )

        with pytest.raises(PermanentError) as caught:
            _ood().score(REQUEST, tenant_id="t", request_id=None)

    assert caught.value.code == "ood.some_code"


def test_4xx_without_an_error_body_gets_a_service_code() -> None:
    with respx.mock() as router:
        router.post(f"{OOD_URL}/v1/score").respond(404, text="not found")

        with pytest.raises(UpstreamRejectedError) as caught:
            _ood().score(REQUEST, tenant_id="t", request_id=None)

    assert caught.value.code == "ood.rejected"


def test_ood_answer_that_is_not_a_verdict_is_a_permanent_error() -> None:
    with respx.mock() as router:
        router.post(f"{OOD_URL}/v1/score").respond(200, json={"unexpected": True})

        with pytest.raises(PermanentError) as caught:
            _ood().score(REQUEST, tenant_id="t", request_id=None)

    assert caught.value.code == "ood.bad_response"


def test_clients_send_internal_token_tenant_and_request_id() -> None:
    with respx.mock() as router:
        route = router.post(f"{REPORTS_URL}/internal/v1/jobs/j%2F1/fail").respond(204)
        client = HttpReportsClient(REPORTS_URL, TOKEN, timeout_seconds=1.0)

        client.fail_job(
            JobFailure(job_id="j/1", tenant_id="tenant-b", error_code="x", message="m"), request_id="r-9"
        )

    headers = route.calls.last.request.headers
    assert headers["X-Internal-Token"] == TOKEN
    assert headers["X-Tenant-Id"] == "tenant-b"
    assert headers["X-Request-ID"] == "r-9"


@pytest.mark.parametrize(
    "error",
    [
        UpstreamRejectedError("ood", 409, "ood.model_mismatch", "other model"),
        UpstreamUnavailableError("reports", "reports timed out", {"path": "/x"}),
    ],
)
def test_errors_keep_their_code_through_celery_pickling(error: PermanentError | TransientError) -> None:
    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is type(error)
    assert (copy.code, copy.message, copy.details) == (error.code, error.message, error.details)
