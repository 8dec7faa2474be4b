"""What of an upload's clinical context travels in the task: age, sex and body site (the model may
fuse them), never the identifiers patient_ref and client_ref (the broker needs none)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from kombu import Connection

from contracts.jobs import ClinicalMetadata, InferenceTask
from contracts.tasks import INFERENCE_QUEUE
from services.gateway.adapters.task_publisher import CeleryTaskPublisher, build_celery_app
from services.gateway.api.app import create_app
from services.gateway.config import Settings
from tests.gateway import samples
from tests.gateway.fakes import KEY_A, FakeReports, InMemoryPublisher

IDENTIFIERS = {"patient_ref": "pat-7731", "client_ref": "visit-0042"}
CLINICAL = {"age": "54", "sex": "female", "body_site": "back"}


def _upload_form(**form: str) -> dict[str, object]:
    return {"files": {"file": ("lesion.jpg", samples.jpeg(), "image/jpeg")}, "data": form}


def _assert_no_identifiers(message: str) -> None:
    for name, value in IDENTIFIERS.items():
        assert name not in message
        assert value not in message


async def test_clinical_fields_are_queued_and_identifiers_are_not(client, publisher: InMemoryPublisher):
    response = await client.post("/v1/images", **_upload_form(**IDENTIFIERS, **CLINICAL))

    assert response.status_code == 202
    [task] = publisher.tasks
    assert task.clinical == ClinicalMetadata(age=54, sex="female", body_site="back")
    _assert_no_identifiers(task.model_dump_json())


async def test_identifiers_still_reach_reports(client, reports: FakeReports):
    response = await client.post("/v1/images", **_upload_form(**IDENTIFIERS, **CLINICAL))

    assert reports.jobs[response.json()["job_id"]]["body"]["metadata"]["patient_ref"] == "pat-7731"


async def test_an_upload_without_clinical_fields_queues_no_clinical_part(
    client, publisher: InMemoryPublisher
):
    await client.post("/v1/images", **_upload_form(**IDENTIFIERS))

    assert publisher.tasks[0].clinical is None


async def test_a_partial_clinical_context_is_queued_as_given(client, publisher: InMemoryPublisher):
    await client.post("/v1/images", **_upload_form(body_site="scalp"))

    assert publisher.tasks[0].clinical == ClinicalMetadata(body_site="scalp")


async def test_every_job_of_a_batch_carries_the_batchs_clinical_part(client, publisher: InMemoryPublisher):
    files = [("files", (name, samples.jpeg(), "image/jpeg")) for name in ("a.jpg", "b.jpg")]

    response = await client.post("/v1/batches", files=files, data={**IDENTIFIERS, "age": "61", "sex": "male"})

    assert response.status_code == 202
    assert [t.clinical for t in publisher.tasks] == [ClinicalMetadata(age=61, sex="male")] * 2
    for task in publisher.tasks:
        _assert_no_identifiers(task.model_dump_json())


# -- through the real Celery publisher, to kombu's in-memory broker ----------------------------


def _drain() -> list[str]:
    """Bodies of every message waiting on the inference queue, as the worker would receive them."""
    with Connection("memory://") as connection:
        queue = connection.SimpleQueue(INFERENCE_QUEUE)
        bodies = []
        while queue.qsize():
            message = queue.get(timeout=1)
            message.ack()
            bodies.append(message.body if isinstance(message.body, str) else message.body.decode())
        queue.close()
        return bodies


@pytest.fixture
async def broker_client(settings: Settings, reports: FakeReports) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway publishing through Celery to the in-memory broker."""
    _drain()
    app = create_app(settings, publisher=CeleryTaskPublisher(build_celery_app("memory://")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", headers={"Authorization": f"Bearer {KEY_A}"}
        ) as http:
            yield http


async def test_the_broker_message_carries_the_clinical_part_and_no_identifier(broker_client):
    response = await broker_client.post("/v1/images", **_upload_form(**IDENTIFIERS, **CLINICAL))

    assert response.status_code == 202
    [body] = _drain()
    _assert_no_identifiers(body)
    _, kwargs, _ = json.loads(body)
    task = InferenceTask.model_validate(kwargs["payload"])
    assert task.job_id == response.json()["job_id"]
    assert kwargs["payload"]["clinical"] == {"age": 54, "sex": "female", "body_site": "back"}
