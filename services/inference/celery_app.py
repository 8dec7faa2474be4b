"""The worker's Celery app.

Start: `celery -A services.inference.celery_app:celery_app worker -Q inference --concurrency 1`.
Settings are read at import, so a worker with a missing or placeholder INFERENCE_INTERNAL_TOKEN
(or inconsistent time limits) refuses to start, and so does one whose bundle is missing or does not
match its sha256 (checked in `worker_init`). Each worker process builds its Predictor and HTTP
clients once, in `worker_process_init` (prefork children and the solo pool both send it).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown

from contracts.tasks import INFERENCE_CHUNK_TASK_NAME, INFERENCE_QUEUE, INFERENCE_TASK_NAME
from model_bundle.loader import load_manifest
from services.common.json_logging import configure_logging
from services.common.task_queue import ensure_sqlite_dir
from services.inference.config import Settings, get_settings
from services.inference.json_logging import WorkerJsonFormatter
from services.inference.resources import close_resources, init_resources

log = logging.getLogger("services.inference.worker")


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options. Redis redelivers a message nobody acked within the visibility
    timeout; kombu's SQLAlchemy transport has no such timeout and would pass unknown options to
    `create_engine`, so it gets none."""
    if settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://")):
        return {"visibility_timeout": settings.broker_visibility_timeout}
    return {}


# kombu's SQLAlchemy transport polls its table once a second by default, which caps an embedded
# worker at ~1 task/s; it forwards transport options to create_engine, so the interval is set on
# the transport class instead (measured: a 20-image batch took 20 s embedded vs 2 s on Redis).
# 50 ms (measured on 2 cores, embedded, 2 worker processes): an idle worker polls for 5.3% of one
# core (20 ms: 10.3%, for no better latency); with the gateway polling every 50 ms for its first
# second, one client's p50 went from 183 ms (100 ms here, backing-off polls) to 134 ms.
EMBEDDED_POLLING_INTERVAL_S = 0.05


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once, idempotent, one-at-a-time inference."""
    ensure_sqlite_dir(settings.broker_url)
    if settings.broker_url.startswith("sqla+"):
        from kombu.transport import sqlalchemy as kombu_sqlalchemy

        kombu_sqlalchemy.Transport.polling_interval = EMBEDDED_POLLING_INTERVAL_S
    app = Celery("skintriage-inference", broker=settings.broker_url, include=["services.inference.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_routes={
            name: {"queue": INFERENCE_QUEUE} for name in (INFERENCE_TASK_NAME, INFERENCE_CHUNK_TASK_NAME)
        },
        task_default_queue=INFERENCE_QUEUE,
        # Ack after the task finishes and requeue if the process dies mid-task: a crash never
        # loses a job, and the report upsert is idempotent on the job id, so a rerun is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: an inference is CPU-bound, prefetching only
        # strands jobs behind a busy process.
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        # Redis hands an unacked message to another worker after its visibility timeout; the
        # time limits above are validated to be shorter, so a task never runs twice at once.
        broker_transport_options=transport_options(settings),
        # Results live in the reports service, not in a Celery result backend.
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
        timezone="UTC",
    )
    return app


settings = get_settings()
celery_app = create_celery_app(settings)


# Celery's own per-task INFO lines ("received", "succeeded"): the task's `task.done` line (with
# its timings) is the one line per job on the hot path. Their warnings and errors still show.
_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def _configure_worker_logging() -> None:
    configure_logging(WorkerJsonFormatter(), settings.log_level)
    if logging.getLevelName(settings.log_level.upper()) != logging.DEBUG:
        for name in _PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def _on_setup_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from installing its own text log format.
    _configure_worker_logging()


def _on_worker_init(**_: Any) -> None:
    # Celery logs and swallows an Exception from a signal handler, which would leave a worker
    # consuming tasks it cannot run; SystemExit is not swallowed, so the worker refuses to start.
    _configure_worker_logging()
    try:
        load_manifest(settings.bundle_dir)
    except Exception as exc:
        log.critical(
            "worker.bundle_invalid", extra={"bundle_dir": str(settings.bundle_dir), "error": str(exc)}
        )
        raise SystemExit(1) from exc


def _on_worker_process_init(**_: Any) -> None:
    _configure_worker_logging()
    try:
        init_resources(settings)
    except Exception as exc:
        log.critical("worker.process_init_failed", exc_info=exc)
        raise SystemExit(1) from exc


def _on_worker_process_shutdown(**_: Any) -> None:
    close_resources()


setup_logging.connect(_on_setup_logging, weak=False)
worker_init.connect(_on_worker_init, weak=False)
worker_process_init.connect(_on_worker_process_init, weak=False)
worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False)
