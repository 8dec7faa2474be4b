"""The worker's micro-batch writes: `POST /internal/v1/jobs/running` and `PUT /internal/v1/reports`,
each item handled as its single-job route would, a refused item answered in its place (both
backends)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from contracts.reports import MAX_REPORT_BATCH
from tests.reports.factories import job_body, report_body, stored_image, tenant_headers

JOBS = "/internal/v1/jobs"


def _create(client: TestClient, tenant: str, job_id: str) -> None:
    response = client.post(JOBS, json=job_body(tenant, job_id=job_id), headers=tenant_headers(tenant))
    assert response.status_code == 201, response.text


def _status(client: TestClient, tenant: str, job_id: str) -> str:
    status: str = client.get(f"{JOBS}/{job_id}", headers=tenant_headers(tenant)).json()["status"]
    return status


def test_jobs_running_moves_only_the_tenants_queued_jobs(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    for job_id in ("j1", "j2", "j3"):
        _create(client, tenant, job_id)
    _create(client, other_tenant, "theirs")
    client.put("/internal/v1/reports/j3", json=report_body(tenant, "j3"), headers=tenant_headers(tenant))

    response = client.post(
        f"{JOBS}/running",
        json={"job_ids": ["j1", "j2", "j3", "theirs", "nope"]},
        headers=tenant_headers(tenant),
    )

    assert response.status_code == 200
    assert response.json() == {"changed": 2, "finished": {"j3": "done"}, "busy": []}
    assert [_status(client, tenant, j) for j in ("j1", "j2", "j3")] == ["running", "running", "done"]
    assert _status(client, other_tenant, "theirs") == "queued"


def test_put_reports_stores_each_report_and_refuses_the_bad_ones_alone(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    for job_id in ("j1", "j2"):
        _create(client, tenant, job_id)
    reports = [
        report_body(tenant, "j1"),
        report_body(tenant, "missing"),
        report_body(other_tenant, "j2"),  # another tenant's body under this tenant's header
        report_body(tenant, "j2", status="rejected", decision="rejected_ood") | {"prediction": None},
    ]

    response = client.put("/internal/v1/reports", json={"reports": reports}, headers=tenant_headers(tenant))

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["job_id"] for r in results] == ["j1", "missing", "j2", "j2"]
    assert results[0] == {"job_id": "j1", "status": "done", "error": None, "job": None}
    assert results[1]["error"]["code"] == "job.not_found"
    assert results[2]["error"]["code"] == "request.tenant_mismatch"
    assert results[3]["status"] == "rejected"
    assert _status(client, tenant, "j1") == "done"
    assert _status(client, tenant, "j2") == "rejected"


def test_put_reports_answers_the_stored_job_only_for_a_report_that_asks_for_it(
    client: TestClient, tenant: str
) -> None:
    for job_id in ("awaited", "not_awaited"):
        _create(client, tenant, job_id)
    reports = [report_body(tenant, "awaited") | {"return_job": True}, report_body(tenant, "not_awaited")]

    response = client.put("/internal/v1/reports", json={"reports": reports}, headers=tenant_headers(tenant))

    assert response.status_code == 200
    awaited, not_awaited = response.json()["results"]
    stored = client.get(f"{JOBS}/awaited", headers=tenant_headers(tenant)).json()
    assert awaited["job"] == stored  # what a waiting gateway would otherwise read
    assert awaited["job"]["status"] == "done" and awaited["job"]["result"]["prediction"] is not None
    assert not_awaited["job"] is None and not_awaited["status"] == "done"


def test_put_reports_refuses_an_empty_or_oversized_batch(client: TestClient, tenant: str) -> None:
    headers = tenant_headers(tenant)
    assert client.put("/internal/v1/reports", json={"reports": []}, headers=headers).status_code == 422
    too_many = [report_body(tenant, f"j{i}") for i in range(MAX_REPORT_BATCH + 1)]
    assert client.put("/internal/v1/reports", json={"reports": too_many}, headers=headers).status_code == 422
    assert client.post(f"{JOBS}/running", json={"job_ids": []}, headers=headers).status_code == 422


def test_bulk_registration_registers_replays_and_refuses_each_job_as_the_single_route_would(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    first = client.post(
        JOBS, json=job_body(tenant, job_id="earlier", idempotency_key="k-1"), headers=tenant_headers(tenant)
    )
    assert first.status_code == 201
    jobs = [
        job_body(tenant, job_id="new-1"),
        job_body(tenant, job_id="again", idempotency_key="k-1"),  # a replay of `earlier`
        job_body(other_tenant, job_id="theirs"),  # another tenant's body under this header
        job_body(tenant, job_id="new-2", image=stored_image() | {"sha256": "0" * 64}),  # bytes do not match
        job_body(tenant, job_id="new-3"),
    ]

    response = client.post(f"{JOBS}/bulk", json={"jobs": jobs}, headers=tenant_headers(tenant))

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["job"] or {}).get("job_id") for r in results] == ["new-1", "earlier", None, None, "new-3"]
    assert [r["replayed"] for r in results] == [False, True, False, False, False]
    assert results[2]["error"]["code"] == "request.tenant_mismatch"
    assert results[3]["error"]["code"] == "image.invalid"
    assert [_status(client, tenant, j) for j in ("new-1", "new-3")] == ["queued", "queued"]
    assert client.get(f"{JOBS}/new-2", headers=tenant_headers(tenant)).status_code == 404


def test_bulk_registration_refuses_an_empty_or_oversized_list(client: TestClient, tenant: str) -> None:
    headers = tenant_headers(tenant)
    assert client.post(f"{JOBS}/bulk", json={"jobs": []}, headers=headers).status_code == 422
    too_many = [job_body(tenant) for _ in range(MAX_REPORT_BATCH + 1)]
    assert client.post(f"{JOBS}/bulk", json={"jobs": too_many}, headers=headers).status_code == 422


def test_one_conflicting_job_does_not_stop_the_rest_of_its_group(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    taken = client.post(
        JOBS, json=job_body(other_tenant, job_id="taken"), headers=tenant_headers(other_tenant)
    )
    assert taken.status_code == 201
    jobs = [
        job_body(tenant, job_id="mine-1"),
        job_body(tenant, job_id="taken"),
        job_body(tenant, job_id="mine-2"),
    ]

    response = client.post(f"{JOBS}/bulk", json={"jobs": jobs}, headers=tenant_headers(tenant))

    results = response.json()["results"]
    assert [(r["job"] or {}).get("job_id") for r in results] == ["mine-1", None, "mine-2"]
    assert (
        results[1]["error"]["code"]
        == client.post(JOBS, json=job_body(tenant, job_id="taken"), headers=tenant_headers(tenant)).json()[
            "error"
        ]["code"]
    )
    assert [_status(client, tenant, j) for j in ("mine-1", "mine-2")] == ["queued", "queued"]


def test_requeue_puts_back_only_a_job_that_was_never_queued(client: TestClient, tenant: str) -> None:
    headers = tenant_headers(tenant)
    for job_id in ("unqueued", "broken", "done-one"):
        _create(client, tenant, job_id)
    client.post(
        f"{JOBS}/unqueued/fail",
        json={"job_id": "unqueued", "tenant_id": tenant, "error_code": "queue.unavailable", "message": "m"},
        headers=headers,
    )
    client.post(
        f"{JOBS}/broken/fail",
        json={"job_id": "broken", "tenant_id": tenant, "error_code": "image.corrupt", "message": "m"},
        headers=headers,
    )
    client.put("/internal/v1/reports/done-one", json=report_body(tenant, "done-one"), headers=headers)

    answers = {
        j: client.post(f"{JOBS}/{j}/requeue", headers=headers).json()
        for j in ("unqueued", "broken", "done-one")
    }

    assert (answers["unqueued"]["status"], answers["unqueued"]["error_code"]) == ("queued", None)
    assert (answers["broken"]["status"], answers["broken"]["error_code"]) == ("failed", "image.corrupt")
    assert answers["done-one"]["status"] == "done"
    assert client.post(f"{JOBS}/nope/requeue", headers=headers).status_code == 404


def test_job_statuses_names_each_of_the_tenants_jobs_and_leaves_out_the_rest(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    for job_id in ("j1", "j2"):
        _create(client, tenant, job_id)
    _create(client, other_tenant, "theirs")
    client.put("/internal/v1/reports/j2", json=report_body(tenant, "j2"), headers=tenant_headers(tenant))

    response = client.post(
        f"{JOBS}/statuses", json={"job_ids": ["j1", "j2", "theirs", "nope"]}, headers=tenant_headers(tenant)
    )

    assert response.status_code == 200
    assert response.json() == {"statuses": {"j1": "queued", "j2": "done"}}
    too_many = client.post(
        f"{JOBS}/statuses", json={"job_ids": [f"j{i}" for i in range(501)]}, headers=tenant_headers(tenant)
    )
    assert too_many.status_code == 422
