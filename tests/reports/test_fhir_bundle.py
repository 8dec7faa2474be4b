"""The FHIR R4 Bundle of a finished job: valid for the fhir.resources R4B models, true to the
invariants those models do not check (tests/reports/fhir_invariants.py), deterministic, and
carrying the job's result, image, heatmap and printable report."""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from contracts.jobs import DicomRef, JobStatus
from contracts.reports import JobView
from contracts.reviews import ReviewView
from services.reports.domain.fhir_bundle import BundleNotAvailableError, job_bundle
from tests.reports.fhir_invariants import check_bundle

JOB_ID = "job_5d1f0c2a9b8e4f7a"
PATIENT_REF = "MRN-000123"
SHA256 = "3f" * 32
CREATED = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
COMPLETED = datetime(2026, 3, 1, 9, 30, 4, 250000, tzinfo=UTC)
GENERATED = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
JOB_SYSTEM = "urn:skintriage:job"
PATIENT_SYSTEM = "urn:skintriage:patient-ref"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
LOCAL = "https://skintriage.org/fhir/CodeSystem/skintriage"

HAM10000 = {
    "akiec": "Actinic keratoses and intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "vasc": "Vascular lesions",
}
PROBABILITIES = {"akiec": 0.04, "bcc": 0.08, "bkl": 0.05, "df": 0.02, "mel": 0.62, "nv": 0.18, "vasc": 0.01}


def _encoded(image_format: str, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (6, 4), 170 if mode == "L" else (180, 120, 90)).save(buffer, format=image_format)
    return buffer.getvalue()


JPEG = _encoded("JPEG", "RGB")
PNG = _encoded("PNG", "RGB")
HEATMAP = _encoded("PNG", "L")
# The builder never parses the PDF, so a minimal PDF-shaped byte string stands in for a report.
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def _model() -> dict[str, Any]:
    return {"name": "skintriage-effnet", "version": "2.1.0", "sha256": SHA256}


def done_job(job_id: str = JOB_ID, *, patient_ref: str | None = PATIENT_REF, **ood: Any) -> JobView:
    return JobView.model_validate(
        {
            "job_id": job_id,
            "status": "done",
            "metadata": {"patient_ref": patient_ref, "body_site": "upper back", "age": 54, "sex": "female"},
            "created_at": CREATED,
            "updated_at": COMPLETED,
            "result": {
                "job_id": job_id,
                "status": "done",
                "triage_level": "urgent",
                "prediction": {
                    "probabilities": PROBABILITIES,
                    "top_class": "mel",
                    "malignant_probability": 0.74,
                    "triage_level": "urgent",
                    "triage_threshold": 0.35,
                    "conformal_set": ["mel", "nv"],
                    "conformal_coverage": 0.9,
                    "metadata_used": ["age", "sex"],
                    "class_display_names": HAM10000,
                },
                "ood": {
                    "scores": ood.get("scores", {"msp": 0.38, "energy": -7.25, "mahalanobis": 41.5}),
                    "decision": "accepted",
                    "thresholds": {"msp": 0.8, "energy": -2.0, "mahalanobis": 120.0},
                },
                "model": _model(),
                "has_heatmap": True,
                "completed_at": COMPLETED,
            },
        }
    )


def rejected_job(job_id: str = JOB_ID) -> JobView:
    return JobView.model_validate(
        {
            "job_id": job_id,
            "status": "rejected",
            "metadata": {"patient_ref": PATIENT_REF},
            "created_at": CREATED,
            "updated_at": COMPLETED,
            "result": {
                "job_id": job_id,
                "status": "rejected",
                "ood": {
                    "scores": {"msp": 0.93, "blur": 0.71},
                    "decision": "rejected_quality",
                    "rule": "blur",
                    "reasons": ["image too blurred"],
                    "thresholds": {"msp": 0.8, "blur": 0.5},
                },
                "model": _model(),
                "completed_at": COMPLETED,
            },
        }
    )


STUDY_UID, SOP_UID = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1.1"


