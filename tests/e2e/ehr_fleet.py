"""A real fleet wired to a local HTTPS EHR (tests/reports/receivers.py) with fast delivery retries,
shared by the end-to-end tests that follow results into an EHR (issues 11 and 12)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from bench.fleet_runner import Fleet
from tests.e2e.fleet import TENANTS, backends
from tests.e2e.gateway_calls import bearer
from tests.reports.receivers import Receiver, https_receiver, make_tls

_T = TypeVar("_T")
EHR_CLIENT_ID = "skintriage-e2e"


@contextmanager
def fleet_with_ehr(backend: str, bundle_dir: Path, workdir: Path) -> Iterator[tuple[Fleet, Receiver]]:
    """A fleet whose reports service trusts the local EHR's certificate and retries fast."""
    tls = make_tls(workdir)
    extra_env = {
        "REPORTS_DELIVERY_CA_BUNDLE": str(tls.cert_file),
        "REPORTS_DELIVERY_INTERVAL_SECONDS": "0.2",
        "REPORTS_DELIVERY_RETRY_BASE_SECONDS": "0.2",
        "REPORTS_DELIVERY_RETRY_MAX_DELAY_SECONDS": "1",
    }
    with (
        https_receiver(tls) as receiver,
        backends(backend, workdir) as chosen,
        Fleet(chosen, bundle_dir, workdir, TENANTS, extra_env=extra_env) as fleet,
    ):
        yield fleet, receiver
        fleet.check_alive()


def wait_until(check: Callable[[], _T], timeout: float = 60.0) -> _T:
    """`check()`'s first truthy value; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def register_fhir_endpoint(gateway: httpx.Client, receiver: Receiver, api_key: str, algorithm: str) -> None:
    """Point the tenant's FHIR push at the local EHR (`PUT /v1/fhir-endpoint`, 201) and tell the
    EHR the key SkinTriage will sign its client assertions with."""
    endpoint = gateway.put(
        "/v1/fhir-endpoint",
        json={
            "base_url": f"{receiver.base_url}/fhir",
            "token_url": f"{receiver.base_url}/token",
            "client_id": EHR_CLIENT_ID,
            "algorithm": algorithm,
        },
        headers=bearer(api_key),
    )
    assert endpoint.status_code == 201, endpoint.text
    receiver.jwks, receiver.client_id = endpoint.json()["jwks"], EHR_CLIENT_ID
