"""Reports service client: report upsert (PUT, idempotent on job id) and job failure."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from contracts.reports import JobFailure, ReportUpsert
from services.inference.adapters.internal_http import InternalHttpClient


class HttpReportsClient:
    """Implements domain.ports.ReportsClient over HTTP."""

    def __init__(
        self, base_url: str, token: str, timeout_seconds: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = InternalHttpClient("reports", base_url, token, timeout_seconds, transport)

    def mark_running(self, job_id: str, *, tenant_id: str, request_id: str | None) -> None:
        """Tell the reports service the job has started, so the dashboard shows it running."""
        self._http.send(
            "POST",
            f"/internal/v1/jobs/{quote(job_id, safe='')}/running",
            body=None,
            tenant_id=tenant_id,
            request_id=request_id,
        )

    def upsert_report(self, report: ReportUpsert, *, request_id: str | None) -> None:
        """PUT the job's one report; a second PUT for the same job replaces it."""
        self._http.send(
            "PUT",
            f"/internal/v1/reports/{quote(report.job_id, safe='')}",
            body=report.model_dump(mode="json"),
            tenant_id=report.tenant_id,
            request_id=request_id,
        )

    def fail_job(self, failure: JobFailure, *, request_id: str | None) -> None:
        """Record that the job was given up, with its error code."""
        self._http.send(
            "POST",
            f"/internal/v1/jobs/{quote(failure.job_id, safe='')}/fail",
            body=failure.model_dump(mode="json"),
            tenant_id=failure.tenant_id,
            request_id=request_id,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