def dicom_job() -> JobView:
    """A done job whose image arrived as a DICOM instance."""
    dicom = {
        "study_instance_uid": STUDY_UID,
        "sop_instance_uid": SOP_UID,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.77.1.7",
        "laterality": "left",
        "acquired_at": "2026-11-30T09:15:00+01:00",
    }
    return done_job().model_copy(update={"dicom": DicomRef.model_validate(dicom)})


REVIEWED = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
CLINICIAN_ID = "usr_7c1e"


def signed_job(job: JobView | None = None, *, triage_level: str = "routine", version: int = 2) -> JobView:
    """A done job a clinician signed off (overriding the model's urgent level unless told)."""
    job = job or done_job()
    assert job.result is not None
    review = ReviewView.model_validate(
        {
            "review_id": "rev_1",
            "job_id": job.job_id,
            "version": version,
            "reviewer": {"user_id": CLINICIAN_ID, "name": "Dr Grace Hopper"},
            "triage_level": triage_level,
            "model_triage_level": "urgent",
            "agrees_with_model": triage_level == "urgent",
            "working_diagnosis": {"code": "nv", "text": None, "display_name": HAM10000["nv"]},
            "note": "Symmetric, regular network.",
            "confirmed_diagnosis": {
                "code": "nv",
                "text": None,
                "display_name": HAM10000["nv"],
                "basis": "histopathology",
                "malignant": False,
            },
            "created_at": REVIEWED,
        }
    )
    result = job.result.model_copy(update={"review": review, "review_state": "diagnosis_confirmed"})
    return job.model_copy(update={"result": result})


JOBS: dict[str, Callable[[], JobView]] = {
    "done": done_job,
    "rejected": rejected_job,
    "no-patient-ref": lambda: done_job(patient_ref=None),
    "dicom": dicom_job,
    "signed": signed_job,
    "signed-dicom": lambda: signed_job(dicom_job(), triage_level="urgent"),
}


