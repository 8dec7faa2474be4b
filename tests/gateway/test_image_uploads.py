"""POST /v1/images: what is accepted, what is refused (each with its own code), and what is queued."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.gateway import samples
from tests.gateway.conftest import MAX_UPLOAD_BYTES, error_code
from tests.gateway.fakes import JOB_ID, TENANT_A, FakeReports, InMemoryPublisher


async def upload(
    client: httpx.AsyncClient,
    data: bytes,
    filename: str = "lesion.jpg",
    content_type: str = "image/jpeg",
    **form: str,
) -> httpx.Response:
    return await client.post("/v1/images", files={"file": (filename, data, content_type)}, data=form)


async def assert_refused(
    client: httpx.AsyncClient,
    publisher: InMemoryPublisher,
    data: bytes,
    status: int,
    code: str,
    filename: str = "lesion.jpg",
) -> None:
    response = await upload(client, data, filename)
    assert response.status_code == status
    assert error_code(response) == code
    assert publisher.tasks == []


# -- bad inputs: each its own code, and nothing queued -------------------------------------------


async def test_empty_upload_is_rejected_with_image_empty(client, publisher):
    await assert_refused(client, publisher, b"", 400, "image.empty")


async def test_truncated_jpeg_is_rejected_with_image_corrupt(client, publisher):
    await assert_refused(client, publisher, samples.truncated_jpeg(), 422, "image.corrupt")


async def test_png_declaring_30000_squared_pixels_is_rejected_before_decoding(client, publisher):
    data = samples.png_declaring(30_000, 30_000)
    assert len(data) < 200  # the header alone claims 900 megapixels
    await assert_refused(client, publisher, data, 413, "image.too_many_pixels")


async def test_png_just_over_the_pixel_limit_is_rejected_with_too_many_pixels(client, publisher):
    # 8000 x 6000 = 48 MP: under Pillow's own bomb guard, over the gateway's 40 MP.
    await assert_refused(client, publisher, samples.png_declaring(8000, 6000), 413, "image.too_many_pixels")


async def test_text_file_named_jpg_is_rejected_with_unsupported_format(client, publisher):
    await assert_refused(client, publisher, samples.text_file(), 415, "image.unsupported_format", "scan.jpg")


async def test_animated_gif_is_rejected_with_image_animated(client, publisher):
    await assert_refused(client, publisher, samples.animated_gif(), 415, "image.animated", "lesion.gif")


async def test_animated_png_is_rejected_with_image_animated(client, publisher):
    await assert_refused(client, publisher, samples.animated_png(), 415, "image.animated", "lesion.png")


async def test_still_gif_is_rejected_with_unsupported_format(client, publisher):
    await assert_refused(client, publisher, samples.still_gif(), 415, "image.unsupported_format", "a.gif")


async def test_cmyk_jpeg_is_rejected_with_unsupported_color_mode(client, publisher):
    await assert_refused(client, publisher, samples.cmyk_jpeg(), 415, "image.unsupported_color_mode")


async def test_16_bit_png_is_rejected_with_unsupported_bit_depth(client, publisher):
    await assert_refused(client, publisher, samples.png_16bit(), 415, "image.unsupported_bit_depth", "a.png")


async def test_image_smaller_than_min_side_is_rejected_with_too_small(client, publisher):
    await assert_refused(client, publisher, samples.jpeg(size=(20, 200)), 422, "image.too_small")


async def test_upload_over_the_body_limit_is_refused_with_upload_too_large(client, publisher):
    oversized = b"\xff\xd8\xff" + b"\x00" * (MAX_UPLOAD_BYTES + 100_000)
    await assert_refused(client, publisher, oversized, 413, "upload.too_large")


async def test_file_over_the_upload_limit_within_form_overhead_is_refused(client, publisher):
    oversized = b"\xff\xd8\xff" + b"\x00" * (MAX_UPLOAD_BYTES + 10)
    await assert_refused(client, publisher, oversized, 413, "upload.too_large")


async def test_streamed_upload_without_content_length_is_cut_off_at_the_limit(client, publisher):
    oversized = b"\xff\xd8\xff" + b"\x00" * (MAX_UPLOAD_BYTES + 100_000)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + oversized + b"\r\n--b--\r\n"
    )

    async def chunks():
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    response = await client.post(
        "/v1/images", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    assert error_code(response) == "upload.too_large"
    assert publisher.tasks == []


async def test_metadata_out_of_range_is_rejected_with_request_invalid(client, publisher):
    response = await upload(client, samples.jpeg(), age="200")
    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert publisher.tasks == []


@pytest.mark.parametrize("field", ["patient_ref", "client_ref", "body_site"])
async def test_control_characters_in_metadata_are_rejected_with_request_invalid(
    client, publisher, reports, field
):
    response = await upload(client, samples.jpeg(), **{field: "p\x001"})
    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert publisher.tasks == [] and reports.jobs == {}


async def test_missing_file_field_is_rejected_with_request_invalid(client, publisher):
    response = await client.post("/v1/images", data={"patient_ref": "p-1"}, files={"other": ("a", b"x")})
    assert response.status_code == 422
    assert error_code(response) == "request.invalid"


# -- accepted images --------------------------------------------------------------------------


async def test_ham10000_image_is_accepted_and_queued_once_with_its_payload(
    client, publisher: InMemoryPublisher, reports: FakeReports, ham_images: list[Path]
):
    original = ham_images[0].read_bytes()
    response = await upload(client, original, patient_ref="pat-7", body_site="back", age="54", sex="female")

    assert response.status_code == 202
    body = response.json()
    assert JOB_ID.match(body["job_id"])
    assert body["status"] == "queued"
    assert body["status_url"] == f"/v1/jobs/{body['job_id']}"
    assert response.headers["Location"] == body["status_url"]
    assert len(publisher.tasks) == 1
    task = publisher.tasks[0]
    assert task.job_id == body["job_id"]
    assert task.tenant_id == TENANT_A
    assert task.request_id == response.headers["X-Request-ID"]
    stored = base64.b64decode(task.image.data_b64)
    assert task.image.media_type == "image/jpeg"
    assert task.image.sha256 == hashlib.sha256(stored).hexdigest()
    with Image.open(ham_images[0]) as source, Image.open(io.BytesIO(stored)) as queued:
        assert queued.size == source.size == (task.image.width, task.image.height)
    assert reports.stored_image(body["job_id"]) == stored
    assert reports.jobs[body["job_id"]]["body"]["metadata"]["patient_ref"] == "pat-7"


async def test_only_an_image_of_a_tracked_lesion_asks_the_worker_for_its_comparison_measures(
    client, publisher: InMemoryPublisher, ham_images: list[Path]
):
    original = ham_images[0].read_bytes()
    untracked = await upload(client, original, patient_ref="pat-8")
    tracked = await upload(client, original, patient_ref="pat-8", lesion_id="les_0123456789abcdef")

    assert (untracked.status_code, tracked.status_code) == (202, 202)
    by_job = {task.job_id: task for task in publisher.tasks}
    assert by_job[untracked.json()["job_id"]].track_lesion is False
    assert by_job[tracked.json()["job_id"]].track_lesion is True


async def test_exif_rotated_jpeg_is_queued_upright_without_exif_or_gps(client, publisher):
    response = await upload(client, samples.exif_rotated_jpeg_with_gps(size=(160, 80)))

    assert response.status_code == 202
    image = publisher.tasks[0].image
    assert (image.width, image.height) == (80, 160)  # orientation 6: width and height swap
    queued = Image.open(io.BytesIO(base64.b64decode(image.data_b64)))
    assert queued.size == (80, 160)
    assert "exif" not in queued.info
    assert len(queued.getexif()) == 0
    assert len(queued.getexif().get_ifd(samples.GPS_IFD)) == 0
    assert "icc_profile" not in queued.info


async def test_png_upload_is_stored_as_png_without_text_chunks(client, publisher):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "patient: Jane Doe")
    source = samples.encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG", pnginfo=info)

    response = await upload(client, source, "a.png", "image/png")

    assert response.status_code == 202
    image = publisher.tasks[0].image
    assert image.media_type == "image/png"
    queued = Image.open(io.BytesIO(base64.b64decode(image.data_b64)))
    assert "Comment" not in queued.info


async def test_large_image_is_downscaled_to_the_reencode_side(client, publisher):
    response = await upload(client, samples.jpeg(size=(2400, 1800)))

    assert response.status_code == 202
    image = publisher.tasks[0].image
    assert (image.width, image.height) == (1024, 768)


async def test_type_is_sniffed_from_bytes_not_content_type_or_filename(client, publisher):
    response = await upload(client, samples.png(), filename="photo.txt", content_type="text/plain")

    assert response.status_code == 202
    assert publisher.tasks[0].image.media_type == "image/png"


# -- idempotency and waiting ------------------------------------------------------------------


async def test_idempotency_key_replay_returns_the_same_job_and_queues_nothing_more(client, publisher):
    headers = {"Idempotency-Key": "upload-42"}
    first = await client.post("/v1/images", files={"file": ("a.jpg", samples.jpeg())}, headers=headers)
    second = await client.post("/v1/images", files={"file": ("a.jpg", samples.jpeg())}, headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.headers["Idempotent-Replay"] == "true"
    assert len(publisher.tasks) == 1


async def test_prefer_wait_returns_the_finished_job(client, reports: FakeReports):
    reports.finish_after_reads = 2

    response = await client.post(
        "/v1/images", files={"file": ("a.jpg", samples.jpeg())}, headers={"Prefer": "wait=5"}
    )

    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=5"
    body = response.json()
    assert body["status"] == "done"
    assert body["result"]["triage_level"] == "routine"


async def test_prefer_wait_that_runs_out_answers_202_accepted(client):
    response = await client.post(
        "/v1/images", files={"file": ("a.jpg", samples.jpeg())}, headers={"Prefer": "wait=1"}
    )

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.headers["Preference-Applied"] == "wait=1"


async def test_prefer_wait_above_the_maximum_is_clamped(client, reports: FakeReports, settings):
    reports.finish_after_reads = 1

    response = await client.post(
        "/v1/images", files={"file": ("a.jpg", samples.jpeg())}, headers={"Prefer": "wait=999"}
    )

    assert response.headers["Preference-Applied"] == f"wait={settings.max_wait_seconds}"


# -- dependencies failing ---------------------------------------------------------------------


async def test_broker_down_answers_503_and_marks_the_registered_job_failed(
    client, publisher: InMemoryPublisher, reports: FakeReports
):
    publisher.down = True

    response = await upload(client, samples.jpeg())

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"
    [job_id] = reports.failed_jobs
    assert reports.jobs[job_id]["error_code"] == "queue.unavailable"


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused")])
async def test_reports_timeout_or_refusal_on_register_answers_upstream_unavailable(
    client, publisher, reports_api, exc
):
    reports_api["create_job"].mock(side_effect=exc)

    response = await upload(client, samples.jpeg())

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"
    assert publisher.tasks == []
