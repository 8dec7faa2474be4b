"""The worker's job-finished notifications: published on the broker's Redis server, one message
per job; none (and no error) on a broker without pub/sub or a Redis that is down."""

from __future__ import annotations

import time

import redis

from contracts.jobs import JobStatus
from contracts.notifications import JOB_FINISHED_CHANNEL, JobFinished
from services.inference.adapters.finish_notifier import (
    NoFinishNotifier,
    RedisFinishNotifier,
    finish_notifier,
    finished,
)


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