def build(job: JobView | None = None, **options: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "image": JPEG,
        "image_media_type": "image/jpeg",
        "heatmap_png": HEATMAP,
        "report_pdf": PDF,
        "generated_at": GENERATED,
    }
    arguments.update(options)
    return job_bundle(job or done_job(), **arguments)


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def the(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (resource,) = resources(bundle, resource_type)
    return resource


def full_url(bundle: dict[str, Any], resource: dict[str, Any]) -> str:
    urls: list[str] = [e["fullUrl"] for e in bundle["entry"] if e["resource"] is resource]
    (url,) = urls
    return url


def by_identifier(bundle: dict[str, Any], value: str) -> dict[str, Any] | None:
    for entry in bundle["entry"]:
        resource: dict[str, Any] = entry["resource"]
        if any(i["value"] == value for i in resource.get("identifier", [])):
            return resource
    return None


def observation(bundle: dict[str, Any], role: str, job_id: str = JOB_ID) -> dict[str, Any]:
    found = by_identifier(bundle, f"{job_id}/observation/{role}")
    assert found is not None and found["resourceType"] == "Observation", role
    return found


def component(resource: dict[str, Any], code: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [
        c for c in resource["component"] if c["code"]["coding"][0]["code"] == code
    ]
    (found,) = matches
    return found


def quantity(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "1", "system": UCUM, "code": "1"}


@pytest.mark.parametrize("bundle_type", ["collection", "transaction"])
@pytest.mark.parametrize("kind", list(JOBS))
def test_fhir_resources_r4b_accepts_the_bundle_and_every_entry(kind: str, bundle_type: str) -> None:
    bundle = build(JOBS[kind](), bundle_type=bundle_type)

    parsed = Bundle.model_validate(bundle)

    assert parsed.type == bundle_type
    # Nothing was dropped or coerced on the way in: the model serialises back to the same JSON.
    assert json.loads(parsed.model_dump_json()) == bundle
    for entry in bundle["entry"]:
        resource_type = entry["resource"]["resourceType"]
        model = get_fhir_model_class(resource_type).model_validate(entry["resource"])
        assert model.get_resource_type() == resource_type


@pytest.mark.parametrize("bundle_type", ["collection", "transaction"])
@pytest.mark.parametrize("kind", list(JOBS))
def test_the_bundle_keeps_every_invariant(kind: str, bundle_type: str) -> None:
    assert check_bundle(build(JOBS[kind](), bundle_type=bundle_type)) == []


def _first(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return resources(bundle, resource_type)[0]


def _entry_of(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def _set_code(concept: dict[str, Any], code: str) -> None:
    concept["coding"][0]["code"] = code


BREAKAGES: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    (
        "dangling reference",
        "collection",
        lambda b: _first(b, "Observation").update(
            device={"reference": "urn:uuid:" + "0" * 8 + "-0000-5000-8000-" + "0" * 12}
        ),
        "resolves to no entry",
    ),
    (
        "missing request",
        "transaction",
        lambda b: _entry_of(b, "Observation").pop("request"),
        "has no request",
    ),
    (
        "request in a collection",
        "collection",
        lambda b: _entry_of(b, "Media").update(request={"method": "POST", "url": "Media"}),
        "collection entry has request",
    ),
    (
        "request without method",
        "transaction",
        lambda b: _entry_of(b, "Device")["request"].pop("method"),
        "HTTP method",
    ),
    (
        "POST to another type",
        "transaction",
        lambda b: _entry_of(b, "Media")["request"].update(url="Observation"),
        "POST url",
    ),
    (
        "ifNoneExist finds another resource",
        "transaction",
        lambda b: _entry_of(b, "Observation")["request"].update(
            ifNoneExist=f"identifier={JOB_SYSTEM}|{JOB_ID}"
        ),
        "does not match",
    ),
    (
        "duplicate fullUrl",
        "collection",
        lambda b: b["entry"][2].update(fullUrl=b["entry"][1]["fullUrl"]),
        "appears twice",
    ),
    (
        "malformed URN",
        "collection",
        lambda b: b["entry"][1].update(fullUrl="urn:uuid:observation-1"),
        "urn:uuid",
    ),
    ("relative fullUrl", "collection", lambda b: b["entry"][1].update(fullUrl="Observation/1"), "neither"),
    (
        "unknown report status",
        "collection",
        lambda b: the(b, "DiagnosticReport").update(status="draft"),
        "status",
    ),
    (
        "unknown observation status",
        "collection",
        lambda b: _first(b, "Observation").update(status="done"),
        "status",
    ),
    (
        "unknown triage level",
        "collection",
        lambda b: _set_code(observation(b, "triage")["valueCodeableConcept"], "asap"),
        "'asap' is not in",
    ),
    (
        "unknown observation category",
        "collection",
        lambda b: _set_code(_first(b, "Observation")["category"][0], "imagery"),
        "'imagery' is not in",
    ),
    (
        "report category not IMG",
        "collection",
        lambda b: _set_code(the(b, "DiagnosticReport")["category"][0], "LAB"),
        "lacks v2-0074 IMG",
    ),
    (
        "report code not dermatoscopy",
        "collection",
        lambda b: _set_code(the(b, "DiagnosticReport")["code"], "1237125004"),
        "lacks SNOMED CT",
    ),
    (
        "percent instead of UCUM 1",
        "collection",
        lambda b: observation(b, "prob-mel")["valueQuantity"].update(code="%", unit="%"),
        "UCUM unit",
    ),
    (
        "probability above 1",
        "collection",
        lambda b: observation(b, "prob-mel")["valueQuantity"].update(value=62.0),
        "outside [0, 1]",
    ),
    (
        "observation left out of the report",
        "collection",
        lambda b: the(b, "DiagnosticReport")["result"].pop(),
        "not in DiagnosticReport.result",
    ),
    (
        "device as the report's performer",
        "collection",
        lambda b: the(b, "DiagnosticReport").update(performer=[{"reference": full_url(b, the(b, "Device"))}]),
        "points at a Device",
    ),
    (
        "attachment data does not match its hash",
        "collection",
        lambda b: the(b, "DiagnosticReport")["presentedForm"][0].update(
            data=base64.b64encode(b"%PDF-x").decode()
        ),
        "attachment",
    ),
]


SIGNED_BREAKAGES: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    (
        "conditional update finds another resource",
        "transaction",
        lambda b: _entry_of(b, "DiagnosticReport")["request"].update(
            url=f"DiagnosticReport?identifier={JOB_SYSTEM}|job_other"
        ),
        "does not match",
    ),
    (
        "PUT to a bare type",
        "transaction",
        lambda b: _entry_of(b, "DiagnosticReport")["request"].update(url="DiagnosticReport"),
        "PUT url",
    ),
    (
        "final without interpreter",
        "collection",
        lambda b: the(b, "DiagnosticReport").pop("resultsInterpreter"),
        "names no resultsInterpreter",
    ),
    (
        "interpreter is the model",
        "collection",
        lambda b: the(b, "DiagnosticReport").update(
            resultsInterpreter=[{"reference": full_url(b, the(b, "Device"))}]
        ),
        "points at a Device",
    ),
]


@pytest.mark.parametrize(
    ("bundle_type", "breakage", "expected", "signed"),
    [
        pytest.param(bundle_type, breakage, expected, False, id=name)
        for name, bundle_type, breakage, expected in BREAKAGES
    ]
    + [
        pytest.param(bundle_type, breakage, expected, True, id=name)
        for name, bundle_type, breakage, expected in SIGNED_BREAKAGES
    ],
)
def test_check_bundle_reports_a_broken_bundle(
    bundle_type: str, breakage: Callable[[dict[str, Any]], None], expected: str, signed: bool
) -> None:
    bundle = build(signed_job() if signed else done_job(), bundle_type=bundle_type)
    assert check_bundle(bundle) == []

    breakage(bundle)

    problems = check_bundle(bundle)
    assert any(expected in problem for problem in problems), problems


def test_the_report_of_a_done_job() -> None:
    bundle = build()
    report = the(bundle, "DiagnosticReport")

    assert bundle["type"] == "collection"
    assert bundle["timestamp"] == "2026-03-01T10:00:00Z"
    assert bundle["identifier"] == {"system": JOB_SYSTEM, "value": f"{JOB_ID}/bundle"}
    assert report["identifier"] == [{"system": JOB_SYSTEM, "value": JOB_ID}]
    assert report["status"] == "preliminary"
    assert report["category"][0]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
            "code": "IMG",
            "display": "Diagnostic Imaging",
        }
    ]
    codings = {(c["system"], c["code"]): c.get("display") for c in report["code"]["coding"]}
    assert codings[(SNOMED, "1237125003")] == "Optical dermatoscopy of skin"
    assert (LOCAL, "skin-lesion-triage") in codings
    assert report["subject"]["identifier"] == {"system": PATIENT_SYSTEM, "value": PATIENT_REF}
    assert "reference" not in report["subject"]
    assert report["effectiveDateTime"] == "2026-03-01T09:30:00Z"
    assert report["issued"] == "2026-03-01T09:30:04.250000Z"
    assert "Urgent" in report["conclusion"]
    assert "Melanoma" in report["conclusion"]
    result = done_job().result
    assert result is not None
    assert report["conclusion"].endswith(result.disclaimer)
    assert report["conclusionCode"][0]["coding"][0]["code"] == "urgent"
    # R4 allows no Device as the report's performer; the model is named on Observations instead.
    assert "performer" not in report and "resultsInterpreter" not in report
    observation_urls = [full_url(bundle, o) for o in resources(bundle, "Observation")]
    assert [r["reference"] for r in report["result"]] == observation_urls
    media_urls = [full_url(bundle, m) for m in resources(bundle, "Media")]
    assert [m["link"]["reference"] for m in report["media"]] == media_urls


