"""What a worker process builds once and reuses for every task: the Predictor (an ONNX Runtime
session) and the two HTTP clients. Built in `worker_process_init`; built lazily on first use
when the task runs outside a worker (unit tests, eager mode)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from model_bundle.predictor import Predictor
from services.inference.adapters.finish_notifier import FinishNotifier, finish_notifier
from services.inference.adapters.ood_client import HttpOodClient
from services.inference.adapters.reports_client import HttpReportsClient
from services.inference.config import Settings, get_settings

log = logging.getLogger("services.inference.resources")


@dataclass(frozen=True)
class WorkerResources:
    """The per-process singletons a task uses."""

    predictor: Predictor
    ood: HttpOodClient
    reports: HttpReportsClient
    finished: FinishNotifier

    def close(self) -> None:
        """Release the HTTP connection pools and the notifier's connection."""
        self.ood.close()
        self.reports.close()
        self.finished.close()


def build_resources(settings: Settings) -> WorkerResources:
    """Load the bundle into ONNX Runtime with the configured thread count and open the clients."""
    token = settings.internal_token.get_secret_value()
    predictor = Predictor(settings.bundle_dir, intra_op_threads=settings.ort_threads)
    resources = WorkerResources(
        predictor=predictor,
        ood=HttpOodClient(settings.ood_url, token, settings.http_timeout_seconds),
        reports=HttpReportsClient(
            settings.reports_url, token, settings.http_timeout_seconds, lease_seconds=settings.lease_seconds
        ),
        finished=finish_notifier(settings.broker_url),
    )
    ref = predictor.model_ref
    log.info(
        "worker.bundle_loaded",
        extra={
            "model": ref.name,
            "version": ref.version,
            "sha256": ref.sha256,
            "ort_threads": settings.ort_threads,
        },
    )
    return resources


_lock = threading.Lock()
_current: WorkerResources | None = None


def init_resources(settings: Settings | None = None) -> WorkerResources:
    """(Re)build this process's resources, closing any previous ones."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = build_resources(settings if settings is not None else get_settings())
        return _current


def get_resources() -> WorkerResources:
    """This process's resources, built on first use if `worker_process_init` did not run."""
    current = _current
    return current if current is not None else init_resources()


def close_resources() -> None:
    """Drop this process's resources (worker shutdown, test teardown)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = None
