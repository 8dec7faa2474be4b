"""Issue 11 items 2 and 3: webhooks signed per Standard Webhooks and FHIR pushes authenticated per
SMART Backend Services, sent by the reports service's dispatcher to real HTTPS receivers
(tests/reports/receivers.py), retried, logged and replayable; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session
from standardwebhooks import Webhook, WebhookVerificationError

from services.reports.api.app import create_app
from services.reports.config import Settings
from services.reports.db.deliveries import claim_due, replay
from services.reports.db.models import Delivery
from services.reports.db.types import utc_now
from services.reports.domain.errors import DeliveryPendingError
from services.reports.domain.webhook_signing import new_secret
from tests.reports.conftest import INTERNAL_TOKEN
from tests.reports.factories import job_body, report_body, stored_image, tenant_headers
from tests.reports.receivers import Receiver, Tls, https_receiver, make_tls

CLASSES = {"mel": "Melanoma", "nv": "Melanocytic nevus"}


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png((180, 120, 100))
HEATMAP = _png((255, 0, 0))


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    with https_receiver(tls) as running:
        yield running


def _delivery_settings(settings: Settings, tls: Tls, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "delivery_interval_seconds": 0.05,
        "delivery_retry_base_seconds": 0.05,
        "delivery_retry_max_delay_seconds": 0.2,
        "delivery_timeout_seconds": 5.0,
        "delivery_ca_bundle": str(tls.cert_file),
    }
    values.update(overrides)
    return settings.model_copy(update=values)


@pytest.fixture
def app_client(settings: Settings, tls: Tls) -> Iterator[TestClient]:
    """The reports app with its dispatcher running fast and trusting the receivers' certificate."""
    app = create_app(_delivery_settings(settings, tls))
    with TestClient(app, headers={"X-Internal-Token": INTERNAL_TOKEN}) as test_client:
        yield test_client


def _finish_job(
    client: TestClient, tenant: str, job_id: str, *, status: str = "done", batch_id: str | None = None
) -> None:
    extra = {"batch_id": batch_id} if batch_id else {}
    body = job_body(tenant, job_id=job_id, image=stored_image(IMAGE), **extra)
    assert client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant)).status_code == 201
    report = report_body(
        tenant, job_id, status=status, decision="accepted" if status == "done" else "rejected_ood"
    )
    report["heatmap_png_b64"] = base64.b64encode(HEATMAP).decode()
    report["prediction"]["class_display_names"] = CLASSES
    if status == "rejected":
        report["prediction"] = None
    answer = client.put(f"/internal/v1/reports/{job_id}", json=report, headers=tenant_headers(tenant))
    assert answer.status_code == 200, answer.text


def _add_webhook(client: TestClient, tenant: str, url: str, events: list[str]) -> dict[str, Any]:
    answer = client.post(
        "/internal/v1/webhooks", json={"url": url, "events": events}, headers=tenant_headers(tenant)
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _deliveries(client: TestClient, tenant: str, job_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/internal/v1/jobs/{job_id}/deliveries", headers=tenant_headers(tenant))
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _settled(
    client: TestClient, tenant: str, job_id: str, count: int = 1, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The job's deliveries once `count` exist and none is pending any more."""
    deadline = time.monotonic() + timeout
    while True:
        items = _deliveries(client, tenant, job_id)
        if len(items) >= count and all(item["status"] != "pending" for item in items):
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.05)


# ---- webhooks -------------------------------------------------------------------------------


def test_job_finished_is_signed_per_standard_webhooks_and_retried_until_delivered(
    app_client: TestClient, tenant: str, receiver: Receiver
) -> None:
    hook = _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    assert hook["secret"].startswith("whsec_")
    receiver.scripts["/hook"] = [500, 503]

    _finish_job(app_client, tenant, "job_hook")

    [delivery] = _settled(app_client, tenant, "job_hook")
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    assert delivery["last_status_code"] == 200
    requests = receiver.wait_for(3, "/hook")
    assert [r.status for r in requests] == [500, 503, 200]
    # Every attempt is the same message: one id, one body, each verifiable by the library.
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    payload = Webhook(hook["secret"]).verify(requests[-1].body, requests[-1].headers)
    assert payload["type"] == "job.finished"
    assert payload["data"]["job_id"] == "job_hook"
    assert payload["data"]["status"] == "done"
    assert payload["data"]["triage_level"] == "urgent"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(requests[-1].body, requests[-1].headers)


def test_a_rotated_secret_overlaps_so_both_secrets_verify(
    app_client: TestClient, tenant: str, receiver: Receiver
) -> None:
    hook = _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    rotated = app_client.post(
        f"/internal/v1/webhooks/{hook['webhook_id']}/rotate-secret", headers=tenant_headers(tenant)
    ).json()
    assert rotated["secret"] != hook["secret"]
    assert rotated["previous_secret_expires_at"] is not None

    _finish_job(app_client, tenant, "job_rotated")

    [request] = receiver.wait_for(1, "/hook")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], rotated["secret"]):
        assert Webhook(secret).verify(request.body, request.headers)["data"]["job_id"] == "job_rotated"
    listed = app_client.get("/internal/v1/webhooks", headers=tenant_headers(tenant)).json()["items"]
    assert "secret" not in listed[0]
    assert listed[0]["previous_secret_expires_at"] is not None