def test_one_observation_per_class_probability() -> None:
    bundle = build()

    for code, probability in PROBABILITIES.items():
        found = observation(bundle, f"prob-{code}")
        assert found["code"]["coding"] == [
            {
                "system": "https://skintriage.org/fhir/CodeSystem/lesion-class",
                "code": code,
                "display": HAM10000[code],
            }
        ]
        assert found["valueQuantity"] == quantity(probability)
    assert len(resources(bundle, "Observation")) == len(PROBABILITIES) + 3


def test_the_triage_conformal_and_verdict_observations() -> None:
    bundle = build()

    triage = observation(bundle, "triage")
    assert triage["valueCodeableConcept"]["coding"][0]["code"] == "urgent"
    assert component(triage, "malignant-probability")["valueQuantity"] == quantity(0.74)
    assert component(triage, "triage-threshold")["valueQuantity"] == quantity(0.35)

    conformal = observation(bundle, "conformal-set")
    assert conformal["valueString"] == "Melanoma (mel), Melanocytic nevi (nv) (coverage 90%)"
    assert component(conformal, "conformal-coverage")["valueQuantity"] == quantity(0.9)
    members = [c for c in conformal["component"] if c["code"]["coding"][0]["code"] == "conformal-set-member"]
    assert [m["valueCodeableConcept"]["coding"][0]["code"] for m in members] == ["mel", "nv"]

    verdict = observation(bundle, "ood-verdict")
    assert verdict["valueCodeableConcept"]["coding"][0]["code"] == "accepted"
    assert component(verdict, "ood-score-energy")["valueQuantity"] == quantity(-7.25)
    assert component(verdict, "ood-threshold-mahalanobis")["valueQuantity"] == quantity(120.0)


