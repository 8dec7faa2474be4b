"""Lesions followed over time in the reports service (both backends): created and listed per
patient, named by jobs (checked against the tenant and the patient), their history with the
comparison of consecutive images, the comparison endpoint, tenant isolation and audit entries."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contracts.lesions import ChangeCalibration, MeasureCalibration, SegmentationScore
from contracts.users import Role
from services.reports.config import Settings
from services.reports.db.models import AuditEvent, Job, Lesion
from tests.reports.actors import acting, make_user
from tests.reports.conftest import INTERNAL_TOKEN
from tests.reports.factories import MODEL, job_body, report_body, tenant_headers

PATIENT = "patient-lesions-1"


def calibration(model_sha256: str = MODEL["sha256"]) -> ChangeCalibration:
    """A calibration with round thresholds: P 0.2, distance 0.3, area 0.5."""

    def measure(threshold: float) -> MeasureCalibration:
        return MeasureCalibration(threshold=threshold, same_lesion_quantile=0.95, auroc_test=0.9)

    return ChangeCalibration(
        model_name=MODEL["name"],
        model_version=MODEL["version"],
        model_sha256=model_sha256,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        data="test",
        pair_counts={"fit": {"same_lesion": 10}, "test": {"same_lesion": 5}},
        malignant_probability_delta=measure(0.2),
        embedding_distance=measure(0.3),
        area_relative_change=measure(0.5),
        segmentation=SegmentationScore(split="test", images=3, dice_mean=0.8, dice_median=0.85),
    )


@pytest.fixture
def calibration_file(tmp_path: Path) -> Path:
    path = tmp_path / "change_calibration.json"
    path.write_text(calibration().model_dump_json())
    return path


@pytest.fixture
def settings(database_url: str, calibration_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        internal_token=SecretStr(INTERNAL_TOKEN),
        change_calibration=str(calibration_file),
    )


def clinician(db: Session, tenant: str) -> dict[str, str]:
    return acting(make_user(db, tenant, "Dr Lesion", Role.clinician))


def create_lesion(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"patient_ref": PATIENT, "label": "mole left shoulder", "body_site": "back", **fields}
    answer = client.post("/internal/v1/lesions", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def embedding_b64(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode()


def register(client: TestClient, tenant: str, job_id: str, lesion_id: str, **metadata: Any) -> Any:
    body = job_body(tenant, job_id=job_id)
    body["metadata"] = {"lesion_id": lesion_id, **metadata}
    return client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant))


def finish(
    client: TestClient,
    tenant: str,
    job_id: str,
    *,
    malignant: float,
    embedding: list[float] | None,
    area: float | None,
    model: dict[str, str] | None = None,
) -> None:
    report = report_body(tenant, job_id)
    report["prediction"]["malignant_probability"] = malignant
    report["embedding_f16_b64"] = embedding_b64(embedding) if embedding is not None else None
    report["lesion_area_fraction"] = area
    if model is not None:
        report["model"] = model
    answer = client.put(f"/internal/v1/reports/{job_id}", json=report, headers=tenant_headers(tenant))
    assert answer.status_code == 200, answer.text


def two_images(client: TestClient, db: Session, tenant: str, lesion_id: str, **later: Any) -> None:
    """job_a 30 days ago, job_b now, both done: P 0.1 -> 0.5, orthogonal embeddings, area 0.1 -> 0.2."""
    assert register(client, tenant, "job_a", lesion_id).status_code == 201
    assert register(client, tenant, "job_b", lesion_id).status_code == 201
    finish(client, tenant, "job_a", malignant=0.1, embedding=[1.0] + [0.0] * 15, area=0.1)
    options: dict[str, Any] = {"malignant": 0.5, "embedding": [0.0, 1.0] + [0.0] * 14, "area": 0.2}
    options.update(later)
    finish(client, tenant, "job_b", **options)
    earlier = datetime.now(UTC) - timedelta(days=30)
    db.execute(update(Job).where(Job.id == "job_a").values(created_at=earlier))
    db.commit()


def audit_actions(db: Session, tenant: str) -> list[tuple[str, str | None, str | None]]:
    rows = db.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant).order_by(AuditEvent.id)).all()
    return [(row.action, row.resource_id, row.user_name) for row in rows]


def test_creating_a_lesion_returns_it_and_is_audited(client: TestClient, db: Session, tenant: str) -> None:
    created = create_lesion(
        client, clinician(db, tenant), laterality="left", body_map={"view": "back", "x": 0.3, "y": 0.25}
    )

    assert created["lesion_id"].startswith("les_")
    assert created["patient_ref"] == PATIENT
    assert created["laterality"] == "left"
    assert created["body_map"] == {"view": "back", "x": 0.3, "y": 0.25}
    assert created["image_count"] == 0 and created["latest_job_id"] is None
    assert audit_actions(db, tenant) == [("lesion.create", created["lesion_id"], "Dr Lesion")]
    stored = db.get(Lesion, created["lesion_id"])
    assert stored is not None and stored.created_by is not None


def test_a_body_map_position_outside_the_outline_is_refused(
    client: TestClient, db: Session, tenant: str
) -> None:
    answer = client.post(
        "/internal/v1/lesions",
        json={"patient_ref": PATIENT, "body_map": {"view": "front", "x": 1.5, "y": 0.1}},
        headers=clinician(db, tenant),
    )

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "request.invalid"


def test_a_patients_lesions_are_listed_oldest_first_with_their_images(
    client: TestClient, db: Session, tenant: str
) -> None:
    headers = clinician(db, tenant)
    first = create_lesion(client, headers, label="first")
    second = create_lesion(client, headers, label="second")
    create_lesion(client, headers, patient_ref="someone-else")
    assert register(client, tenant, "job_1", first["lesion_id"]).status_code == 201

    answer = client.get("/internal/v1/lesions", params={"patient_ref": PATIENT}, headers=headers)

    assert answer.status_code == 200
    items = answer.json()["items"]
    assert [item["lesion_id"] for item in items] == [first["lesion_id"], second["lesion_id"]]
    assert items[0]["image_count"] == 1 and items[0]["latest_job_id"] == "job_1"
    assert items[1]["image_count"] == 0
    assert audit_actions(db, tenant)[-1][0] == "lesion.read"


def test_a_job_naming_a_lesion_without_patient_ref_takes_the_lesions_patient(
    client: TestClient, db: Session, tenant: str
) -> None:
    lesion = create_lesion(client, clinician(db, tenant))

    answer = register(client, tenant, "job_1", lesion["lesion_id"])

    assert answer.status_code == 201, answer.text
    metadata = answer.json()["metadata"]
    assert metadata["lesion_id"] == lesion["lesion_id"]
    assert metadata["patient_ref"] == PATIENT


def test_a_job_naming_another_patients_lesion_is_refused_with_patient_mismatch(
    client: TestClient, db: Session, tenant: str
) -> None:
    lesion = create_lesion(client, clinician(db, tenant))

    answer = register(client, tenant, "job_1", lesion["lesion_id"], patient_ref="another-patient")

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "lesion.patient_mismatch"
    assert db.get(Job, "job_1") is None


def test_a_job_naming_the_same_patient_is_accepted(client: TestClient, db: Session, tenant: str) -> None:
    lesion = create_lesion(client, clinician(db, tenant))

    assert register(client, tenant, "job_1", lesion["lesion_id"], patient_ref=PATIENT).status_code == 201


def test_a_job_naming_another_tenants_lesion_is_refused_with_not_found(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    theirs = create_lesion(client, acting(make_user(db, other_tenant, "Dr Other", Role.clinician)))

    answer = register(client, tenant, "job_1", theirs["lesion_id"])

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "lesion.not_found"


def test_a_bulk_registration_refuses_only_the_job_naming_an_unknown_lesion(
    client: TestClient, db: Session, tenant: str
) -> None:
    lesion = create_lesion(client, clinician(db, tenant))
    good = job_body(tenant, job_id="job_good")
    good["metadata"] = {"lesion_id": lesion["lesion_id"]}
    bad = job_body(tenant, job_id="job_bad")
    bad["metadata"] = {"lesion_id": "les_missing"}

    answer = client.post("/internal/v1/jobs/bulk", json={"jobs": [good, bad]}, headers=tenant_headers(tenant))

    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results[0]["job"]["metadata"]["lesion_id"] == lesion["lesion_id"]
    assert results[1]["error"]["code"] == "lesion.not_found"


def test_the_history_lists_images_oldest_first_with_the_change_between_them(
    client: TestClient, db: Session, tenant: str
) -> None:
    headers = clinician(db, tenant)
    lesion = create_lesion(client, headers)
    two_images(client, db, tenant, lesion["lesion_id"])

    answer = client.get(f"/internal/v1/lesions/{lesion['lesion_id']}", headers=headers)

    assert answer.status_code == 200, answer.text
    history = answer.json()
    assert history["lesion"]["image_count"] == 2 and history["lesion"]["latest_job_id"] == "job_b"
    assert [image["job_id"] for image in history["images"]] == ["job_a", "job_b"]
    assert history["images"][0]["lesion_area_fraction"] == pytest.approx(0.1)
    assert history["images"][1]["top_class"] == "mel"
    [change] = history["changes"]
    assert (change["from_job_id"], change["to_job_id"]) == ("job_a", "job_b")
    assert change["interval_days"] == pytest.approx(30, abs=0.1)
    assert change["malignant_probability"]["delta"] == pytest.approx(0.4)
    assert change["embedding_distance"] == pytest.approx(1.0)
    assert change["area"]["relative_change"] == pytest.approx(1.0, rel=1e-3)
    assert change["flags"] == {
        "malignancy_changed": True,
        "appearance_changed": True,
        "size_changed": True,
        "changed": True,
    }
    assert change["thresholds"]["embedding_distance"] == pytest.approx(0.3)
    assert audit_actions(db, tenant)[-1] == ("lesion.read", lesion["lesion_id"], "Dr Lesion")


def test_the_comparison_endpoint_compares_two_images_and_is_audited(
    client: TestClient, db: Session, tenant: str
) -> None:
    headers = clinician(db, tenant)
    lesion = create_lesion(client, headers)
    two_images(
        client, db, tenant, lesion["lesion_id"], malignant=0.15, embedding=[1.0, 0.1] + [0.0] * 14, area=0.11
    )

    answer = client.get(
        f"/internal/v1/lesions/{lesion['lesion_id']}/comparison",
        params={"from_job": "job_a", "to_job": "job_b"},
        headers=headers,
    )

    assert answer.status_code == 200, answer.text
    comparison = answer.json()
    assert comparison["malignant_probability"]["from"] == pytest.approx(0.1)
    assert comparison["flags"] == {
        "malignancy_changed": False,
        "appearance_changed": False,
        "size_changed": False,
        "changed": False,
    }
    action, resource, _ = audit_actions(db, tenant)[-1]
    assert (action, resource) == ("lesion.compare", lesion["lesion_id"])


def test_images_of_another_model_get_no_appearance_flag_and_a_note(
    client: TestClient, db: Session, tenant: str
) -> None:
    headers = clinician(db, tenant)
    lesion = create_lesion(client, headers)
    other_model = {"name": "tiny-test", "version": "0.0.2", "sha256": "b" * 64}
    two_images(client, db, tenant, lesion["lesion_id"], model=other_model)

    comparison = client.get(f"/internal/v1/lesions/{lesion['lesion_id']}", headers=headers).json()["changes"][
        0
    ]

    assert comparison["embedding_distance"] is None
    assert comparison["flags"]["appearance_changed"] is None
    assert comparison["flags"]["malignancy_changed"] is True
    assert any("different model versions" in note for note in comparison["notes"])


def test_a_comparison_without_a_calibration_flags_nothing_and_says_why(
    client: TestClient, db: Session, tenant: str, calibration_file: Path
) -> None:
    calibration_file.unlink()
    headers = clinician(db, tenant)
    lesion = create_lesion(client, headers)
    two_images(client, db, tenant, lesion["lesion_id"])

    comparison = client.get(f"/internal/v1/lesions/{lesion['lesion_id']}", headers=headers).json()["changes"][
        0
    ]

    assert comparison["flags"] == {
        "malignancy_changed": None,
        "appearance_changed": None,
        "size_changed": None,
        "changed": False,
    }
    assert comparison["malignant_probability"]["delta"] == pytest.approx(0.4)
    assert comparison["notes"]


def test_comparing_an_image_of_another_lesion_is_refused(
    client: TestClient, db: Session, tenant: str
) -> None:
    headers = clinician(db, tenant)
    lesion = create_lesion(client, headers)
    other = create_lesion(client, headers, label="other")
    two_images(client, db, tenant, lesion["lesion_id"])
    assert register(client, tenant, "job_c", other["lesion_id"]).status_code == 201

    answer = client.get(
        f"/internal/v1/lesions/{lesion['lesion_id']}/comparison",
        params={"from_job": "job_a", "to_job": "job_c"},
        headers=headers,
    )

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "lesion.job_not_in_lesion"


def test_comparing_an_image_without_a_result_is_a_conflict(
    client: TestClient, db: Session, tenant: str
) -> None:
    headers = clinician(db, tenant)
    lesion = create_lesion(client, headers)
    two_images(client, db, tenant, lesion["lesion_id"])
    assert register(client, tenant, "job_queued", lesion["lesion_id"]).status_code == 201

    answer = client.get(
        f"/internal/v1/lesions/{lesion['lesion_id']}/comparison",
        params={"from_job": "job_a", "to_job": "job_queued"},
        headers=headers,
    )

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "lesion.job_not_comparable"


def test_another_tenants_lesion_is_not_found_for_reads_and_comparisons(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    lesion = create_lesion(client, clinician(db, tenant))
    two_images(client, db, tenant, lesion["lesion_id"])
    stranger = acting(make_user(db, other_tenant, "Dr Other", Role.clinician))

    history = client.get(f"/internal/v1/lesions/{lesion['lesion_id']}", headers=stranger)
    comparison = client.get(
        f"/internal/v1/lesions/{lesion['lesion_id']}/comparison",
        params={"from_job": "job_a", "to_job": "job_b"},
        headers=stranger,
    )
    listing = client.get("/internal/v1/lesions", params={"patient_ref": PATIENT}, headers=stranger)

    assert history.status_code == 404 and history.json()["error"]["code"] == "lesion.not_found"
    assert comparison.status_code == 404 and comparison.json()["error"]["code"] == "lesion.not_found"
    assert listing.json()["items"] == []
    assert all(
        action != "lesion.read" or resource is None for action, resource, _ in audit_actions(db, other_tenant)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedding_f16_b64", base64.b64encode(b"\x00" * 7).decode()),
        ("embedding_f16_b64", "not base64!"),
        ("lesion_area_fraction", 1.5),
        ("lesion_area_fraction", -0.1),
    ],
)
def test_a_report_with_an_unusable_embedding_or_area_is_refused(
    client: TestClient, tenant: str, field: str, value: Any
) -> None:
    assert client.post(
        "/internal/v1/jobs", json=job_body(tenant, job_id="job_1"), headers=tenant_headers(tenant)
    )
    report = report_body(tenant, "job_1")
    report[field] = value

    answer = client.put("/internal/v1/reports/job_1", json=report, headers=tenant_headers(tenant))

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "report.invalid"


def test_the_shipped_calibration_is_the_default_and_inside_what_the_image_copies() -> None:
    """The default path resolves from the repository root to the shipped bundle's file, under
    models/, which the Dockerfile copies into the image (so the reports container finds it)."""
    default = Path(Settings.model_fields["change_calibration"].default)
    root = Path(__file__).resolve().parents[2]

    assert default == root / "models" / "skintriage-effnet-lite0" / "2.0.1" / "change_calibration.json"
    assert "COPY models/ models/" in (root / "Dockerfile").read_text()
    ChangeCalibration.model_validate(json.loads(default.read_text()))
