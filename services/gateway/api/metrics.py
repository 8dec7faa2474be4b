"""Prometheus metrics, labelled by route template (never the raw path, which holds ids)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    """One registry per app, so several apps (tests) never clash on metric names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.errors = Counter(
            "gateway_errors_total", "Error responses by error code", ["code"], registry=self.registry
        )
        self.tasks_published = Counter(
            "gateway_tasks_published_total",
            "jobs queued for inference (one per task, or several per chunk)",
            registry=self.registry,
        )
        # jobs queued / messages sent = the mean micro-batch a worker gets.
        self.task_messages = Counter(
            "gateway_task_messages_total",
            "task messages sent to the broker (a chunk message carries several jobs)",
            registry=self.registry,
        )

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request (the request-context middleware calls this)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def error_rendered(self, code: str) -> None:
        """Count one error response by its code (the error handlers call this)."""
        self.errors.labels(code).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