def test_every_observation_names_the_model_the_image_and_the_patient() -> None:
    bundle = build()
    device_url = full_url(bundle, the(bundle, "Device"))
    image = by_identifier(bundle, f"{JOB_ID}/media/image")
    assert image is not None
    image_url = full_url(bundle, image)

    for found in resources(bundle, "Observation"):
        assert found["status"] == "preliminary"
        assert found["category"][0]["coding"][0]["code"] == "imaging"
        assert found["device"] == {"reference": device_url}
        assert found["derivedFrom"] == [{"reference": image_url}]
        assert found["subject"]["identifier"]["value"] == PATIENT_REF
        assert found["effectiveDateTime"] == "2026-03-01T09:30:00Z"


def test_media_device_and_provenance() -> None:
    bundle = build()
    image = by_identifier(bundle, f"{JOB_ID}/media/image")
    heatmap = by_identifier(bundle, f"{JOB_ID}/media/heatmap")
    device = the(bundle, "Device")
    provenance = the(bundle, "Provenance")
    device_url = full_url(bundle, device)
    assert image is not None and heatmap is not None

    assert image["status"] == heatmap["status"] == "completed"
    assert image["content"]["contentType"] == "image/jpeg"
    assert base64.b64decode(image["content"]["data"]) == JPEG
    assert heatmap["content"]["contentType"] == "image/png"
    assert base64.b64decode(heatmap["content"]["data"]) == HEATMAP
    assert image["subject"] == heatmap["subject"] == the(bundle, "DiagnosticReport")["subject"]
    assert heatmap["device"] == {"reference": device_url}
    assert device["identifier"] == [{"system": "urn:skintriage:model-sha256", "value": SHA256}]
    assert {"name": "skintriage-effnet 2.1.0", "type": "user-friendly-name"} in device["deviceName"]
    assert device["version"] == [{"value": "2.1.0"}]
    assert provenance["recorded"] == "2026-03-01T09:30:04.250000Z"
    (agent,) = provenance["agent"]
    assert agent["who"] == {"reference": device_url}
    assert agent["type"]["coding"][0]["code"] == "performer"
    targets = {t["reference"] for t in provenance["target"]}
    assert full_url(bundle, the(bundle, "DiagnosticReport")) in targets
    assert {full_url(bundle, o) for o in resources(bundle, "Observation")} <= targets


def test_a_dicom_image_links_its_study_and_names_its_instance() -> None:
    bundle = build(dicom_job())

    report = _first(bundle, "DiagnosticReport")
    assert report["imagingStudy"] == [
        {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}}
    ]
    image = next(m for m in resources(bundle, "Media") if m["content"]["contentType"] == "image/jpeg")
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{SOP_UID}"} in image["identifier"]
    assert image["createdDateTime"] == "2026-11-30T08:15:00Z"
    assert image["bodySite"] == {"text": "upper back (left)"}
    # A job that did not come from DICOM names no study.
    assert "imagingStudy" not in _first(build(done_job()), "DiagnosticReport")


