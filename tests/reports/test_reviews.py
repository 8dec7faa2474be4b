"""Clinicians' reviews and sign-off in the reports service (both backends): versioned and never
overwritten, checked against the model's classes, audited and signed by a clinician only, shown on
the report with its next step, refused for another tenant's job, and carried into the FHIR bundle,
the PDF and a new FHIR push."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from PIL import Image
from pydantic import SecretStr
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.reviews import ReviewCreate
from contracts.users import ACTOR_HEADER, Actor, Role
from services.reports.api.app import create_app
from services.reports.config import Settings
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.models import AuditEvent, Delivery, Report, Review, Tenant
from services.reports.db.reviews import create_review
from services.reports.db.tenants import get_or_create_user
from services.reports.domain.errors import JobNotFoundError
from services.reports.domain.reviews import ReviewConflictError
from tests.reports.conftest import INTERNAL_TOKEN
from tests.reports.factories import job_body, report_body, stored_image, tenant_headers
from tests.reports.fhir_invariants import check_bundle

CLASSES = {"mel": "Melanoma", "nv": "Melanocytic nevi", "bcc": "Basal cell carcinoma"}


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png((180, 120, 100))
WINDOW = timedelta(hours=1)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # No dispatcher: planned FHIR pushes stay in the table for the tests to read.
    return Settings(
        database_url=database_url, internal_token=SecretStr(INTERNAL_TOKEN), delivery_interval_seconds=0
    )


def actor_headers(
    db: Session, tenant_id: str, name: str = "Dr Ada Lovelace", role: Role = Role.clinician
) -> dict[str, str]:
    """Headers of a call the gateway makes for a user of the tenant with `role`."""
    tenant = db.get(Tenant, tenant_id)
    assert tenant is not None
    user, _ = get_or_create_user(db, tenant, name, role)
    actor = Actor(user_id=user.id, user_name=user.name, role=role, key_id="key_test")
    return {**tenant_headers(tenant_id), ACTOR_HEADER: actor.to_header()}


def finish(
    client: TestClient,
    tenant: str,
    job_id: str,
    *,
    status: str = "done",
    triage_level: str = "urgent",
    malignant_classes: list[str] | None = None,
) -> None:
    """Register a job and store its result (the model knows mel and bcc are malignant unless told)."""
    body = job_body(tenant, job_id=job_id, image=stored_image(IMAGE))
    assert client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant)).status_code == 201
    report = report_body(
        tenant,
        job_id,
        status=status,
        triage_level=triage_level,
        decision="accepted" if status == "done" else "rejected_ood",
    )
    report["prediction"]["probabilities"] = {"mel": 0.6, "nv": 0.3, "bcc": 0.1}
    report["prediction"]["class_display_names"] = CLASSES
    report["prediction"]["malignant_classes"] = (
        ["mel", "bcc"] if malignant_classes is None else malignant_classes
    )
    if status == "rejected":
        report["prediction"] = None
    answer = client.put(f"/internal/v1/reports/{job_id}", json=report, headers=tenant_headers(tenant))
    assert answer.status_code == 200, answer.text


def review(client: TestClient, headers: dict[str, str], job_id: str, **body: Any) -> Any:
    return client.post(
        f"/internal/v1/jobs/{job_id}/reviews", json={"triage_level": "urgent", **body}, headers=headers
    )


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_a_clinician_confirms_the_model_and_the_report_shows_the_sign_off_and_next_step(
    client: TestClient, db: Session, tenant: str
) -> None:
    finish(client, tenant, "job_1")
    headers = actor_headers(db, tenant)

    answer = review(
        client, headers, "job_1", working_diagnosis={"code": "mel"}, note="Irregular border.\nBiopsy."
    )

    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["version"] == 1
    assert created["reviewer"]["name"] == "Dr Ada Lovelace"
    assert created["triage_level"] == created["model_triage_level"] == "urgent"
    assert created["agrees_with_model"] is True
    assert created["working_diagnosis"] == {"code": "mel", "text": None, "display_name": "Melanoma"}
    assert created["note"] == "Irregular border.\nBiopsy."
    assert created["confirmed_diagnosis"] is None
    result = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]
    assert result["review"] == created
    assert result["review_state"] == "signed_off"
    assert result["next_step"] == {
        "triage_level": "urgent",
        "text": "Refer for excision or biopsy within 2 weeks.",
    }
    assert result["prediction"]["malignant_classes"] == ["mel", "bcc"]


def test_an_override_records_the_clinicians_level_and_the_next_step_follows_it(
    client: TestClient, db: Session, tenant: str
) -> None:
    finish(client, tenant, "job_1", triage_level="urgent")
    before = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]
    assert before["review"] is None and before["review_state"] == "unreviewed"
    assert before["next_step"]["triage_level"] == "urgent"

    answer = review(client, actor_headers(db, tenant), "job_1", triage_level="monitor")

    assert answer.json()["agrees_with_model"] is False
    assert answer.json()["model_triage_level"] == "urgent"
    result = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]
    # The model's own level is kept as it was; the next step is for the clinician's.
    assert result["triage_level"] == "urgent"
    assert result["next_step"] == {"triage_level": "monitor", "text": "Re-image in 3 months and compare."}
    row = db.scalar(select(Review).where(Review.job_id == "job_1"))
    assert row is not None and row.agrees_with_model is False and row.triage_level == "monitor"


def test_each_review_adds_a_version_and_none_is_overwritten(
    client: TestClient, db: Session, tenant: str
) -> None:
    finish(client, tenant, "job_1")
    first, second = actor_headers(db, tenant, "Dr One"), actor_headers(db, tenant, "Dr Two")

    assert review(client, first, "job_1", note="first look").status_code == 201
    assert review(client, second, "job_1", triage_level="routine", note="second look").status_code == 201
    assert review(client, first, "job_1", expected_version=2, note="third look").status_code == 201

    items = client.get("/internal/v1/jobs/job_1/reviews", headers=tenant_headers(tenant)).json()["items"]
    assert [(i["version"], i["reviewer"]["name"], i["note"]) for i in items] == [
        (1, "Dr One", "first look"),
        (2, "Dr Two", "second look"),
        (3, "Dr One", "third look"),
    ]
    assert items[1]["triage_level"] == "routine"
    latest = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]["review"]
    assert latest["version"] == 3
    report = db.get(Report, "job_1")
    assert report is not None
    db.refresh(report)
    assert (
        report.review_version == 3 and report.review_state == "signed_off" and report.reviewed_at is not None
    )


@pytest.mark.parametrize(("code", "malignant"), [("mel", True), ("nv", False)])
def test_a_confirmed_diagnosis_takes_its_malignancy_from_the_class_code(
    client: TestClient, db: Session, tenant: str, code: str, malignant: bool
) -> None:
    finish(client, tenant, "job_1")

    answer = review(
        client,
        actor_headers(db, tenant),
        "job_1",
        confirmed_diagnosis={"code": code, "basis": "histopathology"},
    )

    assert answer.status_code == 201, answer.text
    confirmed = answer.json()["confirmed_diagnosis"]
    assert confirmed == {
        "code": code,
        "text": None,
        "display_name": CLASSES[code],
        "basis": "histopathology",
        "malignant": malignant,
    }
    result = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]
    assert result["review_state"] == "diagnosis_confirmed"
    row = db.scalar(select(Review).where(Review.job_id == "job_1"))
    assert row is not None and row.confirmed_malignant is malignant


def test_a_malignant_flag_that_contradicts_the_code_is_refused(
    client: TestClient, db: Session, tenant: str
) -> None:
    finish(client, tenant, "job_1")

    answer = review(
        client,
        actor_headers(db, tenant),
        "job_1",
        confirmed_diagnosis={"code": "nv", "basis": "clinical", "malignant": True},
    )

    assert answer.status_code == 422
    assert error_code(answer) == "review.malignancy_conflict"


@pytest.mark.parametrize(
    ("malignant_classes", "diagnosis"),
    [
        ([], {"code": "nv", "basis": "follow_up"}),  # a report that does not know its classes' malignancy
        (None, {"text": "Seborrhoeic keratosis", "basis": "clinical"}),  # free text only
    ],
)
def test_malignant_is_required_when_the_code_does_not_tell(
    client: TestClient,
    db: Session,
    tenant: str,
    malignant_classes: list[str] | None,
    diagnosis: dict[str, Any],
) -> None:
    finish(client, tenant, "job_1", malignant_classes=malignant_classes)
    headers = actor_headers(db, tenant)

    refused = review(client, headers, "job_1", confirmed_diagnosis=diagnosis)
    accepted = review(client, headers, "job_1", confirmed_diagnosis={**diagnosis, "malignant": False})

    assert refused.status_code == 422 and error_code(refused) == "review.malignancy_unknown"
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["version"] == 1
    assert accepted.json()["confirmed_diagnosis"]["malignant"] is False


@pytest.mark.parametrize("field", ["working_diagnosis", "confirmed_diagnosis"])
def test_a_code_that_is_not_one_of_the_models_classes_is_refused(
    client: TestClient, db: Session, tenant: str, field: str
) -> None:
    finish(client, tenant, "job_1")
    diagnosis: dict[str, Any] = {"code": "scc", "basis": "histopathology", "malignant": True}

    answer = review(client, actor_headers(db, tenant), "job_1", **{field: diagnosis})

    assert answer.status_code == 422
    assert error_code(answer) == "review.unknown_class"
    assert db.scalar(select(Review)) is None


@pytest.mark.parametrize(
    "body",
    [
        {"working_diagnosis": {}},
        {"confirmed_diagnosis": {"basis": "clinical", "malignant": True}},
        {"triage_level": "soon"},
        {"note": "x" * 2001},
        {"note": "nul\x00byte"},
        {"expected_version": -1},
        {"confirmed_diagnosis": {"code": "mel", "basis": "hearsay"}},
    ],
)
def test_an_invalid_review_body_is_request_invalid(
    client: TestClient, db: Session, tenant: str, body: dict[str, Any]
) -> None:
    finish(client, tenant, "job_1")

    answer = review(client, actor_headers(db, tenant), "job_1", **body)

    assert answer.status_code == 422
    assert error_code(answer) == "request.invalid"


@pytest.mark.parametrize("status", ["queued", "rejected"])
def test_only_a_done_job_can_be_reviewed(client: TestClient, db: Session, tenant: str, status: str) -> None:
    if status == "queued":
        body = job_body(tenant, job_id="job_1")
        assert client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant)).status_code == 201
    else:
        finish(client, tenant, "job_1", status="rejected")

    answer = review(client, actor_headers(db, tenant), "job_1")

    assert answer.status_code == 409
    assert error_code(answer) == "review.not_reviewable"


def test_expected_version_must_be_the_latest(client: TestClient, db: Session, tenant: str) -> None:
    finish(client, tenant, "job_1")
    headers = actor_headers(db, tenant)
    assert review(client, headers, "job_1", expected_version=0).status_code == 201

    stale = review(client, headers, "job_1", expected_version=0, triage_level="routine")

    assert stale.status_code == 409
    assert error_code(stale) == "review.conflict"
    assert stale.json()["error"]["details"]["latest_version"] == 1
    assert review(client, headers, "job_1", expected_version=1).json()["version"] == 2


def test_concurrent_reviews_of_one_job_never_share_a_version(
    client: TestClient, db: Session, tenant: str, database_url: str
) -> None:
    finish(client, tenant, "job_1")
    headers = actor_headers(db, tenant)
    actor = Actor.from_header(headers[ACTOR_HEADER])
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def sign() -> None:
        with sessions() as session:
            start.wait()
            try:
                created, _ = create_review(
                    session,
                    tenant,
                    "job_1",
                    ReviewCreate(triage_level="urgent"),
                    actor,
                    request_id=None,
                    delivery_window=WINDOW,
                )
                outcomes.append(f"v{created.version}")
            except ReviewConflictError:
                outcomes.append("conflict")

    threads = [threading.Thread(target=sign) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()

    versions = sorted(int(o[1:]) for o in outcomes if o != "conflict")
    assert len(outcomes) == 6 and versions
    assert versions == list(range(1, len(versions) + 1))
    stored = sorted(db.scalars(select(Review.version).where(Review.job_id == "job_1")))
    assert stored == versions


def test_another_tenants_job_is_not_found(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    finish(client, other_tenant, "job_theirs")

    posted = review(client, actor_headers(db, tenant), "job_theirs")
    listed = client.get("/internal/v1/jobs/job_theirs/reviews", headers=tenant_headers(tenant))

    assert posted.status_code == listed.status_code == 404
    assert error_code(posted) == error_code(listed) == "job.not_found"
    with pytest.raises(JobNotFoundError):
        create_review(
            db,
            tenant,
            "job_theirs",
            ReviewCreate(triage_level="urgent"),
            Actor.from_header(actor_headers(db, tenant)[ACTOR_HEADER]),
            request_id=None,
            delivery_window=WINDOW,
        )


def test_only_a_clinician_of_the_tenant_may_sign(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    finish(client, tenant, "job_1")
    outsider = actor_headers(db, other_tenant, "Dr Elsewhere")
    attempts = {
        "no actor": tenant_headers(tenant),
        "admin": actor_headers(db, tenant, "Ada Admin", Role.admin),
        "integrator": actor_headers(db, tenant, "EHR bridge", Role.integrator),
        "clinician of another tenant": {**tenant_headers(tenant), ACTOR_HEADER: outsider[ACTOR_HEADER]},
    }

    for who, headers in attempts.items():
        answer = review(client, headers, "job_1")
        assert answer.status_code == 403, who
        assert error_code(answer) == "auth.forbidden", who
    assert db.scalar(select(Review)) is None


def test_a_review_is_audited_with_its_clinician(client: TestClient, db: Session, tenant: str) -> None:
    finish(client, tenant, "job_1")
    headers = {**actor_headers(db, tenant), "X-Request-ID": "req-review-1"}

    created = review(client, headers, "job_1", triage_level="routine").json()

    [event] = db.scalars(select(AuditEvent).where(AuditEvent.action == "review.create")).all()
    assert event.tenant_id == tenant
    assert (event.resource_type, event.resource_id) == ("job", "job_1")
    assert event.user_id == created["reviewer"]["user_id"] and event.role == "clinician"
    assert event.request_id == "req-review-1"
    assert event.details is not None
    assert event.details["version"] == 1 and event.details["agrees_with_model"] is False


def test_a_review_plans_one_fhir_push_per_version_where_the_tenant_has_an_endpoint(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    config = {
        "base_url": "https://ehr.example/fhir",
        "token_url": "https://ehr.example/token",
        "client_id": "c",
    }
    assert (
        client.put("/internal/v1/fhir-endpoint", json=config, headers=tenant_headers(tenant)).status_code
        == 201
    )
    finish(client, tenant, "job_1")
    finish(client, other_tenant, "job_2")
    headers = actor_headers(db, tenant)

    review(client, headers, "job_1")
    review(client, headers, "job_1", triage_level="routine")
    review(client, actor_headers(db, other_tenant), "job_2")

    keys = sorted(db.scalars(select(Delivery.dedupe_key).where(Delivery.kind == "fhir")))
    assert keys == [
        f"fhir:{tenant}:job_1",
        f"fhir:{tenant}:job_1:review:1",
        f"fhir:{tenant}:job_1:review:2",
    ]


def test_the_fhir_bundle_of_a_signed_job_is_final_and_names_the_clinician(
    client: TestClient, db: Session, tenant: str
) -> None:
    finish(client, tenant, "job_1")
    preliminary = client.get("/internal/v1/jobs/job_1/fhir", headers=tenant_headers(tenant)).json()
    signed = review(
        client, actor_headers(db, tenant), "job_1", triage_level="routine", working_diagnosis={"code": "nv"}
    ).json()

    for bundle_type in ("collection", "transaction"):
        answer = client.get(
            "/internal/v1/jobs/job_1/fhir", params={"type": bundle_type}, headers=tenant_headers(tenant)
        )
        bundle = answer.json()
        Bundle.model_validate(bundle)
        assert check_bundle(bundle) == []
        entries = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
        report = entries["DiagnosticReport"]["resource"]
        assert report["status"] == "final"
        [interpreter] = report["resultsInterpreter"]
        assert interpreter["reference"] == entries["Practitioner"]["fullUrl"]
        assert entries["Practitioner"]["resource"]["name"] == [{"text": "Dr Ada Lovelace"}]
        assert report["conclusionCode"][0]["coding"][0]["code"] == "routine"
        assert "Dr Ada Lovelace" in report["conclusion"] and "Routine" in report["conclusion"]
        if bundle_type == "transaction":
            assert entries["DiagnosticReport"]["request"]["method"] == "PUT"
            assert entries["DiagnosticReport"]["request"]["url"].startswith("DiagnosticReport?identifier=")
    assert preliminary["entry"][0]["resource"]["status"] == "preliminary"
    assert signed["version"] == 1


def test_the_pdf_of_a_signed_job_prints_the_review_and_the_next_step(
    client: TestClient, db: Session, tenant: str
) -> None:
    finish(client, tenant, "job_1")
    before = client.get("/internal/v1/jobs/job_1/report.pdf", headers=tenant_headers(tenant)).content
    review(client, actor_headers(db, tenant), "job_1", triage_level="monitor", note="Stable for 2 years.")

    after = client.get("/internal/v1/jobs/job_1/report.pdf", headers=tenant_headers(tenant)).content

    before_text = " ".join(PdfReader(io.BytesIO(before)).pages[0].extract_text().split())
    after_text = " ".join(PdfReader(io.BytesIO(after)).pages[0].extract_text().split())
    assert "Not yet reviewed" in before_text
    assert "Refer for excision or biopsy within 2 weeks." in before_text
    assert "Signed off by Dr Ada Lovelace" in after_text
    assert "Stable for 2 years." in after_text
    assert "Re-image in 3 months and compare." in after_text


# ---- next steps -------------------------------------------------------------------------------

STEPS = {
    "urgent": "Same-week excision clinic.",
    "routine": "Routine dermatology list.",
    "monitor": "Photo in 6 months.",
}


def test_next_steps_default_to_the_service_settings(client: TestClient, tenant: str) -> None:
    answer = client.get("/internal/v1/next-steps", headers=tenant_headers(tenant))

    assert answer.json() == {
        "urgent": "Refer for excision or biopsy within 2 weeks.",
        "routine": "Dermatology review at the next routine appointment.",
        "monitor": "Re-image in 3 months and compare.",
        "source": "default",
    }


def test_configured_defaults_reach_the_reports(settings: Settings, db: Session, tenant: str) -> None:
    configured = settings.model_copy(update={"next_step_urgent": "Call the patient today."})
    with TestClient(create_app(configured), headers={"X-Internal-Token": INTERNAL_TOKEN}) as app_client:
        finish(app_client, tenant, "job_1")
        steps = app_client.get("/internal/v1/next-steps", headers=tenant_headers(tenant)).json()
        result = app_client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]

    assert steps["urgent"] == "Call the patient today." and steps["source"] == "default"
    assert result["next_step"] == {"triage_level": "urgent", "text": "Call the patient today."}


def test_an_admin_sets_the_tenants_next_steps_audited_and_shown_on_its_reports(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    finish(client, tenant, "job_1")
    finish(client, other_tenant, "job_2")

    answer = client.put(
        "/internal/v1/next-steps", json=STEPS, headers=actor_headers(db, tenant, "Ada Admin", Role.admin)
    )

    assert answer.status_code == 200, answer.text
    assert answer.json() == {**STEPS, "source": "tenant"}
    assert client.get("/internal/v1/next-steps", headers=tenant_headers(tenant)).json()["source"] == "tenant"
    mine = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]
    theirs = client.get("/internal/v1/jobs/job_2", headers=tenant_headers(other_tenant)).json()["result"]
    assert mine["next_step"]["text"] == "Same-week excision clinic."
    assert theirs["next_step"]["text"] == "Refer for excision or biopsy within 2 weeks."
    [event] = db.scalars(select(AuditEvent).where(AuditEvent.action == "next_steps.update")).all()
    assert event.details is not None and event.details["after"] == STEPS and event.role == "admin"


@pytest.mark.parametrize("role", [Role.clinician, Role.integrator])
def test_only_an_admin_changes_the_next_steps(
    client: TestClient, db: Session, tenant: str, role: Role
) -> None:
    answer = client.put(
        "/internal/v1/next-steps", json=STEPS, headers=actor_headers(db, tenant, "someone", role)
    )

    assert answer.status_code == 403 and error_code(answer) == "auth.forbidden"
    assert client.get("/internal/v1/next-steps", headers=tenant_headers(tenant)).json()["source"] == "default"


@pytest.mark.parametrize("steps", [{**STEPS, "urgent": ""}, {**STEPS, "monitor": "x" * 501}, {"urgent": "a"}])
def test_invalid_next_steps_are_refused(
    client: TestClient, db: Session, tenant: str, steps: dict[str, str]
) -> None:
    answer = client.put(
        "/internal/v1/next-steps", json=steps, headers=actor_headers(db, tenant, "Ada", Role.admin)
    )

    assert answer.status_code == 422 and error_code(answer) == "request.invalid"


def test_a_rejected_image_has_no_next_step(client: TestClient, tenant: str) -> None:
    finish(client, tenant, "job_1", status="rejected")

    result = client.get("/internal/v1/jobs/job_1", headers=tenant_headers(tenant)).json()["result"]

    assert result["next_step"] is None and result["review"] is None and result["review_state"] == "unreviewed"
