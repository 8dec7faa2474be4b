"""Issue 11 end to end, through the public gateway of a real fleet (PostgreSQL + Redis, and the
embedded default): a tenant sets its FHIR endpoint and a webhook, submits an image, and a local
EHR (SMART token endpoint + FHIR server, over HTTPS; tests/reports/receivers.py) receives the
transaction Bundle after failing twice, while the webhook receiver gets a signed `job.finished`
and `batch.finished`; the FHIR Bundle and the PDF are read back through the API."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from pypdf import PdfReader
from standardwebhooks import Webhook

from bench.fleet_runner import Fleet
from tests.e2e.ehr_fleet import fleet_with_ehr, register_fhir_endpoint, wait_until
from tests.e2e.fleet import EMBEDDED, PRODUCTION, TENANTS
from tests.e2e.gateway_calls import bearer, submit_batch, submit_image, wait_for_batch
from tests.reports.fhir_invariants import check_bundle
from tests.reports.receivers import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=[PRODUCTION, EMBEDDED])
def integration(
    request: pytest.FixtureRequest, tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fleet, Receiver]]:
    """A fleet whose reports service trusts the local receivers' certificate and retries fast."""
    with fleet_with_ehr(
        request.param, tiny_bundle_dir, tmp_path_factory.mktemp(f"ehr-{request.param}")
    ) as pair:
        yield pair


def test_a_finished_job_reaches_the_ehr_and_the_webhook_and_reads_back_as_fhir_and_pdf(
    integration: tuple[Fleet, Receiver], ham_images: list[Path]
) -> None:
    fleet, receiver = integration
    key = fleet.api_keys[TENANTS[0]]
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as gateway:
        register_fhir_endpoint(gateway, receiver, key, "RS384")
        hook = gateway.post(
            "/v1/webhooks",
            json={"url": f"{receiver.base_url}/hook", "events": ["job.finished", "batch.finished"]},
            headers=bearer(key),
        )
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]
        receiver.scripts["/fhir"] = [503, 500]  # the EHR's first two answers

        submitted = submit_image(gateway, key, "lesion.jpg", ham_images[0].read_bytes(), Prefer="wait=30")
        assert submitted.status_code in (200, 202), submitted.text
        job_id = submitted.json()["job_id"]

        deliveries = wait_until(
            lambda: (
                items
                if len(
                    items := gateway.get(f"/v1/jobs/{job_id}/deliveries", headers=bearer(key)).json()["items"]
                )
                == 2
                and all(item["status"] != "pending" for item in items)
                else None
            )
        )
        # Done or rejected (the tiny bundle's verdicts are arbitrary), the result is pushed either way.
        by_kind = {item["kind"]: item for item in deliveries}
        assert by_kind["fhir"]["status"] == "delivered", (by_kind, receiver.problems)
        assert by_kind["fhir"]["attempts"] == 3
        assert by_kind["webhook"]["status"] == "delivered"
        assert receiver.problems == []

        [pushed] = receiver.bundles
        assert check_bundle(pushed) == []
        [webhook] = [r for r in receiver.requests if r.path == "/hook"]
        event = Webhook(secret).verify(webhook.body, webhook.headers)
        assert event["type"] == "job.finished" and event["data"]["job_id"] == job_id

        fhir = gateway.get(f"/v1/jobs/{job_id}/fhir", headers=bearer(key))
        assert fhir.status_code == 200
        assert fhir.headers["content-type"].startswith("application/fhir+json")
        collection = fhir.json()
        Bundle.model_validate(collection)
        assert collection["type"] == "collection" and check_bundle(collection) == []
        transaction = gateway.get(
            f"/v1/jobs/{job_id}/fhir", params={"type": "transaction"}, headers=bearer(key)
        )
        assert [e["request"]["ifNoneExist"] for e in transaction.json()["entry"]] == [
            e["request"]["ifNoneExist"] for e in pushed["entry"]
        ]

        pdf = gateway.get(f"/v1/jobs/{job_id}/report.pdf", headers=bearer(key))
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
        assert job_id in text and "not a diagnosis" in text.lower()

        # Another tenant sees none of it.
        other = fleet.api_keys[TENANTS[1]]
        assert gateway.get(f"/v1/jobs/{job_id}/fhir", headers=bearer(other)).status_code == 404
        assert gateway.get(f"/v1/jobs/{job_id}/deliveries", headers=bearer(other)).status_code == 404


def test_a_batch_is_announced_once_all_its_jobs_end(
    integration: tuple[Fleet, Receiver], ham_images: list[Path]
) -> None:
    fleet, receiver = integration
    key = fleet.api_keys[TENANTS[0]]
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as gateway:
        # The first test's webhook (job.finished and batch.finished) is still registered.
        assert len(gateway.get("/v1/webhooks", headers=bearer(key)).json()["items"]) == 1
        accepted = submit_batch(gateway, key, ham_images[1:4])
        assert accepted.status_code == 202, accepted.text
        batch_id = accepted.json()["batch_id"]
        wait_for_batch(gateway, key, batch_id)

        def announced() -> list[dict[str, Any]]:
            bodies = [json.loads(r.body) for r in receiver.requests if r.path == "/hook"]
            return [b for b in bodies if b["type"] == "batch.finished" and b["data"]["batch_id"] == batch_id]

        [event] = wait_until(announced)
        assert event["data"]["total"] == 3 and sum(event["data"]["counts"].values()) == 3

        def job_events() -> list[dict[str, Any]]:
            bodies = [json.loads(r.body) for r in receiver.requests if r.path == "/hook"]
            return [b for b in bodies if b["type"] == "job.finished" and b["data"]["batch_id"] == batch_id]

        wait_until(lambda: len(job_events()) == 3)
        assert sorted(e["data"]["job_id"] for e in job_events()) == sorted(
            item["job_id"] for item in accepted.json()["items"]
        )