def test_a_png_upload_keeps_its_media_type() -> None:
    image = by_identifier(build(image=PNG, image_media_type="image/png"), f"{JOB_ID}/media/image")

    assert image is not None
    assert image["content"]["contentType"] == "image/png"
    assert base64.b64decode(image["content"]["data"]) == PNG


def test_a_rejected_job_reports_its_verdict_and_no_triage() -> None:
    bundle = build(rejected_job(), heatmap_png=None)
    report = the(bundle, "DiagnosticReport")

    (verdict,) = resources(bundle, "Observation")
    assert verdict["identifier"][0]["value"] == f"{JOB_ID}/observation/ood-verdict"
    assert verdict["valueCodeableConcept"]["coding"][0]["code"] == "rejected_quality"
    assert component(verdict, "ood-score-blur")["valueQuantity"] == quantity(0.71)
    assert component(verdict, "ood-rule")["valueString"] == "blur"
    assert by_identifier(bundle, f"{JOB_ID}/observation/triage") is None
    assert by_identifier(bundle, f"{JOB_ID}/observation/prob-mel") is None
    assert report["result"] == [{"reference": full_url(bundle, verdict)}]
    assert report["conclusion"].startswith("Not triaged")
    assert "image too blurred" in report["conclusion"]
    assert "Urgent" not in report["conclusion"]
    assert "conclusionCode" not in report


def test_a_job_without_patient_ref_has_no_subject() -> None:
    bundle = build(done_job(patient_ref=None))

    for entry in bundle["entry"]:
        assert "subject" not in entry["resource"], entry["resource"]["resourceType"]


def test_the_same_job_gives_byte_identical_json() -> None:
    first = json.dumps(build(done_job()))
    second = json.dumps(build(done_job()))

    assert first == second


def test_full_urls_are_pinned_uuid5_urns_of_the_job() -> None:
    # uuid5(uuid5(NAMESPACE_URL, "https://skintriage.org/fhir/bundle"), "<job id>/diagnostic-report"),
    # pinned rather than compared within one run, so nothing process-dependent (hash seeds, set
    # order) can creep into the URNs a receiving system stores.
    report_entry = build()["entry"][0]

    assert report_entry["resource"]["resourceType"] == "DiagnosticReport"
    assert report_entry["fullUrl"] == "urn:uuid:afcc7b96-f0cb-5fc0-9237-6dce1708aae7"


def test_full_urls_and_identifiers_derive_from_the_job_id() -> None:
    collection = build()
    transaction = build(bundle_type="transaction")
    other = build(done_job("job_other"))

    urls = [e["fullUrl"] for e in collection["entry"]]
    assert urls == [e["fullUrl"] for e in transaction["entry"]]
    device_url = full_url(collection, the(collection, "Device"))
    assert set(urls) & {e["fullUrl"] for e in other["entry"]} == {device_url}
    for entry in collection["entry"]:
        assert entry["resource"]["id"] == entry["fullUrl"].removeprefix("urn:uuid:")
        for identifier in entry["resource"].get("identifier", []):
            if entry["resource"]["resourceType"] != "Device":
                assert identifier["system"] == JOB_SYSTEM
                assert identifier["value"].startswith(JOB_ID)
    for entry in transaction["entry"]:
        assert "id" not in entry["resource"]


def test_transaction_entries_are_conditional_creates() -> None:
    bundle = build(bundle_type="transaction", identifier_system="https://ehr.example.org/skintriage")

    requests = {e["resource"]["resourceType"]: e["request"] for e in bundle["entry"]}
    assert requests["DiagnosticReport"] == {
        "method": "POST",
        "url": "DiagnosticReport",
        "ifNoneExist": f"identifier=https://ehr.example.org/skintriage|{JOB_ID}",
    }
    assert requests["Device"]["ifNoneExist"] == f"identifier=urn:skintriage:model-sha256|{SHA256}"
    tag = the(bundle, "Provenance")["meta"]["tag"][0]
    assert tag == {"system": "https://ehr.example.org/skintriage", "code": f"{JOB_ID}/provenance"}
    assert (
        requests["Provenance"]["ifNoneExist"]
        == f"_tag=https://ehr.example.org/skintriage|{JOB_ID}/provenance"
    )
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Observation":
            value = entry["resource"]["identifier"][0]["value"]
            assert entry["request"]["ifNoneExist"] == f"identifier=https://ehr.example.org/skintriage|{value}"
    assert check_bundle(bundle) == []


