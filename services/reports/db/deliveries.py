"""Deliveries: written with the change that ended a job (the outbox), claimed by the dispatcher
(services/reports/dispatcher.py) under row locks, and their log read back for the API."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contracts.audit import AuditAction
from contracts.integrations import (
    FHIR_PUSH_EVENT,
    DeliveryKind,
    DeliveryStatus,
    DeliveryView,
    WebhookEvent,
)
from contracts.jobs import UNQUEUED_ERROR_CODES, JobStatus
from contracts.users import Actor
from services.common.request_id import current_request_id
from services.reports.db.audit import record_audit
from services.reports.db.models import Batch, Delivery, FhirEndpoint, Job, WebhookEndpoint
from services.reports.domain.errors import DeliveryNotFoundError, DeliveryPendingError
from services.reports.domain.lifecycle import ENDED_STATUSES, FINAL_STATUSES


def _new_delivery(
    *,
    tenant_id: str,
    kind: DeliveryKind,
    event: str,
    dedupe_key: str,
    now: datetime,
    retry_window: timedelta,
    webhook_id: str | None = None,
    job_id: str | None = None,
    batch_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Delivery:
    return Delivery(
        id=f"dlv_{uuid.uuid4().hex}",
        tenant_id=tenant_id,
        kind=kind.value,
        event=event,
        webhook_id=webhook_id,
        job_id=job_id,
        batch_id=batch_id,
        dedupe_key=dedupe_key,
        payload=payload,
        status=DeliveryStatus.pending.value,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        give_up_at=now + retry_window,
    )


def _webhook_delivery(
    hook: WebhookEndpoint,
    event: WebhookEvent,
    subject_id: str,
    body: dict[str, Any],
    now: datetime,
    retry_window: timedelta,
    *,
    job_id: str | None = None,
    batch_id: str | None = None,
) -> Delivery:
    """One event for one webhook endpoint, at most once per (endpoint, event, subject)."""
    return _new_delivery(
        tenant_id=hook.tenant_id,
        kind=DeliveryKind.webhook,
        event=event.value,
        dedupe_key=f"{hook.id}:{event.value}:{subject_id}",
        now=now,
        retry_window=retry_window,
        webhook_id=hook.id,
        job_id=job_id,
        batch_id=batch_id,
        payload=body,
    )


def _live_webhooks(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.removed_at.is_(None)
            )
        )
    )


def _already_planned(session: Session, keys: Iterable[str]) -> set[str]:
    wanted = list(keys)
    if not wanted:
        return set()
    return set(session.scalars(select(Delivery.dedupe_key).where(Delivery.dedupe_key.in_(wanted))))


def _event_body(event: str, now: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    return {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}


def job_finished_data(job: Job) -> dict[str, Any]:
    """What a `job.finished` webhook says: enough to decide whether to fetch the job (no patient
    data beyond the client's own reference; the receiver reads the rest through the API)."""
    report = job.report
    return {
        "job_id": job.id,
        "batch_id": job.batch_id,
        "client_ref": job.client_ref,
        "status": job.status,
        "error_code": job.error_code,
        "triage_level": report.triage_level if report is not None else None,
        "ood_decision": report.ood_decision if report is not None else None,
        "model_version": report.model_version if report is not None else None,
    }


# Set in `Session.info` by a transaction that added deliveries: the route then wakes this process's
# dispatcher, and only then (each wake is a round of queries, and most jobs have nothing to send).
DELIVERIES_ADDED = "skintriage.deliveries_added"


def _note_added(session: Session, count: int) -> None:
    if count:
        session.info[DELIVERIES_ADDED] = True


def plan_job_finished(session: Session, jobs: Iterable[Job], now: datetime, retry_window: timedelta) -> int:
    """Add the deliveries that jobs just ended (done, rejected or failed) call for, to the caller's
    transaction: `job.finished` to each subscribed webhook, the FHIR push for a job with a result,
    and `batch.finished` when the job was its batch's last. Returns how many were added."""
    # A job failed because it was never queued was answered as an error to its client, and an
    # Idempotency-Key retry may still run it: it has not finished.
    ended = [
        job
        for job in jobs
        if JobStatus(job.status) in ENDED_STATUSES and job.error_code not in UNQUEUED_ERROR_CODES
    ]
    if not ended:
        return 0
    planned: list[Delivery] = []
    by_tenant: dict[str, list[Job]] = {}
    for job in ended:
        by_tenant.setdefault(job.tenant_id, []).append(job)
    for tenant_id, tenant_jobs in by_tenant.items():
        live = _live_webhooks(session, tenant_id)
        hooks = [hook for hook in live if WebhookEvent.job_finished.value in hook.events]
        fhir = session.get(FhirEndpoint, tenant_id)
        for job in tenant_jobs:
            body = _event_body(WebhookEvent.job_finished.value, now, job_finished_data(job))
            planned.extend(
                _webhook_delivery(
                    hook, WebhookEvent.job_finished, job.id, body, now, retry_window, job_id=job.id
                )
                for hook in hooks
            )
            if fhir is not None and JobStatus(job.status) in FINAL_STATUSES:
                planned.append(
                    _new_delivery(
                        tenant_id=tenant_id,
                        kind=DeliveryKind.fhir,
                        event=FHIR_PUSH_EVENT,
                        dedupe_key=f"fhir:{tenant_id}:{job.id}",
                        now=now,
                        retry_window=retry_window,
                        job_id=job.id,
                    )
                )
        batch_hooks = [hook for hook in live if WebhookEvent.batch_finished.value in hook.events]
        batch_ids = sorted({job.batch_id for job in tenant_jobs if job.batch_id is not None})
        if batch_hooks and batch_ids:
            planned.extend(
                _plan_batches_finished(session, tenant_id, batch_ids, batch_hooks, now, retry_window)
            )
    if not planned:  # no webhook or FHIR endpoint to tell: no lookup of earlier plans either
        return 0
    existing = _already_planned(session, (d.dedupe_key for d in planned))
    added = [delivery for delivery in planned if delivery.dedupe_key not in existing]
    session.add_all(added)
    _note_added(session, len(added))
    return len(added)


def plan_review_pushed(
    session: Session, job: Job, version: int, now: datetime, retry_window: timedelta
) -> bool:
    """A clinician's review made the job's FHIR bundle final: where the tenant has a FHIR endpoint,
    add one more push (the dispatcher builds the bundle when it sends, so it carries the latest
    review) to the caller's transaction, once per review version. Returns whether one was added."""
    if session.get(FhirEndpoint, job.tenant_id) is None:
        return False
    dedupe_key = f"fhir:{job.tenant_id}:{job.id}:review:{version}"
    if _already_planned(session, [dedupe_key]):
        return False
    session.add(
        _new_delivery(
            tenant_id=job.tenant_id,
            kind=DeliveryKind.fhir,
            event=FHIR_PUSH_EVENT,
            dedupe_key=dedupe_key,
            now=now,
            retry_window=retry_window,
            job_id=job.id,
        )
    )
    _note_added(session, 1)
    return True


def _plan_batches_finished(
    session: Session,
    tenant_id: str,
    batch_ids: list[str],
    hooks: list[WebhookEndpoint],
    now: datetime,
    retry_window: timedelta,
) -> list[Delivery]:
    """`batch.finished` for those batches whose every job has ended. The batch row is locked
    first: two transactions ending a batch's last two jobs at once would otherwise each count the
    other's job as still open (uncommitted) and neither would announce the batch. Under the lock,
    PostgreSQL's next statement sees the other's commit; SQLite has one writer at a time anyway."""
    planned: list[Delivery] = []
    for batch_id in batch_ids:
        batch = session.scalar(select(Batch).where(Batch.id == batch_id).with_for_update())
        if batch is None:
            continue
        session.flush()
        counts = dict(
            session.execute(
                select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
            ).all()
        )
        open_jobs = sum(n for status, n in counts.items() if JobStatus(status) not in ENDED_STATUSES)
        if open_jobs or sum(counts.values()) < batch.total:
            continue
        data = {
            "batch_id": batch.id,
            "client_ref": batch.client_ref,
            "total": batch.total,
            "counts": {status: int(n) for status, n in sorted(counts.items())},
        }
        body = _event_body(WebhookEvent.batch_finished.value, now, data)
        planned.extend(
            _webhook_delivery(
                hook, WebhookEvent.batch_finished, batch.id, body, now, retry_window, batch_id=batch.id
            )
            for hook in hooks
        )
    return planned


def claim_due(session: Session, now: datetime, limit: int, hold: timedelta) -> list[Delivery]:
    """Up to `limit` pending deliveries due now, locked (other replicas skip them) and held for
    `hold` (their next attempt moved past the send), one attempt counted each; the caller commits
    and then sends. A dispatcher that dies mid-send leaves them due again once the hold ends."""
    rows = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.status == DeliveryStatus.pending.value, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for delivery in rows:
        delivery.attempts += 1
        delivery.next_attempt_at = now + hold
    return rows


def record_outcome(
    session: Session,
    delivery_id: str,
    *,
    now: datetime,
    delivered: bool,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> Delivery | None:
    """How an attempt went: delivered; pending again until `retry_at`; or failed (no `retry_at`,
    or it falls past the delivery's `give_up_at`). The caller commits."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.pending.value:
        return delivery
    delivery.last_status_code = status_code
    delivery.last_error = error[:512] if error else None
    if delivered:
        delivery.status = DeliveryStatus.delivered.value
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif retry_at is not None and retry_at <= delivery.give_up_at:
        delivery.next_attempt_at = retry_at
    else:
        delivery.status = DeliveryStatus.failed.value
        delivery.next_attempt_at = None
    return delivery


def delivery_view(delivery: Delivery) -> DeliveryView:
    """A delivery as the API shows it (never its payload or secrets)."""
    return DeliveryView(
        delivery_id=delivery.id,
        kind=DeliveryKind(delivery.kind),
        event=delivery.event,
        status=DeliveryStatus(delivery.status),
        webhook_id=delivery.webhook_id,
        job_id=delivery.job_id,
        batch_id=delivery.batch_id,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
        give_up_at=delivery.give_up_at,
    )


def list_for_job(session: Session, tenant_id: str, job_id: str) -> list[Delivery]:
    """The job's deliveries (its `job.finished` webhooks and FHIR push), newest first."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.tenant_id == tenant_id, Delivery.job_id == job_id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        )
    )


def list_for_webhook(session: Session, tenant_id: str, webhook_id: str, limit: int) -> list[Delivery]:
    """A webhook endpoint's delivery log, newest first."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.tenant_id == tenant_id, Delivery.webhook_id == webhook_id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


def replay(
    session: Session,
    tenant_id: str,
    delivery_id: str,
    now: datetime,
    retry_window: timedelta,
    actor: Actor | None = None,
) -> Delivery:
    """A delivered or failed delivery sent again from now, with a fresh retry window (the same
    webhook id and body: receivers deduplicate on the id). A pending one is refused: it is
    still being tried. Audited `delivery.replay`."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.tenant_id != tenant_id:
        raise DeliveryNotFoundError("no such delivery", details={"delivery_id": delivery_id})
    if delivery.status == DeliveryStatus.pending.value:
        raise DeliveryPendingError("the delivery is still being tried", details={"delivery_id": delivery_id})
    delivery.status = DeliveryStatus.pending.value
    delivery.next_attempt_at = now
    delivery.give_up_at = now + retry_window
    delivery.delivered_at = None
    record_audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=AuditAction.delivery_replay.value,
        resource_type="delivery",
        resource_id=delivery.id,
        request_id=current_request_id(),
        details={"kind": delivery.kind, "event": delivery.event},
    )
    session.commit()
    return delivery
