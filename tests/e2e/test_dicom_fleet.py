"""Issue 11 item 5 through the real fleet (PostgreSQL + Redis, and the embedded default): DICOM
instances built with pydicom (uncompressed, JPEG baseline, RLE) sent to `POST /v1/dicom` and as a
DICOMweb STOW-RS request, triaged like any image, with only the mapped header fields stored and the
patient's ID turned into an opaque reference."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, undefer

from services.reports.db.models import Job
from tests.e2e.gateway_calls import bearer, error_code
from tests.gateway.dicom_samples import (
    CT_IMAGE_SOP_CLASS,
    STUDY_UID,
    dermoscopy_instance,
    stow_body,
)

pytestmark = pytest.mark.e2e

PATIENT_ID = "MRN-4471-SECRET"
FINISHED = {"done", "rejected"}
SIZE = (200, 150)


def _send(gateway: httpx.Client, key: str, data: bytes, **headers: str) -> httpx.Response:
    return gateway.post(
        "/v1/dicom", content=data, headers=bearer(key, **{"Content-Type": "application/dicom", **headers})
    )


def _stored_job(database: Engine, job_id: str) -> Job:
    with Session(database) as session:
        job = session.scalar(select(Job).options(undefer(Job.image)).where(Job.id == job_id))
        assert job is not None
        session.expunge(job)
        return job


@pytest.mark.parametrize("transfer_syntax", ["explicit-le", "jpeg-baseline", "rle"])
def test_a_dicom_instance_is_triaged_with_only_its_mapped_fields_kept(
    gateway: httpx.Client, key_a: str, database: Engine, transfer_syntax: Any
) -> None:
    uid = "1.2.826.0.1.3680043.8.498.7." + str(
        ["explicit-le", "jpeg-baseline", "rle"].index(transfer_syntax) + 1
    )
    data = dermoscopy_instance(
        transfer_syntax,
        patient_id=PATIENT_ID,
        size=SIZE,
        sop_instance_uid=uid,
        attributes={
            "PatientAge": "054Y",
            "PatientSex": "F",
            "BodyPartExamined": "BACK",
            "ImageLaterality": "L",
        },
    )

    answer = _send(gateway, key_a, data, Prefer="wait=30")

    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] in FINISHED
    assert job["metadata"]["age"] == 54 and job["metadata"]["sex"] == "female"
    assert job["metadata"]["body_site"] == "back"
    assert job["dicom"]["sop_instance_uid"] == uid and job["dicom"]["study_instance_uid"] == STUDY_UID
    assert job["dicom"]["laterality"] == "left"
    patient_ref = job["metadata"]["patient_ref"]
    assert patient_ref.startswith("dicom-") and PATIENT_ID not in patient_ref
    stored = _stored_job(database, job["job_id"])
    assert PATIENT_ID not in repr(
        (stored.patient_ref, stored.dicom, stored.filename, stored.client_ref, stored.idempotency_key)
    )
    # The stored image is the re-encoded pixels, never the DICOM file.
    assert not bytes(stored.image[:132]).endswith(b"DICM")
    # The FHIR output refers to the study the image came from.
    fhir = gateway.get(f"/v1/jobs/{job['job_id']}/fhir", headers=bearer(key_a)).json()
    report = next(e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{STUDY_UID}"


def test_the_same_instance_sent_again_is_the_same_job_and_one_patient_keeps_one_ref(
    gateway: httpx.Client, key_a: str, key_b: str
) -> None:
    first_data = dermoscopy_instance(patient_id=PATIENT_ID, size=SIZE, sop_instance_uid="1.2.3.4.5.6.1")
    first = _send(gateway, key_a, first_data)
    again = _send(gateway, key_a, first_data)
    other = _send(
        gateway,
        key_a,
        dermoscopy_instance(patient_id=PATIENT_ID, size=SIZE, sop_instance_uid="1.2.3.4.5.6.2"),
    )
    elsewhere = _send(gateway, key_b, first_data)

    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replay"] == "true"
    refs = {
        name: gateway.get(answer.headers["Location"], headers=bearer(key)).json()["metadata"]["patient_ref"]
        for name, answer, key in (
            ("first", first, key_a),
            ("other", other, key_a),
            ("elsewhere", elsewhere, key_b),
        )
    }
    # One patient of one tenant: one reference; the same ID at another tenant: another one.
    assert refs["first"] == refs["other"] != refs["elsewhere"]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (dermoscopy_instance(sop_class=CT_IMAGE_SOP_CLASS), 415, "dicom.unsupported_sop_class"),
        (dermoscopy_instance(with_pixels=False), 422, "dicom.no_pixels"),
        (dermoscopy_instance()[:700], 422, "dicom.malformed"),
        (b"not a dicom file at all" * 10, 422, "dicom.malformed"),
    ],
)
def test_bad_instances_get_a_4xx_with_a_code_and_leave_no_job(
    gateway: httpx.Client, key_a: str, database: Engine, data: bytes, status: int, code: str
) -> None:
    with Session(database) as session:
        before = session.query(Job).count()

    answer = _send(gateway, key_a, data)

    assert answer.status_code == status, answer.text
    assert error_code(answer) == code
    with Session(database) as session:
        assert session.query(Job).count() == before


def test_a_stow_request_stores_the_good_instances_and_names_the_bad_ones(
    gateway: httpx.Client, key_a: str
) -> None:
    good = [dermoscopy_instance(size=SIZE, sop_instance_uid=f"1.2.3.4.5.7.{i}") for i in (1, 2)]
    bad = dermoscopy_instance(sop_class=CT_IMAGE_SOP_CLASS, sop_instance_uid="1.2.3.4.5.7.3")
    content_type, body = stow_body(
        [("application/dicom", good[0]), ("application/dicom", bad), ("application/dicom", good[1])]
    )

    answer = gateway.post(
        "/dicomweb/studies", content=body, headers=bearer(key_a, **{"Content-Type": content_type})
    )

    assert answer.status_code == 202, answer.text
    assert answer.headers["content-type"].startswith("application/dicom+json")
    stored = answer.json()["00081199"]["Value"]
    failed = answer.json()["00081198"]["Value"]
    assert sorted(item["00081155"]["Value"][0] for item in stored) == ["1.2.3.4.5.7.1", "1.2.3.4.5.7.2"]
    assert len(failed) == 1 and failed[0]["00081197"]["Value"] == [0x0122]
    for item in stored:
        job_url = item["00081190"]["Value"][0]
        assert gateway.get(job_url, headers=bearer(key_a)).status_code == 200


def test_dicom_needs_its_media_type(gateway: httpx.Client, key_a: str) -> None:
    answer = gateway.post(
        "/v1/dicom", content=dermoscopy_instance(), headers=bearer(key_a, **{"Content-Type": "image/jpeg"})
    )
    assert answer.status_code == 415