def test_search_syntax_in_a_job_id_is_escaped_in_if_none_exist() -> None:
    job_id = "job|a,b$c&d"
    bundle = build(done_job(job_id), bundle_type="transaction")

    condition = _entry_of(bundle, "DiagnosticReport")["request"]["ifNoneExist"]
    assert condition.count("|") == 1 and "&" not in condition and "," not in condition
    # check_bundle reads the query back and requires it to find the report's own identifier.
    assert check_bundle(bundle) == []


def test_the_device_is_shared_by_every_job_of_one_model() -> None:
    first = build(done_job("job_a"))
    second = build(done_job("job_b"))
    job = done_job("job_c")
    assert job.result is not None
    job.result.model.sha256 = "4e" * 32
    third = build(job)

    assert full_url(first, the(first, "Device")) == full_url(second, the(second, "Device"))
    assert full_url(first, the(first, "Device")) != full_url(third, the(third, "Device"))


def test_the_pdf_goes_into_presented_form() -> None:
    (form,) = the(build(), "DiagnosticReport")["presentedForm"]

    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"]) == PDF
    assert form["title"]


def test_without_pdf_or_heatmap_they_are_left_out() -> None:
    bundle = build(report_pdf=None, heatmap_png=None)
    report = the(bundle, "DiagnosticReport")

    assert "presentedForm" not in report
    (image,) = resources(bundle, "Media")
    assert image["identifier"][0]["value"] == f"{JOB_ID}/media/image"
    assert report["media"] == [
        {"comment": image["content"]["title"], "link": {"reference": full_url(bundle, image)}}
    ]
    assert check_bundle(bundle) == []


def test_a_non_finite_score_is_a_data_absent_reason() -> None:
    bundle = build(done_job(scores={"msp": 0.38, "energy": float("-inf"), "knn": float("nan")}))
    verdict = observation(bundle, "ood-verdict")

    assert "valueQuantity" not in component(verdict, "ood-score-energy")
    assert (
        component(verdict, "ood-score-energy")["dataAbsentReason"]["coding"][0]["code"] == "negative-infinity"
    )
    assert component(verdict, "ood-score-knn")["dataAbsentReason"]["coding"][0]["code"] == "not-a-number"
    json.dumps(bundle, allow_nan=False)
    Bundle.model_validate(bundle)
    assert check_bundle(bundle) == []


def test_naive_times_are_read_as_utc() -> None:
    job = done_job()
    job.created_at = datetime(2026, 3, 1, 9, 30)

    assert the(build(job), "DiagnosticReport")["effectiveDateTime"] == "2026-03-01T09:30:00Z"


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running, JobStatus.failed, JobStatus.done])
def test_a_job_without_result_has_no_bundle(status: JobStatus) -> None:
    job = done_job()
    job.status, job.result = status, None

    with pytest.raises(BundleNotAvailableError):
        build(job)
    assert issubclass(BundleNotAvailableError, ValueError)


def test_a_failed_job_has_no_bundle_even_with_a_stale_result() -> None:
    job = done_job()
    job.status = JobStatus.failed

    with pytest.raises(BundleNotAvailableError):
        build(job)


def test_an_unknown_bundle_type_is_refused() -> None:
    with pytest.raises(ValueError, match="bundle_type"):
        build(bundle_type="batch")


def test_building_does_not_modify_the_job() -> None:
    job = done_job()
    before = copy.deepcopy(job.model_dump())

    build(job, bundle_type="transaction")

    assert job.model_dump() == before


def test_the_documented_example_is_what_the_builder_makes() -> None:
    # docs/EHR_INTEGRATION.md links this file; a change to the mapping must update it.
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "fhir-bundle-transaction.json"
    assert json.loads(example.read_text()) == build(dicom_job(), bundle_type="transaction")


