"""Worker configuration: Celery delivery guarantees, time limits, settings that fail fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.tasks import INFERENCE_QUEUE
from services.inference.celery_app import celery_app, create_celery_app
from services.inference.config import Settings
from services.inference.resources import build_resources
from services.inference.tasks import predict, predict_chunk
from tests.inference.conftest import TOKEN


def test_tasks_are_acked_late_and_requeued_when_the_worker_dies() -> None:
    assert celery_app.conf.task_acks_late is True
    assert celery_app.conf.task_reject_on_worker_lost is True
    assert predict.acks_late is True
    assert predict.reject_on_worker_lost is True


def test_worker_prefetches_one_message_at_a_time() -> None:
    assert celery_app.conf.worker_prefetch_multiplier == 1


def test_only_json_is_accepted_and_sent() -> None:
    assert celery_app.conf.accept_content == ["json"]
    assert celery_app.conf.task_serializer == "json"


def test_predict_and_predict_chunk_are_routed_to_the_inference_queue() -> None:
    assert predict.name == "inference.predict"
    assert predict_chunk.name == "inference.predict_chunk"
    assert celery_app.conf.task_routes == {
        "inference.predict": {"queue": INFERENCE_QUEUE},
        "inference.predict_chunk": {"queue": INFERENCE_QUEUE},
    }
    assert INFERENCE_QUEUE == "inference"


def test_time_limits_end_a_task_before_redis_redelivers_it() -> None:
    app = create_celery_app(Settings(internal_token=TOKEN, broker_url="redis://127.0.0.1:6379/0"))

    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit < visibility
    assert celery_app.conf.task_time_limit == app.conf.task_time_limit


def test_sqlalchemy_broker_gets_no_redis_transport_options(tmp_path: Path) -> None:
    app = create_celery_app(
        Settings(internal_token=TOKEN, broker_url=f"sqla+sqlite:///{tmp_path}/var/broker.db")
    )

    assert app.conf.broker_transport_options == {}
    assert (tmp_path / "var").is_dir()


def test_transient_errors_are_retried_for_a_time_window_not_a_count() -> None:
    settings = Settings(internal_token=TOKEN)

    assert predict.max_retries is None
    # Outlasts a 5-minute outage, with room for the last (capped) delay.
    assert settings.retry_window_seconds >= 300 + settings.retry_backoff_max_seconds
    assert settings.retry_backoff_max_seconds + settings.task_time_limit < settings.broker_visibility_timeout


def test_the_lease_covers_one_attempt_and_the_longest_wait_before_the_next() -> None:
    settings = Settings(
        internal_token=TOKEN, task_soft_time_limit=25, task_time_limit=30, retry_backoff_max_seconds=40
    )

    assert settings.lease_seconds > 30 + 40


def test_http_timeouts_that_could_run_an_attempt_into_its_soft_limit_are_refused() -> None:
    # A hung reports would then fail jobs for good (task.timeout) instead of retrying them.
    with pytest.raises(ValidationError, match="http_timeout_seconds"):
        Settings(internal_token=TOKEN, http_timeout_seconds=10, task_soft_time_limit=30, task_time_limit=40)


def test_a_retry_delay_longer_than_the_visibility_timeout_allows_is_refused() -> None:
    # Redis would hand the waiting retry to another worker while the first still holds it.
    with pytest.raises(ValidationError, match="retry_backoff_max_seconds"):
        Settings(internal_token=TOKEN, retry_backoff_max_seconds=280, broker_visibility_timeout=300)


def test_app_built_from_settings_takes_their_limits(tiny_bundle_dir: Path) -> None:
    settings = Settings(
        internal_token=TOKEN,
        broker_url="redis://127.0.0.1:6379/0",
        task_soft_time_limit=5,
        task_time_limit=7,
        http_timeout_seconds=1,
        retry_backoff_max_seconds=1,
        broker_visibility_timeout=9,
    )

    app = create_celery_app(settings)

    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (5, 7)
    assert app.conf.broker_transport_options == {"visibility_timeout": 9}


def test_time_limit_not_below_visibility_timeout_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(internal_token=TOKEN, task_time_limit=3600, broker_visibility_timeout=3600)


@pytest.mark.parametrize("token", ["", "   ", "changeme", "CHANGE-ME", "<internal-token>", "${TOKEN}"])
def test_empty_or_placeholder_internal_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError):
        Settings(internal_token=token)


def test_missing_internal_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERENCE_INTERNAL_TOKEN", raising=False)

    with pytest.raises(ValidationError):
        Settings()  # type: ignore[call-arg]  # the token is deliberately absent


def test_settings_are_read_from_inference_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_ORT_THREADS", "3")
    monkeypatch.setenv("INFERENCE_RETRY_WINDOW_SECONDS", "120")

    settings = Settings()  # type: ignore[call-arg]  # from the environment

    assert (settings.ort_threads, settings.retry_window_seconds) == (3, 120)


def test_default_bundle_is_the_shipped_effnet_lite0() -> None:
    assert Settings(internal_token=TOKEN).bundle_dir.parts[-3:] == (
        "models",
        "skintriage-effnet-lite0",
        "2.0.1",
    )


def test_ort_intra_op_threads_come_from_settings(tiny_bundle_dir: Path) -> None:
    settings = Settings(internal_token=TOKEN, bundle_dir=tiny_bundle_dir, ort_threads=2)

    resources = build_resources(settings)
    try:
        options = resources.predictor.session.get_session_options()
        assert options.intra_op_num_threads == 2
    finally:
        resources.close()
