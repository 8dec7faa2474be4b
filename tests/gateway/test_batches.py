"""POST /v1/batches (files or a zip) and GET /v1/batches/{id}."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator

import httpx

from services.gateway.api.app import create_app
from services.gateway.config import Settings
from tests.gateway import samples
from tests.gateway.conftest import MAX_UPLOAD_BYTES, error_code, make_settings
from tests.gateway.fakes import KEY_A, TENANT_A, FakeReports, InMemoryPublisher


async def gateway_client(
    settings: Settings, publisher: InMemoryPublisher
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with other settings than the `client` fixture's, authenticated as tenant A."""
    app = create_app(settings, publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY_A}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as http:
            yield http


def files_part(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


async def test_batch_of_files_queues_the_good_ones_and_lists_the_bad_one_as_rejected(
    client: httpx.AsyncClient, publisher: InMemoryPublisher, reports: FakeReports
):
    response = await client.post(
        "/v1/batches",
        files=files_part(
            ("one.jpg", samples.jpeg()),
            ("notes.jpg", samples.text_file()),
            ("two.png", samples.png()),
            ("three.jpg", samples.jpeg(size=(300, 200))),
        ),
    )

    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3
    assert [(i["index"], i["filename"]) for i in body["items"]] == [
        (0, "one.jpg"),
        (2, "two.png"),
        (3, "three.jpg"),
    ]
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["filename"]) == (1, "notes.jpg")
    assert rejected["error"]["code"] == "image.unsupported_format"
    assert body["status_url"] == f"/v1/batches/{body['batch_id']}"
    assert sorted(t.job_id for t in publisher.tasks) == sorted(i["job_id"] for i in body["items"])
    assert {reports.jobs[i["job_id"]]["body"]["batch_id"] for i in body["items"]} == {body["batch_id"]}
    assert reports.batches[body["batch_id"]]["total"] == 3


async def test_every_file_of_a_batch_is_listed_either_as_job_or_as_rejection(client):
    response = await client.post(
        "/v1/batches",
        files=files_part(
            ("a.jpg", samples.jpeg()),
            ("b.jpg", b""),
            ("c.gif", samples.animated_gif()),
            ("d.jpg", samples.truncated_jpeg()),
            ("e.png", samples.png_declaring(30_000, 30_000)),
        ),
    )

    body = response.json()
    listed = {i["index"] for i in body["items"]} | {r["index"] for r in body["rejected"]}
    assert listed == {0, 1, 2, 3, 4}
    assert {r["filename"]: r["error"]["code"] for r in body["rejected"]} == {
        "b.jpg": "image.empty",
        "c.gif": "image.animated",
        "d.jpg": "image.corrupt",
        "e.png": "image.too_many_pixels",
    }


async def test_batch_file_over_the_upload_limit_is_rejected_alone(client, publisher):
    response = await client.post(
        "/v1/batches",
        files=files_part(("ok.jpg", samples.jpeg()), ("big.jpg", b"\xff\xd8\xff" + b"\0" * MAX_UPLOAD_BYTES)),
    )

    assert response.status_code == 202
    assert [r["error"]["code"] for r in response.json()["rejected"]] == ["upload.too_large"]
    assert len(publisher.tasks) == 1


async def test_batch_as_zip_archive_queues_its_images_and_skips_directories_and_junk(
    client, publisher: InMemoryPublisher
):
    archive = samples.zip_of(
        {
            "lesions/": b"",
            "lesions/a.jpg": samples.jpeg(),
            "lesions/b.png": samples.png(),
            "__MACOSX/lesions/._a.jpg": b"\x00\x05\x16\x07",
            "lesions/.DS_Store": b"junk",
        }
    )

    response = await client.post(
        "/v1/batches", files={"archive": ("lesions.zip", archive, "application/zip")}
    )

    assert response.status_code == 202
    body = response.json()
    assert body["rejected"] == []
    assert [i["filename"] for i in body["items"]] == ["a.jpg", "b.png"]
    assert len(publisher.tasks) == 2


async def test_single_file_sniffed_as_zip_is_treated_as_an_archive(client, publisher):
    archive = samples.zip_of({"a.jpg": samples.jpeg(), "b.jpg": samples.jpeg()})

    response = await client.post("/v1/batches", files=files_part(("upload.bin", archive)))

    assert response.status_code == 202
    assert response.json()["accepted"] == 2