# ---- signed off by a clinician (issue 12) -------------------------------------------------------


def test_a_signed_off_report_is_final_and_names_the_clinician() -> None:
    bundle = build(signed_job())
    report = the(bundle, "DiagnosticReport")
    practitioner = the(bundle, "Practitioner")

    assert report["status"] == "final"
    assert report["resultsInterpreter"] == [{"reference": full_url(bundle, practitioner)}]
    assert practitioner["identifier"] == [{"system": "urn:skintriage:user", "value": CLINICIAN_ID}]
    assert practitioner["name"] == [{"text": "Dr Grace Hopper"}]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "routine"
    conclusion = report["conclusion"]
    assert conclusion.startswith("Signed off by Dr Grace Hopper on 2026-03-02T14:05:00Z (review version 2)")
    assert "triage level Routine, overriding the model's Urgent" in conclusion
    assert "Confirmed diagnosis: Melanocytic nevi (nv) (not malignant; basis: histopathology)" in conclusion
    assert "Symmetric, regular network." in conclusion
    result = done_job().result
    assert result is not None and conclusion.endswith(result.disclaimer)
    # The model's Observations are its output and stay preliminary.
    assert {o["status"] for o in resources(bundle, "Observation")} == {"preliminary"}


def test_a_confirming_review_says_so() -> None:
    report = the(build(signed_job(triage_level="urgent")), "DiagnosticReport")

    assert "triage level Urgent, confirming the model's level" in report["conclusion"]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "urgent"


def test_a_signed_off_report_is_a_conditional_update_in_a_transaction() -> None:
    bundle = build(signed_job(), bundle_type="transaction", identifier_system="https://ehr.example.org/st")
    requests = {e["resource"]["resourceType"]: e["request"] for e in bundle["entry"]}

    assert requests["DiagnosticReport"] == {
        "method": "PUT",
        "url": f"DiagnosticReport?identifier=https://ehr.example.org/st|{JOB_ID}",
    }
    assert requests["Practitioner"] == {
        "method": "POST",
        "url": "Practitioner",
        "ifNoneExist": f"identifier=urn:skintriage:user|{CLINICIAN_ID}",
    }
    others = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "DiagnosticReport"]
    assert all(e["request"]["method"] == "POST" and e["request"]["ifNoneExist"] for e in others)
    assert check_bundle(bundle) == []


def test_each_review_version_has_its_own_provenance_naming_the_clinician() -> None:
    bundle = build(signed_job(version=2))
    provenances = resources(bundle, "Provenance")
    [review_provenance] = [p for p in provenances if p["agent"][0]["type"]["coding"][0]["code"] == "verifier"]

    assert review_provenance["meta"]["tag"] == [
        {"system": JOB_SYSTEM, "code": f"{JOB_ID}/review/2/provenance"}
    ]
    assert review_provenance["target"] == [{"reference": full_url(bundle, the(bundle, "DiagnosticReport"))}]
    assert review_provenance["agent"][0]["who"] == {
        "reference": full_url(bundle, the(bundle, "Practitioner"))
    }
    assert review_provenance["recorded"] == "2026-03-02T14:05:00Z"
    other = build(signed_job(version=3))
    assert {e["fullUrl"] for e in bundle["entry"]} != {e["fullUrl"] for e in other["entry"]}


def test_a_rejected_image_is_never_signed_off_in_fhir() -> None:
    job = signed_job()
    rejected = rejected_job()
    assert job.result is not None and rejected.result is not None
    rejected.result.review = job.result.review

    bundle = build(rejected, heatmap_png=None)

    assert the(bundle, "DiagnosticReport")["status"] == "preliminary"
    assert resources(bundle, "Practitioner") == []


def test_the_documented_signed_example_is_what_the_builder_makes() -> None:
    # docs/EHR_INTEGRATION.md links this file too: the final bundle pushed after a sign-off.
    example = (
        Path(__file__).resolve().parents[2] / "docs" / "examples" / "fhir-bundle-transaction-signed.json"
    )
    assert json.loads(example.read_text()) == build(signed_job(dicom_job()), bundle_type="transaction")
