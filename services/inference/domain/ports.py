"""What the pipeline needs from the OOD and reports services; adapters implement these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from contracts.jobs import JobStatus
from contracts.ood import OodScoreItem, OodScoreRequest, OodScoreResponse
from contracts.reports import JobFailure, JobView, ReportUpsert, ReportUpsertOutcome


@dataclass(frozen=True)
class RunClaim:
    """What marking jobs running found: those that have ended (their result, or the failure the
    client was told, stands) and those another runner holds under a live lease (it runs them)."""

    finished: dict[str, JobStatus] = field(default_factory=dict)
    busy: frozenset[str] = frozenset()


class OodClient(Protocol):
    """Scores one model output. Raises TransientError or PermanentError."""

    def score(self, request: OodScoreRequest, *, tenant_id: str, request_id: str | None) -> OodScoreResponse:
        """POST /v1/score."""
        ...

    def score_many(
        self, requests: list[OodScoreRequest], *, tenant_id: str, request_id: str | None
    ) -> list[OodScoreItem]:
        """POST /v1/score/batch: one verdict or error per request, in order."""
        ...


class ReportsClient(Protocol):
    """Stores results. Raises TransientError or PermanentError."""

    def upsert_report(self, report: ReportUpsert, *, request_id: str | None) -> JobView | None:
        """PUT /internal/v1/reports/{job_id}: create or replace the job's one report; the job as
        stored (None if reports' answer was not a JobView)."""
        ...

    def mark_many_running(
        self, job_ids: list[str], *, tenant_id: str, request_id: str | None, runner: str | None = None
    ) -> RunClaim:
        """POST /internal/v1/jobs/running: a job or micro-batch started under `runner`'s lease;
        which have ended (with their status) and which another runner holds."""
        ...

    def upsert_reports(
        self, reports: list[ReportUpsert], *, tenant_id: str, request_id: str | None
    ) -> list[ReportUpsertOutcome]:
        """PUT /internal/v1/reports: a micro-batch's reports, one outcome each, in order."""
        ...

    def fail_job(self, failure: JobFailure, *, request_id: str | None) -> None:
        """POST /internal/v1/jobs/{job_id}/fail: record that the job was given up."""
        ...
