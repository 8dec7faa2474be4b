"""The sweeper: the jobs table is the truth, and the queue is brought back to it.

Every `REPORTS_SWEEP_INTERVAL_SECONDS`, in a thread of the reports service:
- a `running` job whose lease ran out (its worker was killed, or could not record how the job
  ended) is taken back: queued again and its task re-published;
- a `queued` job enqueued more than `REPORTS_SWEEP_QUEUED_GRACE_SECONDS` ago is re-published when
  the broker's queue is empty: its message was lost (a broker restarted without persistence, a
  gateway that died between registration and publication). While the queue holds messages the
  job may simply be waiting its turn, and re-publishing would only duplicate work;
- a job taken back `REPORTS_SWEEP_MAX_REDRIVES` times is failed `job.abandoned` instead;
- audit entries older than `REPORTS_AUDIT_RETENTION_DAYS` (issue 12; 0 = kept forever) are
  deleted, `REPORTS_AUDIT_PURGE_CHUNK_SIZE` per transaction, at most AUDIT_PURGE_MAX_CHUNKS per
  sweep (a first purge of years of entries is spread over several sweeps).

A duplicate message is harmless: the worker marks a job running first, and reports answers an
ended job's status instead, so the worker skips it; a job already done is never run again and
its report never rewritten. Claims are row-locked (`FOR UPDATE SKIP LOCKED`), so every replica of
the reports service may sweep. Registrations the client was told had failed are never swept: they
are failed `registration.timeout` when they commit late (api/routes/jobs.py).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import cast

from sqlalchemy.orm import Session, sessionmaker

from contracts.jobs import ImageMetadata, InferenceTask, Sex, StoredImage
from services.common.request_id import bound_request_id, new_request_id
from services.common.task_queue import TaskQueue
from services.reports.config import Settings
from services.reports.db.audit import purge_audit_chunk
from services.reports.db.deliveries import plan_job_finished
from services.reports.db.models import Job
from services.reports.db.sweeps import expired_leases, stale_queued, take_back
from services.reports.db.types import utc_now

log = logging.getLogger("services.reports.sweeper")

# Jobs per re-published message: the gateway's default micro-batch (GATEWAY_TASK_CHUNK_SIZE).
SWEEP_CHUNK_JOBS = 8
# Audit purge transactions per sweep: 20 x 1000 rows every 10 s clears a backlog quickly without
# one sweep holding the database for long.
AUDIT_PURGE_MAX_CHUNKS = 20


@dataclass(frozen=True)
class SweepOutcome:
    """What one sweep did; `queue_depth` None when the broker could not be read (nothing done)."""

    queue_depth: int | None
    republished: int = 0
    abandoned: int = 0


def inference_task(job: Job, request_id: str) -> InferenceTask:
    """The task message of a stored job, as the gateway queued it (the stored, re-encoded image;
    only the clinical fields a model may fuse)."""
    metadata = ImageMetadata(age=job.age, sex=cast(Sex | None, job.sex), body_site=job.body_site)
    image = StoredImage.model_validate(
        {
            "media_type": job.media_type,
            "width": job.width,
            "height": job.height,
            "sha256": job.image_sha256,
            "data_b64": base64.b64encode(job.image).decode("ascii"),
        }
    )
    return InferenceTask(
        job_id=job.id,
        tenant_id=job.tenant_id,
        request_id=request_id,
        image=image,
        submitted_at=job.created_at,
        clinical=metadata.clinical(),
        track_lesion=job.lesion_id is not None,
    )


def tenant_chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    """`jobs` grouped by tenant (a chunk message holds one tenant's jobs), at most `size` each."""
    chunks: list[list[Job]] = []
    for _, group in groupby(sorted(jobs, key=lambda job: job.tenant_id), key=lambda job: job.tenant_id):
        tenant_jobs = list(group)
        chunks.extend(tenant_jobs[i : i + size] for i in range(0, len(tenant_jobs), size))
    return chunks


class Sweeper:
    """One sweep at a time (`sweep_once`), or every interval in a daemon thread (`start`/`stop`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queue: TaskQueue,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> SweepOutcome:
        """Take back what lost its task and re-publish it, in one transaction: if the broker
        refuses a message, nothing is changed and the next sweep tries again."""
        try:
            depth = self._queue.depth()
        except Exception as exc:  # kombu raises OperationalError, OSError, timeouts, ...
            log.warning("sweep.broker_unreadable", extra={"error": type(exc).__name__})
            return SweepOutcome(queue_depth=None)
        settings = self._settings
        request_id = new_request_id()
        with self._sessions() as session, bound_request_id(request_id):
            now = self._clock()
            limit = settings.sweep_batch_size
            claimed = expired_leases(session, now, limit)
            if depth == 0:
                grace = timedelta(seconds=settings.sweep_queued_grace_seconds)
                claimed += stale_queued(session, now - grace, limit - len(claimed))
            if not claimed:
                session.rollback()
                return SweepOutcome(queue_depth=depth)
            requeued, abandoned = take_back(claimed, now, settings.sweep_max_redrives)
            plan_job_finished(session, abandoned, now, settings.delivery_window)
            for chunk in tenant_chunks(requeued, SWEEP_CHUNK_JOBS):
                self._queue.send_tasks([inference_task(job, request_id) for job in chunk])
            session.commit()
        for job in abandoned:
            log.warning("sweep.abandoned", extra={"job_id": job.id, "tenant_id": job.tenant_id})
        log.info(
            "sweep.done",
            extra={"queue_depth": depth, "republished": len(requeued), "abandoned": len(abandoned)},
        )
        return SweepOutcome(queue_depth=depth, republished=len(requeued), abandoned=len(abandoned))

    def purge_audit_once(self) -> int:
        """Delete audit entries past the retention period, in bounded chunks (each committed);
        returns how many went. Nothing when the retention is 0 (kept forever)."""
        settings = self._settings
        if settings.audit_retention_days <= 0:
            return 0
        cutoff = self._clock() - timedelta(days=settings.audit_retention_days)
        purged = 0
        with self._sessions() as session:
            for _ in range(AUDIT_PURGE_MAX_CHUNKS):
                deleted = purge_audit_chunk(session, cutoff, settings.audit_purge_chunk_size)
                purged += deleted
                if deleted < settings.audit_purge_chunk_size:
                    break
        if purged:
            log.info("audit.purged: %d entries older than %s", purged, cutoff.isoformat())
        return purged

    def _run(self) -> None:
        while not self._stop.wait(self._settings.sweep_interval_seconds):
            try:
                self.sweep_once()
            except Exception:  # a database outage, say: the next sweep tries again
                log.exception("sweep.failed")
            try:
                self.purge_audit_once()
            except Exception:  # the same: the next sweep purges what this one could not
                log.exception("audit.purge_failed")

    def start(self) -> None:
        """Sweep every interval until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="reports-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """End the thread after the sweep in hand."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None