def test_without_overlap_only_the_new_secret_signs(
    settings: Settings, tls: Tls, tenant: str, receiver: Receiver
) -> None:
    app = create_app(_delivery_settings(settings, tls, webhook_secret_overlap_hours=0))
    with TestClient(app, headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
        hook = _add_webhook(client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
        rotated = client.post(
            f"/internal/v1/webhooks/{hook['webhook_id']}/rotate-secret", headers=tenant_headers(tenant)
        ).json()
        _finish_job(client, tenant, "job_no_overlap")
        [request] = receiver.wait_for(1, "/hook")
    assert Webhook(rotated["secret"]).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(request.body, request.headers)


def test_a_refusal_fails_at_once_and_a_replay_delivers_the_same_message(
    app_client: TestClient, tenant: str, receiver: Receiver
) -> None:
    _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    receiver.scripts["/hook"] = [410]
    _finish_job(app_client, tenant, "job_refused")

    [failed] = _settled(app_client, tenant, "job_refused")
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    assert failed["last_status_code"] == 410
    assert "410" in failed["last_error"]

    replayed = app_client.post(
        f"/internal/v1/deliveries/{failed['delivery_id']}/replay", headers=tenant_headers(tenant)
    )
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "pending"
    [delivered] = _settled(app_client, tenant, "job_refused")
    assert delivered["status"] == "delivered"
    assert delivered["attempts"] == 2
    first, second = receiver.wait_for(2, "/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == failed["delivery_id"]
    assert first.body == second.body


def test_retries_stop_at_the_end_of_the_window(
    settings: Settings, tls: Tls, tenant: str, receiver: Receiver
) -> None:
    app = create_app(_delivery_settings(settings, tls, delivery_retry_window_seconds=0.6))
    receiver.scripts["/hook"] = [503] * 1000
    with TestClient(app, headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
        _add_webhook(client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
        _finish_job(client, tenant, "job_down")
        [delivery] = _settled(client, tenant, "job_down")
    assert delivery["status"] == "failed"
    assert delivery["attempts"] >= 2
    assert delivery["last_status_code"] == 503


def test_an_unreachable_receiver_is_retried_and_logged(settings: Settings, tls: Tls, tenant: str) -> None:
    app = create_app(_delivery_settings(settings, tls, delivery_retry_window_seconds=0.5))
    with TestClient(app, headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
        # Nothing listens on port 9 of the loopback: the connection is refused.
        _add_webhook(client, tenant, "https://127.0.0.1:9/hook", ["job.finished"])
        _finish_job(client, tenant, "job_unreachable")
        [delivery] = _settled(client, tenant, "job_unreachable")
    assert delivery["status"] == "failed"
    assert delivery["attempts"] >= 2
    assert delivery["last_status_code"] is None
    assert "ConnectError" in delivery["last_error"]


def test_batch_finished_is_sent_once_when_its_last_job_ends(
    app_client: TestClient, tenant: str, receiver: Receiver, db: Session
) -> None:
    _add_webhook(app_client, tenant, f"{receiver.base_url}/batches", ["batch.finished"])
    body = {"batch_id": "batch_1", "client_ref": "clinic-7", "total": 2}
    assert (
        app_client.post("/internal/v1/batches", json=body, headers=tenant_headers(tenant)).status_code == 201
    )
    _finish_job(app_client, tenant, "job_b1", batch_id="batch_1")
    assert db.query(Delivery).count() == 0  # one job of two ended: nothing to announce

    _finish_job(app_client, tenant, "job_b2", batch_id="batch_1", status="rejected")

    [request] = receiver.wait_for(1, "/batches")
    payload = request.body.decode()
    assert '"type":"batch.finished"' in payload
    assert '"counts":{"done":1,"rejected":1}' in payload
    assert db.query(Delivery).count() == 1


def test_each_ended_job_is_announced_once(
    app_client: TestClient, tenant: str, receiver: Receiver, db: Session
) -> None:
    _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    _finish_job(app_client, tenant, "job_twice")
    # A redelivered result, then a late failure: the job had already ended.
    again = report_body(tenant, "job_twice")
    app_client.put("/internal/v1/reports/job_twice", json=again, headers=tenant_headers(tenant))
    failure = {"job_id": "job_twice", "tenant_id": tenant, "error_code": "task.timeout", "message": "late"}
    app_client.post("/internal/v1/jobs/job_twice/fail", json=failure, headers=tenant_headers(tenant))

    assert len(_settled(app_client, tenant, "job_twice")) == 1
    assert len(receiver.wait_for(1, "/hook")) == 1


def test_failures_are_announced_but_never_queued_jobs_are_not(
    app_client: TestClient, tenant: str, receiver: Receiver, db: Session
) -> None:
    _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    for job_id, code in (("job_failed", "task.failed"), ("job_unqueued", "queue.unavailable")):
        body = job_body(tenant, job_id=job_id)
        app_client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant))
        failure = {"job_id": job_id, "tenant_id": tenant, "error_code": code, "message": "x"}
        assert (
            app_client.post(
                f"/internal/v1/jobs/{job_id}/fail", json=failure, headers=tenant_headers(tenant)
            ).status_code
            == 200
        )

    [delivery] = _settled(app_client, tenant, "job_failed")
    assert delivery["status"] == "delivered"
    [request] = receiver.wait_for(1, "/hook")
    assert b'"status":"failed"' in request.body and b'"error_code":"task.failed"' in request.body
    # The client was told the never-queued job failed; a retry may still run it.
    assert _deliveries(app_client, tenant, "job_unqueued") == []


def test_a_removed_webhook_gets_nothing_more(app_client: TestClient, tenant: str, receiver: Receiver) -> None:
    hook = _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    removed = app_client.delete(f"/internal/v1/webhooks/{hook['webhook_id']}", headers=tenant_headers(tenant))
    assert removed.status_code == 204
    _finish_job(app_client, tenant, "job_after_removal")
    assert _deliveries(app_client, tenant, "job_after_removal") == []
    assert app_client.get("/internal/v1/webhooks", headers=tenant_headers(tenant)).json()["items"] == []
    again = app_client.delete(f"/internal/v1/webhooks/{hook['webhook_id']}", headers=tenant_headers(tenant))
    assert again.json()["error"]["code"] == "webhook.not_found"


@pytest.mark.parametrize(
    "url",
    [
        "http://receiver.example/hook",
        "ftp://receiver.example/hook",
        "https://user:pw@receiver.example/hook",
        "https:///x",
        "https://[::1]/hook",
    ],
)
def test_receivers_must_be_https_without_credentials(app_client: TestClient, tenant: str, url: str) -> None:
    answer = app_client.post(
        "/internal/v1/webhooks", json={"url": url, "events": ["job.finished"]}, headers=tenant_headers(tenant)
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "request.invalid"


@pytest.mark.parametrize("url", ["https://127.0.0.1:8443/hooks/skin?x=1", "https://ehr.example.org/fhir/R4"])
def test_https_urls_with_a_port_path_or_ip_literal_are_taken(
    app_client: TestClient, tenant: str, url: str
) -> None:
    answer = app_client.post(
        "/internal/v1/webhooks", json={"url": url, "events": ["job.finished"]}, headers=tenant_headers(tenant)
    )
    assert answer.status_code == 201
    assert answer.json()["url"] == url


def test_deliveries_and_endpoints_are_the_tenants_own(
    app_client: TestClient, tenant: str, other_tenant: str, receiver: Receiver
) -> None:
    hook = _add_webhook(app_client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
    _finish_job(app_client, tenant, "job_mine")
    [delivery] = _settled(app_client, tenant, "job_mine")
    other = tenant_headers(other_tenant)
    assert app_client.get("/internal/v1/jobs/job_mine/deliveries", headers=other).status_code == 404
    assert (
        app_client.post(
            f"/internal/v1/deliveries/{delivery['delivery_id']}/replay", headers=other
        ).status_code
        == 404
    )
    assert (
        app_client.get(f"/internal/v1/webhooks/{hook['webhook_id']}/deliveries", headers=other).status_code
        == 404
    )
    assert app_client.get("/internal/v1/webhooks", headers=other).json()["items"] == []
    log = app_client.get(
        f"/internal/v1/webhooks/{hook['webhook_id']}/deliveries", headers=tenant_headers(tenant)
    )
    assert [d["delivery_id"] for d in log.json()["items"]] == [delivery["delivery_id"]]


# ---- the dispatcher's claims ------------------------------------------------------------------


def test_a_claim_is_held_for_one_attempt_and_due_again_if_its_sender_dies(
    app_client: TestClient, tenant: str, db: Session
) -> None:
    # No receiver: the delivery is planned, then claimed here as a dispatcher would.
    app_client.app.state.dispatcher.stop()  # type: ignore[attr-defined]
    _add_webhook(app_client, tenant, "https://127.0.0.1:9/hook", ["job.finished"])
    _finish_job(app_client, tenant, "job_claimed")
    now = utc_now()
    [claimed] = claim_due(db, now, 10, timedelta(seconds=60))
    db.commit()
    assert claimed.attempts == 1
    assert claim_due(db, now + timedelta(seconds=30), 10, timedelta(seconds=60)) == []
    # The sender died without recording anything: after the hold the delivery is due again.
    [again] = claim_due(db, now + timedelta(seconds=61), 10, timedelta(seconds=60))
    assert again.id == claimed.id and again.attempts == 2
    db.rollback()
    with pytest.raises(DeliveryPendingError):
        replay(db, tenant, claimed.id, now, timedelta(hours=1))


# ---- FHIR push (SMART Backend Services) ---------------------------------------------------------


def _connect_ehr(
    client: TestClient, tenant: str, receiver: Receiver, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Point the tenant at the receiver's EHR and register the answered public key there, as an
    integrator would; returns the configuration sent and the endpoint answered."""
    config = {
        "base_url": f"{receiver.base_url}/fhir",
        "token_url": f"{receiver.base_url}/token",
        "client_id": "skintriage-test",
        **extra,
    }
    answer = client.put("/internal/v1/fhir-endpoint", json=config, headers=tenant_headers(tenant))
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    receiver.jwks, receiver.client_id = view["jwks"], config["client_id"]
    return config, view


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
def test_a_finished_job_is_pushed_to_the_ehr_with_a_smart_backend_token(
    app_client: TestClient, tenant: str, receiver: Receiver, algorithm: str
) -> None:
    _, view = _connect_ehr(app_client, tenant, receiver, algorithm=algorithm)
    assert view["algorithm"] == algorithm
    # The public key only: no private member of a JWK (EC or RSA) is ever answered.
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(view["jwks"]["keys"][0])
    # The EHR fails twice, then accepts.
    receiver.scripts["/fhir"] = [503, 500]

    _finish_job(app_client, tenant, "job_pushed")

    [delivery] = _settled(app_client, tenant, "job_pushed")
    assert receiver.problems == []
    assert delivery["kind"] == "fhir" and delivery["event"] == "fhir.push"
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    # One token served all three attempts; the bundle that got through is a valid transaction.
    assert len(receiver.wait_for(1, "/token")) == 1
    [bundle] = receiver.bundles
    types = sorted(entry["resource"]["resourceType"] for entry in bundle["entry"])
    assert "DiagnosticReport" in types and "Provenance" in types
    # Conditional creates: the EHR's retry of a half-applied push creates nothing twice.
    assert all(entry["request"]["ifNoneExist"] for entry in bundle["entry"])


def test_a_key_the_ehr_does_not_know_is_refused_and_the_push_fails(
    app_client: TestClient, tenant: str, receiver: Receiver
) -> None:
    config, first = _connect_ehr(app_client, tenant, receiver)
    # A new key pair that nobody registered with the EHR.
    rotated = app_client.put(
        "/internal/v1/fhir-endpoint", json={**config, "rotate_key": True}, headers=tenant_headers(tenant)
    )
    assert rotated.status_code == 200
    assert rotated.json()["key_id"] != first["key_id"]

    _finish_job(app_client, tenant, "job_unknown_key")

    [delivery] = _settled(app_client, tenant, "job_unknown_key")
    assert delivery["status"] == "failed"
    assert delivery["last_status_code"] == 401
    assert "token endpoint" in delivery["last_error"]
    assert receiver.bundles == []


def test_rejected_jobs_are_pushed_and_failed_jobs_are_not(
    app_client: TestClient, tenant: str, receiver: Receiver
) -> None:
    _connect_ehr(app_client, tenant, receiver)
    _finish_job(app_client, tenant, "job_rejected", status="rejected")
    body = job_body(tenant, job_id="job_gave_up")
    app_client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant))
    failure = {"job_id": "job_gave_up", "tenant_id": tenant, "error_code": "task.failed", "message": "x"}
    app_client.post("/internal/v1/jobs/job_gave_up/fail", json=failure, headers=tenant_headers(tenant))

    [delivery] = _settled(app_client, tenant, "job_rejected")
    assert delivery["status"] == "delivered", (delivery, receiver.problems)
    assert _deliveries(app_client, tenant, "job_gave_up") == []
    [bundle] = receiver.bundles
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert observations and len(observations) < 4  # the verdict, never a triage level or probabilities


def test_the_fhir_endpoint_is_read_and_removed(app_client: TestClient, tenant: str) -> None:
    headers = tenant_headers(tenant)
    assert app_client.get("/internal/v1/fhir-endpoint", headers=headers).json()["error"]["code"] == (
        "fhir_endpoint.not_found"
    )
    config = {
        "base_url": "https://ehr.example/fhir",
        "token_url": "https://ehr.example/token",
        "client_id": "c",
    }
    app_client.put("/internal/v1/fhir-endpoint", json=config, headers=headers)
    view = app_client.get("/internal/v1/fhir-endpoint", headers=headers).json()
    assert view["algorithm"] == "ES384" and view["jwks"]["keys"][0]["kid"] == view["key_id"]
    assert app_client.delete("/internal/v1/fhir-endpoint", headers=headers).status_code == 204
    assert app_client.get("/internal/v1/fhir-endpoint", headers=headers).status_code == 404
    insecure = app_client.put(
        "/internal/v1/fhir-endpoint",
        json={**config, "token_url": "http://ehr.example/token"},
        headers=headers,
    )
    assert insecure.json()["error"]["code"] == "request.invalid"


class _WakeCounter:
    """Stands in for the dispatcher's wake-up (the dispatcher itself is the real one elsewhere)."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def stop(self, timeout_seconds: float = 10.0) -> None:
        return None


def test_a_stored_report_wakes_the_dispatcher_only_when_it_planned_a_delivery(
    settings: Settings, tenant: str, receiver: Receiver
) -> None:
    # A wake costs the dispatcher a round of queries: a tenant without webhooks or FHIR endpoint
    # (most jobs) must not pay it on every report.
    app = create_app(settings.model_copy(update={"delivery_interval_seconds": 0}))
    with TestClient(app, headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
        counter = _WakeCounter()
        app.state.dispatcher = counter
        _finish_job(client, tenant, "no_subscriber")
        assert counter.wakes == 0
        _add_webhook(client, tenant, f"{receiver.base_url}/hook", ["job.finished"])
        _finish_job(client, tenant, "subscribed")
        assert counter.wakes == 1
        assert len(_deliveries(client, tenant, "subscribed")) == 1