async def test_zip_with_more_images_than_the_batch_limit_is_refused_whole(client, publisher, settings):
    archive = samples.zip_of({f"{i}.jpg": samples.jpeg() for i in range(settings.max_batch_items + 1)})

    response = await client.post("/v1/batches", files={"archive": ("many.zip", archive)})

    assert response.status_code == 413
    assert error_code(response) == "batch.too_many_items"
    assert publisher.tasks == []


async def test_zip_with_too_many_entries_is_refused_before_inflating(client, publisher, settings):
    archive = samples.zip_of({f"junk/.{i}": b"" for i in range(settings.max_archive_entries + 1)})

    response = await client.post("/v1/batches", files={"archive": ("junk.zip", archive)})

    assert response.status_code == 413
    assert error_code(response) == "archive.too_many_entries"
    assert publisher.tasks == []


async def test_zip_bomb_declaring_more_than_the_uncompressed_cap_is_refused(client, publisher, settings):
    zeros = b"\0" * (settings.max_archive_uncompressed_bytes // 2 + 1)
    archive = samples.zip_of({"a.jpg": samples.jpeg(), "b.bin": zeros, "c.bin": zeros})
    assert len(archive) < 10_000  # a few kB that inflate past the cap

    response = await client.post("/v1/batches", files={"archive": ("bomb.zip", archive)})

    assert response.status_code == 413
    assert error_code(response) == "archive.too_large"
    assert publisher.tasks == []


async def test_corrupt_zip_is_refused_with_archive_corrupt(client, publisher):
    archive = samples.zip_of({"a.jpg": samples.jpeg()})[:-30]

    response = await client.post("/v1/batches", files={"archive": ("broken.zip", archive)})

    assert response.status_code == 422
    assert error_code(response) == "archive.corrupt"


async def test_stored_zip_entry_is_inflated_like_a_deflated_one(client, publisher):
    archive = samples.zip_of({"a.jpg": samples.jpeg()}, compression=zipfile.ZIP_STORED)

    response = await client.post("/v1/batches", files={"archive": ("a.zip", archive)})

    assert response.json()["accepted"] == 1


async def test_more_files_than_the_batch_limit_are_refused_whole(client, publisher, settings):
    named = [(f"{i}.jpg", samples.jpeg()) for i in range(settings.max_batch_items + 1)]

    response = await client.post("/v1/batches", files=files_part(*named))

    assert response.status_code == 413
    assert error_code(response) == "batch.too_many_items"
    assert publisher.tasks == []


async def test_batch_without_files_is_refused_with_batch_empty(client):
    response = await client.post("/v1/batches", data={"patient_ref": "p"}, files={"unrelated": ("a", b"x")})

    assert response.status_code == 422
    assert error_code(response) == "batch.empty"


async def test_batch_whose_files_are_all_bad_is_refused_and_lists_them(client, publisher, reports):
    response = await client.post("/v1/batches", files=files_part(("a.txt", b"text"), ("b.jpg", b"")))

    assert response.status_code == 422
    assert error_code(response) == "batch.no_valid_items"
    assert len(response.json()["error"]["details"]["rejected"]) == 2
    assert reports.batches == {}


async def test_files_and_archive_together_are_refused_with_request_invalid(client):
    response = await client.post(
        "/v1/batches",
        files=[
            ("files", ("a.jpg", samples.jpeg(), "image/jpeg")),
            ("archive", ("b.zip", samples.zip_of({"b.jpg": samples.jpeg()}), "application/zip")),
        ],
    )

    assert response.status_code == 422
    assert error_code(response) == "request.invalid"


async def test_batch_idempotency_key_replay_returns_the_same_batch_and_queues_nothing_more(
    client, publisher: InMemoryPublisher
):
    parts = files_part(("a.jpg", samples.jpeg()), ("bad.jpg", b""), ("b.png", samples.png()))
    headers = {"Idempotency-Key": "batch-2024-06-01"}

    first = await client.post("/v1/batches", files=parts, headers=headers)
    second = await client.post("/v1/batches", files=parts, headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replay"] == "true"
    assert len(publisher.tasks) == 2


async def test_batch_idempotency_key_of_another_tenant_makes_a_different_batch(client, publisher):
    from tests.gateway.fakes import KEY_B

    parts = files_part(("a.jpg", samples.jpeg()))
    headers = {"Idempotency-Key": "same-key"}
    mine = await client.post("/v1/batches", files=parts, headers=headers)
    theirs = await client.post(
        "/v1/batches", files=parts, headers={**headers, "Authorization": f"Bearer {KEY_B}"}
    )

    assert mine.json()["batch_id"] != theirs.json()["batch_id"]
    assert len(publisher.tasks) == 2


async def test_metadata_fields_apply_to_every_job_of_the_batch(client, reports: FakeReports):
    response = await client.post(
        "/v1/batches",
        files=files_part(("a.jpg", samples.jpeg()), ("b.jpg", samples.jpeg())),
        data={"patient_ref": "pat-9", "client_ref": "visit-3"},
    )

    for item in response.json()["items"]:
        assert reports.jobs[item["job_id"]]["body"]["metadata"]["patient_ref"] == "pat-9"
    assert reports.batches[response.json()["batch_id"]]["client_ref"] == "visit-3"


async def test_batch_progress_is_read_from_reports(client, reports: FakeReports):
    parts = files_part(("a.jpg", samples.jpeg()), ("b.jpg", samples.jpeg()))
    created = await client.post("/v1/batches", files=parts)
    batch_id = created.json()["batch_id"]
    first_job = created.json()["items"][0]["job_id"]
    reports.jobs[first_job]["status"] = "done"

    response = await client.get(f"/v1/batches/{batch_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["counts"] == {"total": 2, "queued": 1, "running": 0, "done": 1, "rejected": 0, "failed": 0}
    assert {i["job_id"] for i in body["items"]} == {i["job_id"] for i in created.json()["items"]}


async def test_another_tenants_batch_is_not_found(client, reports: FakeReports):
    reports.batches["b" * 32] = {"tenant_id": "tenant-b", "total": 1, "created_at": "2024-01-01T00:00:00Z"}

    response = await client.get(f"/v1/batches/{'b' * 32}")

    assert response.status_code == 404
    assert error_code(response) == "batch.not_found"


async def test_batch_jobs_are_registered_for_the_callers_tenant(client, reports: FakeReports):
    response = await client.post("/v1/batches", files=files_part(("a.jpg", samples.jpeg())))

    job_id = response.json()["items"][0]["job_id"]
    assert reports.jobs[job_id]["tenant_id"] == TENANT_A


async def test_multipart_the_form_parser_refuses_answers_request_malformed(client, publisher):
    # A text field over Starlette's 1 MB part limit: the body cannot be parsed as a form.
    response = await client.post(
        "/v1/batches", files=files_part(("a.jpg", samples.jpeg())), data={"patient_ref": "p" * 1_100_000}
    )

    assert response.status_code == 400
    assert error_code(response) == "request.malformed"
    assert publisher.tasks == []


async def test_a_registration_call_that_fails_lists_its_items_as_rejected_and_the_rest_are_queued(
    publisher: InMemoryPublisher, reports: FakeReports, reports_api
):
    calls = {"n": 0}
    real_create = reports._create_jobs

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 2:
            raise httpx.ConnectError("reports restarted")
        return real_create(request)

    reports_api["create_jobs"].mock(side_effect=flaky)
    # One registration call per image, so the second call is the second image.
    async for client in gateway_client(make_settings(task_chunk_size=1, register_concurrency=1), publisher):
        response = await client.post(
            "/v1/batches",
            files=files_part(("a.jpg", samples.jpeg()), ("b.jpg", samples.jpeg()), ("c.jpg", samples.jpeg())),
        )

    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["error"]["code"]) for r in body["rejected"]] == [(1, "upstream.unavailable")]
    assert len(publisher.tasks) == 2


async def test_an_item_reports_refuses_is_listed_with_its_code_and_the_rest_are_queued(
    client, publisher: InMemoryPublisher, reports: FakeReports, reports_api
):
    real_create = reports._create_jobs

    def refuse_second(request: httpx.Request) -> httpx.Response:
        reports.refuse_job_ids = {json.loads(request.content)["jobs"][1]["job_id"]}
        return real_create(request)

    reports_api["create_jobs"].mock(side_effect=refuse_second)

    response = await client.post(
        "/v1/batches",
        files=files_part(("a.jpg", samples.jpeg()), ("b.jpg", samples.jpeg()), ("c.jpg", samples.jpeg())),
    )

    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["error"]["code"]) for r in body["rejected"]] == [(1, "request.invalid")]
    assert sorted(t.job_id for t in publisher.tasks) == sorted(i["job_id"] for i in body["items"])


async def test_batch_answers_503_when_no_job_could_be_queued(client, publisher: InMemoryPublisher):
    publisher.down = True

    response = await client.post(
        "/v1/batches", files=files_part(("a.jpg", samples.jpeg()), ("b.jpg", samples.jpeg()))
    )

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"
