"""The worker's job-finished notifications: published on the broker's Redis server, one message
per job; none (and no error) on a broker without pub/sub or a Redis that is down."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
import redis
import respx

from contracts.jobs import JobStatus
from contracts.notifications import JOB_FINISHED_CHANNEL, JobFinished
from services.inference import tasks
from services.inference.adapters.finish_notifier import (
    NoFinishNotifier,
    RedisFinishNotifier,
    finish_notifier,
    finished,
)
from services.inference.resources import WorkerResources
from services.inference.tasks import predict
from tests.inference.conftest import JOB_ID, RecordingNotifier


def _received(pubsub: redis.client.PubSub, count: int) -> list[JobFinished]:
    messages: list[JobFinished] = []
    deadline = time.monotonic() + 5
    while len(messages) < count and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            messages.append(JobFinished.model_validate_json(message["data"]))
    return messages


def test_each_finished_job_is_published_on_the_channel(redis_url: str) -> None:
    subscriber = redis.Redis.from_url(redis_url).pubsub()
    subscriber.subscribe(JOB_FINISHED_CHANNEL)
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    notifier = RedisFinishNotifier(redis_url)
    try:
        notifier.notify([finished("job-1", "t", JobStatus.done), finished("job-2", "t", "failed")])
        got = _received(subscriber, 2)
    finally:
        notifier.close()
        subscriber.close()

    assert [(m.job_id, m.status) for m in got] == [("job-1", JobStatus.done), ("job-2", JobStatus.failed)]


def test_a_redis_that_is_down_loses_the_notification_quietly() -> None:
    notifier = RedisFinishNotifier("redis://127.0.0.1:1/0")  # nothing listens on port 1
    notifier.notify([finished("job-1", "t", JobStatus.done)])  # logged, not raised
    notifier.close()


def test_a_broker_without_pub_sub_gets_no_notifier() -> None:
    assert isinstance(finish_notifier("sqla+sqlite:///var/celery-broker.db"), NoFinishNotifier)
    assert isinstance(finish_notifier("redis://127.0.0.1:6379/0"), RedisFinishNotifier)


def _job_view(job_id: str, status: str) -> dict[str, Any]:
    now = "2026-01-01T00:00:00+00:00"
    return {"job_id": job_id, "status": status, "metadata": {}, "created_at": now, "updated_at": now}


def test_the_task_notifies_its_job_with_the_stored_view_and_a_failure_without_one(
    payload: dict[str, Any],
    resources: WorkerResources,
    mocked: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notifier = RecordingNotifier()
    monkeypatch.setattr(tasks, "get_resources", lambda: dataclasses.replace(resources, finished=notifier))
    mocked["report_put"].respond(200, json=_job_view(JOB_ID, "done"))

    predict.apply(kwargs={"payload": payload}, task_id=JOB_ID)
    corrupt = payload | {"image": payload["image"] | {"data_b64": "bm90IGFuIGltYWdl"}}
    predict.apply(kwargs={"payload": corrupt}, task_id=JOB_ID)

    done, failed = notifier.sent
    assert (done.job_id, done.status) == (JOB_ID, JobStatus.done)
    assert done.job is not None and done.job.job_id == JOB_ID
    assert (failed.job_id, failed.status, failed.job) == (JOB_ID, JobStatus.failed, None)


def test_a_redelivered_task_of_a_finished_job_runs_nothing(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    mocked["job_running"].respond(200, json={"changed": 0, "finished": {JOB_ID: "done"}})

    result = predict.apply(kwargs={"payload": payload}, task_id=JOB_ID).get()

    assert result == {"job_id": JOB_ID, "status": "done"}
    assert not mocked["ood"].called
    assert not mocked["report_put"].called


def test_a_job_another_task_holds_is_left_to_it(
    payload: dict[str, Any], resources: WorkerResources, mocked: respx.MockRouter
) -> None:
    # The sweeper re-published the job while this message waited for its retry: the lease holder
    # runs it, this task neither runs nor fails it.
    mocked["job_running"].respond(200, json={"changed": 0, "busy": [JOB_ID]})

    result = predict.apply(kwargs={"payload": payload}, task_id="another-task").get()

    assert result == {"job_id": JOB_ID, "status": "running"}
    assert not mocked["ood"].called
    assert not mocked["report_put"].called
    assert not mocked["job_fail"].called
    body = json.loads(mocked["job_running"].calls.last.request.content)
    assert body["runner"] == "another-task"
