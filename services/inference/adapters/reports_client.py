"""Reports service client: report upsert (PUT, idempotent on job id) and job failure."""

from __future__ import annotations

from urllib.parse import quote

import httpx
from pydantic import ValidationError

from contracts.reports import (
    JobFailure,
    JobsRunning,
    JobsRunningResult,
    JobView,
    ReportUpsert,
    ReportUpsertBatch,
    ReportUpsertBatchResult,
    ReportUpsertOutcome,
)
from services.inference.adapters.internal_http import InternalHttpClient, bad_answer, parse_answer
from services.inference.domain.ports import RunClaim


class HttpReportsClient:
    """Implements domain.ports.ReportsClient over HTTP."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_seconds: float,
        transport: httpx.BaseTransport | None = None,
        lease_seconds: int | None = None,
    ) -> None:
        self._http = InternalHttpClient("reports", base_url, token, timeout_seconds, transport)
        # How long a job this worker marks running stays its own (None: reports' default).
        self._lease_seconds = lease_seconds

    def upsert_report(self, report: ReportUpsert, *, request_id: str | None) -> JobView | None:
        """PUT the job's one report (a second PUT for the same job replaces it); the job as reports
        now shows it, or None when its answer is not a JobView (only the notification needs it)."""
        response = self._http.send(
            "PUT",
            f"/internal/v1/reports/{quote(report.job_id, safe='')}",
            body=report,
            tenant_id=report.tenant_id,
            request_id=request_id,
        )
        try:
            return JobView.model_validate_json(response.content)
        except ValidationError:
            return None

    def mark_many_running(
        self, job_ids: list[str], *, tenant_id: str, request_id: str | None, runner: str | None = None
    ) -> RunClaim:
        """Tell the reports service a job or micro-batch has started under `runner`'s lease (one
        call for all its jobs), so the dashboard shows them running and the sweeper leaves them
        to this worker; which have ended and which another runner holds (nothing, if the answer
        is unreadable)."""
        body = JobsRunning(job_ids=job_ids, lease_seconds=self._lease_seconds, runner=runner)
        response = self._http.send(
            "POST",
            "/internal/v1/jobs/running",
            body=body,
            tenant_id=tenant_id,
            request_id=request_id,
        )
        try:
            answer = JobsRunningResult.model_validate_json(response.content)
        except ValidationError:
            return RunClaim()
        return RunClaim(finished=answer.finished, busy=frozenset(answer.busy))

    def upsert_reports(
        self, reports: list[ReportUpsert], *, tenant_id: str, request_id: str | None
    ) -> list[ReportUpsertOutcome]:
        """PUT a micro-batch's reports in one call; one outcome per report, in order."""
        body = ReportUpsertBatch(reports=reports)
        response = self._http.send(
            "PUT", "/internal/v1/reports", body=body, tenant_id=tenant_id, request_id=request_id
        )
        results = parse_answer("reports", ReportUpsertBatchResult, response).results
        if [r.job_id for r in results] != [r.job_id for r in reports]:
            raise bad_answer("reports", response, "answered other jobs")
        return results

    def fail_job(self, failure: JobFailure, *, request_id: str | None) -> None:
        """Record that the job was given up, with its error code."""
        self._http.send(
            "POST",
            f"/internal/v1/jobs/{quote(failure.job_id, safe='')}/fail",
            body=failure,
            tenant_id=failure.tenant_id,
            request_id=request_id,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
