"""Issue 12 sign-off end to end, through the public gateway of a real fleet (PostgreSQL + Redis, and
the embedded default): an admin makes a clinician and an integrator with keys; images come back
done; the priority worklist lists the unreviewed urgent results first; the clinician signs one off,
after which the report shows the review and its next step, the job's FHIR bundle is final and the
tenant's EHR receives that final bundle; the integrator may read but not sign off."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from pypdf import PdfReader

from bench.fleet_runner import Fleet
from tests.e2e.ehr_fleet import fleet_with_ehr, register_fhir_endpoint, wait_until
from tests.e2e.fleet import EMBEDDED, PRODUCTION, TENANTS
from tests.e2e.gateway_calls import bearer, error_code, new_user_with_key, submit_image
from tests.reports.fhir_invariants import check_bundle
from tests.reports.receivers import Receiver

pytestmark = pytest.mark.e2e

IMAGES = 4


@pytest.fixture(scope="module", params=[PRODUCTION, EMBEDDED])
def signing(
    request: pytest.FixtureRequest, tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fleet, Receiver]]:
    """A fleet whose reports service trusts the local EHR's certificate and delivers fast."""
    with fleet_with_ehr(
        request.param, tiny_bundle_dir, tmp_path_factory.mktemp(f"reviews-{request.param}")
    ) as pair:
        yield pair


def _priority_order(jobs: list[dict[str, Any]]) -> list[str]:
    """The worklist's order for done, unreviewed jobs: urgent first, then the others, oldest first."""
    ordered = sorted(
        jobs, key=lambda job: (job["result"]["triage_level"] != "urgent", job["created_at"], job["job_id"])
    )
    return [job["job_id"] for job in ordered]


def test_a_clinician_signs_off_and_the_ehr_receives_the_final_report(
    signing: tuple[Fleet, Receiver], ham_images: list[Path]
) -> None:
    fleet, receiver = signing
    admin = fleet.api_keys[TENANTS[0]]  # the tenant's first key acts as its admin
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as gateway:
        _, clinician = new_user_with_key(gateway, admin, "Dr Florence E2E", "clinician")
        _, integrator = new_user_with_key(gateway, admin, "EHR bridge", "integrator")
        register_fhir_endpoint(gateway, receiver, integrator, "ES384")

        jobs = []
        for path in ham_images[:IMAGES]:
            submitted = submit_image(gateway, integrator, path.name, path.read_bytes(), Prefer="wait=30")
            assert submitted.status_code == 200, submitted.text
            assert submitted.json()["status"] == "done"
            jobs.append(submitted.json())

        # The worklist before any review: every result awaits review, urgent ones first.
        worklist = gateway.get("/v1/reports", params={"sort": "priority"}, headers=bearer(clinician))
        assert worklist.status_code == 200, worklist.text
        listed = [item["job_id"] for item in worklist.json()["items"]]
        assert listed == _priority_order(jobs)
        assert all(item["result"]["review_state"] == "unreviewed" for item in worklist.json()["items"])

        target = worklist.json()["items"][0]
        job_id, model_level = target["job_id"], target["result"]["triage_level"]
        assert target["result"]["next_step"]["triage_level"] == model_level
        wait_until(lambda: len(receiver.bundles) >= IMAGES)  # each result's preliminary push

        # An integrator may not sign off; the clinician may (overriding the model's level).
        refused = gateway.post(
            f"/v1/jobs/{job_id}/reviews", json={"triage_level": "urgent"}, headers=bearer(integrator)
        )
        assert refused.status_code == 403 and error_code(refused) == "auth.forbidden"
        level = "monitor" if model_level != "monitor" else "routine"
        code = target["result"]["prediction"]["top_class"]
        signed = gateway.post(
            f"/v1/jobs/{job_id}/reviews",
            json={
                "triage_level": level,
                "working_diagnosis": {"code": code},
                "note": "Reviewed in clinic.",
                "expected_version": 0,
            },
            headers=bearer(clinician),
        )
        assert signed.status_code == 201, signed.text
        review = signed.json()
        assert review["version"] == 1 and review["reviewer"]["name"] == "Dr Florence E2E"
        assert review["agrees_with_model"] is False and review["model_triage_level"] == model_level

        # The report shows the review and the next step for the clinician's level.
        result = gateway.get(f"/v1/jobs/{job_id}", headers=bearer(integrator)).json()["result"]
        assert result["review"] == review
        assert result["review_state"] == "signed_off"
        assert result["next_step"]["triage_level"] == level and result["next_step"]["text"]
        history = gateway.get(f"/v1/jobs/{job_id}/reviews", headers=bearer(integrator)).json()["items"]
        assert [item["version"] for item in history] == [1]

        # The job's bundle is final, and the EHR received the final one (a conditional update).
        fhir = gateway.get(f"/v1/jobs/{job_id}/fhir", headers=bearer(clinician)).json()
        Bundle.model_validate(fhir)
        assert check_bundle(fhir) == []
        [report] = [
            e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
        ]
        assert report["status"] == "final"
        [practitioner] = [
            e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "Practitioner"
        ]
        assert practitioner["name"] == [{"text": "Dr Florence E2E"}]

        def final_push() -> dict[str, Any] | None:
            for bundle in receiver.bundles:
                for entry in bundle["entry"]:
                    resource = entry["resource"]
                    if (
                        resource["resourceType"] == "DiagnosticReport"
                        and resource["identifier"][0]["value"] == job_id
                        and resource["status"] == "final"
                    ):
                        return bundle
            return None

        pushed = wait_until(final_push)
        assert check_bundle(pushed) == []
        [request] = [
            e["request"] for e in pushed["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
        ]
        assert request["method"] == "PUT" and request["url"].startswith("DiagnosticReport?identifier=")
        deliveries = gateway.get(f"/v1/jobs/{job_id}/deliveries", headers=bearer(integrator)).json()["items"]
        assert [d["kind"] for d in deliveries] == ["fhir", "fhir"]

        pdf = gateway.get(f"/v1/jobs/{job_id}/report.pdf", headers=bearer(clinician))
        text = " ".join(PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text().split())
        assert "Signed off by Dr Florence E2E" in text and result["next_step"]["text"] in text

        # The signed job leaves the head of the worklist; the filter finds it.
        after = gateway.get("/v1/reports", params={"sort": "priority"}, headers=bearer(clinician)).json()
        assert [item["job_id"] for item in after["items"]] == [*(j for j in listed if j != job_id), job_id]
        signed_off = gateway.get(
            "/v1/reports", params={"review_state": "signed_off"}, headers=bearer(clinician)
        )
        assert [item["job_id"] for item in signed_off.json()["items"]] == [job_id]

        # Another tenant sees none of it.
        other = fleet.api_keys[TENANTS[1]]
        assert gateway.get(f"/v1/jobs/{job_id}/reviews", headers=bearer(other)).status_code == 404
