"""Issue 12 end to end, through the public gateway of a real fleet (PostgreSQL + Redis, and the
embedded default): a clinician creates a lesion, submits two images naming it, reads its history
(both images oldest first, one change between them) and the comparison; another tenant gets 404,
and a submission naming another patient's lesion is refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from services.reports.db.models import AuditEvent
from tests.e2e.gateway_calls import bearer, error_code, submit_image_with_fields

pytestmark = pytest.mark.e2e

PATIENT = "e2e-patient-lesion"


def test_a_lesion_followed_over_two_images_shows_its_history_and_comparison(
    gateway: httpx.Client, key_a: str, key_b: str, ham_images: list[Path], database: Engine
) -> None:
    created = gateway.post(
        "/v1/lesions",
        json={
            "patient_ref": PATIENT,
            "label": "naevus left scapula",
            "body_site": "back",
            "laterality": "left",
            "body_map": {"view": "back", "x": 0.35, "y": 0.3},
        },
        headers=bearer(key_a),
    )
    assert created.status_code == 201, created.text
    lesion_id = created.json()["lesion_id"]

    jobs = []
    for path in ham_images[:2]:
        submitted = submit_image_with_fields(gateway, key_a, path, {"lesion_id": lesion_id}, Prefer="wait=30")
        assert submitted.status_code in (200, 202), submitted.text
        job = submitted.json()
        jobs.append(job["job_id"])
        finished = gateway.get(f"/v1/jobs/{job['job_id']}", headers=bearer(key_a)).json()
        assert finished["metadata"]["lesion_id"] == lesion_id
        assert finished["metadata"]["patient_ref"] == PATIENT  # taken from the lesion

    history = gateway.get(f"/v1/lesions/{lesion_id}", headers=bearer(key_a))
    assert history.status_code == 200, history.text
    body = history.json()
    assert [image["job_id"] for image in body["images"]] == jobs
    assert all(image["status"] == "done" for image in body["images"]), body["images"]
    assert all(0.0 < image["lesion_area_fraction"] < 1.0 for image in body["images"])
    [change] = body["changes"]
    assert (change["from_job_id"], change["to_job_id"]) == tuple(jobs)
    assert change["embedding_distance"] is not None and change["embedding_distance"] >= 0.0
    assert change["malignant_probability"]["delta"] == pytest.approx(
        body["images"][1]["malignant_probability"] - body["images"][0]["malignant_probability"], abs=1e-6
    )
    # The fleet runs the tiny test bundle, not the model the shipped calibration was fitted on.
    assert change["flags"]["appearance_changed"] is None
    assert any("another model" in note for note in change["notes"])

    comparison = gateway.get(
        f"/v1/lesions/{lesion_id}/comparison",
        params={"from_job": jobs[0], "to_job": jobs[1]},
        headers=bearer(key_a),
    )
    assert comparison.status_code == 200, comparison.text
    assert comparison.json()["embedding_distance"] == pytest.approx(change["embedding_distance"])
    assert comparison.headers["Cache-Control"] == "private, no-store"

    listing = gateway.get("/v1/lesions", params={"patient_ref": PATIENT}, headers=bearer(key_a))
    assert [item["lesion_id"] for item in listing.json()["items"]] == [lesion_id]
    assert listing.json()["items"][0]["image_count"] == 2

    stranger = gateway.get(f"/v1/lesions/{lesion_id}", headers=bearer(key_b))
    assert stranger.status_code == 404 and error_code(stranger) == "lesion.not_found"
    stranger_compare = gateway.get(
        f"/v1/lesions/{lesion_id}/comparison",
        params={"from_job": jobs[0], "to_job": jobs[1]},
        headers=bearer(key_b),
    )
    assert stranger_compare.status_code == 404

    with database.connect() as connection:
        actions = connection.scalars(
            select(AuditEvent.action).where(AuditEvent.resource_id == lesion_id).order_by(AuditEvent.id)
        ).all()
    assert actions == ["lesion.create", "lesion.read", "lesion.compare"]


def test_an_image_naming_another_patients_lesion_is_refused(
    gateway: httpx.Client, key_a: str, key_b: str, ham_images: list[Path]
) -> None:
    created = gateway.post("/v1/lesions", json={"patient_ref": PATIENT}, headers=bearer(key_a))
    lesion_id = created.json()["lesion_id"]

    mismatch = submit_image_with_fields(
        gateway, key_a, ham_images[0], {"lesion_id": lesion_id, "patient_ref": "someone-else"}
    )
    foreign = submit_image_with_fields(gateway, key_b, ham_images[0], {"lesion_id": lesion_id})
    malformed = submit_image_with_fields(gateway, key_a, ham_images[0], {"lesion_id": "not a lesion id!"})

    assert mismatch.status_code == 422 and error_code(mismatch) == "lesion.patient_mismatch"
    assert foreign.status_code == 404 and error_code(foreign) == "lesion.not_found"
    assert malformed.status_code == 422 and error_code(malformed) == "request.invalid"
