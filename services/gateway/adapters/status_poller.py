"""Wakes `Prefer: wait` requests on a broker without notifications (the embedded SQLite one): every
`interval_seconds`, while requests wait, one `POST /internal/v1/jobs/statuses` per tenant asks
reports where all the waited jobs of that tenant are, instead of one read per waiting request.
A request whose job finished is woken with a `JobFinished` without the job, and reads it once.
A failed round is logged and the next one tries again; each wait also reads its job on its own
at least every second, so a poller that cannot reach reports delays answers, never loses them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from contracts.errors import DomainError
from contracts.jobs import FINISHED_STATUSES
from contracts.notifications import JobFinished
from contracts.reports import MAX_STATUS_QUERY
from services.common.request_id import new_request_id
from services.gateway.adapters.finish_listener import Waiters
from services.gateway.adapters.reports_client import ReportsClient

logger = logging.getLogger(__name__)


class StatusPoller(Waiters):
    """One polling task per gateway process, asleep while nobody waits."""

    def __init__(self, reports: ReportsClient, interval_seconds: float) -> None:
        super().__init__()
        self._reports = reports
        self._interval = interval_seconds
        self._someone_waits = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the polling task."""
        self._task = asyncio.create_task(self._run(), name="status-poller")
        self.connected = True

    async def close(self) -> None:
        """Stop polling."""
        self.connected = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_wait(self) -> None:
        self._someone_waits.set()

    async def poll_once(self) -> None:
        """One round: ask for every waited job's status, tenant by tenant; wake the finished."""
        for tenant_id, job_ids in self.waited_by_tenant().items():
            for start in range(0, len(job_ids), MAX_STATUS_QUERY):
                part = job_ids[start : start + MAX_STATUS_QUERY]
                try:
                    statuses = await self._reports.job_statuses(tenant_id, part, request_id=new_request_id())
                except DomainError as exc:
                    logger.warning(
                        "status poll failed", extra={"tenant_id": tenant_id, "error_code": exc.code}
                    )
                    continue
                for job_id, status in statuses.items():
                    if status in FINISHED_STATUSES:
                        self.wake(JobFinished(job_id=job_id, tenant_id=tenant_id, status=status))

    async def _run(self) -> None:
        while True:
            await self._someone_waits.wait()
            self._someone_waits.clear()
            while self.waited_by_tenant():
                await asyncio.sleep(self._interval)
                try:
                    await self.poll_once()
                except Exception:  # a bug or an odd answer must not end the polling for good
                    logger.exception("status poll round failed")
