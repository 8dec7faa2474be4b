"""The reports database: tenants, api_keys, batches, jobs, reports, (issue 11) the tenants'
webhook and FHIR endpoints and every delivery made to them, and (issue 12) users, clinicians'
reviews, lesions tracked over time and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    or_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

from contracts.jobs import ClinicalField, JobStatus
from services.reports.db.types import UtcDateTime, utc_now

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(64)


class Base(DeclarativeBase):
    """Declarative base with the shared metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    """A customer organisation; every other row belongs to one."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    # Suggested next step per triage level (contracts.reviews.NextSteps; migration 0007); NULL =
    # the reports service's defaults.
    next_steps: Mapped[dict[str, str] | None] = mapped_column(JSON(none_as_null=True), default=None)


class User(Base):
    """A named person or system of a tenant with one role (contracts.users.Role); API keys belong
    to users. Users are disabled, never deleted (reviews and the audit trail name them)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class ApiKey(Base):
    """A tenant's API key: only its sha256 is stored; `prefix` is for display."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Optional end of validity (create-key --expires-in-days); NULL = until revoked.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # When a verification last accepted the key, to LAST_USED_RESOLUTION (migration 0004).
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # The user the key acts as (migration 0007 gave keys made before users the tenant's `admin`).
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True, default=None)

    tenant: Mapped[Tenant] = relationship()
    user: Mapped[User | None] = relationship()


class Batch(Base):
    """A group of jobs submitted together."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    client_ref: Mapped[str | None] = mapped_column(String(128))
    total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Job(Base):
    """One submitted image and its lifecycle. Image bytes are loaded only when asked for."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        # The report list: tenant-scoped, newest first, keyset on (created_at, id).
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_tenant_patient", "tenant_id", "patient_ref", "created_at"),
        Index("ix_jobs_tenant_status", "tenant_id", "status", "created_at"),
        # The sweeper's two questions (services/reports/sweeper.py), across tenants.
        Index("ix_jobs_status_enqueued", "status", "enqueued_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # A lesion's images over time.
        Index("ix_jobs_lesion_created", "lesion_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    patient_ref: Mapped[str | None] = mapped_column(String(128))
    body_site: Mapped[str | None] = mapped_column(String(64))
    age: Mapped[int | None] = mapped_column(Integer)
    sex: Mapped[str | None] = mapped_column(String(16))
    client_ref: Mapped[str | None] = mapped_column(String(128))
    filename: Mapped[str | None] = mapped_column(String(255))
    image: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now, onupdate=utc_now)
    # Convergence (migration 0005). enqueued_at: when the job was last handed to the queue
    # (registered, re-queued, or re-published by the sweeper); lease_expires_at: until when the
    # worker that marked it running holds it; redrives: how often the sweeper took it back.
    # enqueued_at is set on every job written since (nullable only for the migration's sake).
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=utc_now)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Who holds the lease (contracts.reports.JobLease.runner; migration 0006).
    lease_owner: Mapped[str | None] = mapped_column(String(255), default=None)
    redrives: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # contracts.jobs.DicomRef of an image that arrived as DICOM (migration 0006); NULL otherwise.
    dicom: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # The lesion this image shows (issue 12, migration 0007), when the submission named one.
    lesion_id: Mapped[str | None] = mapped_column(ForeignKey("lesions.id"), default=None)
    # Who submitted it (issue 12: every write records the user); the name is kept as it was then,
    # so the job reads back without a join. NULL for jobs submitted before users existed.
    submitted_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    submitted_by_name: Mapped[str | None] = mapped_column(String(128), default=None)

    report: Mapped[Report | None] = relationship(back_populates="job", lazy="selectin")


class Report(Base):
    """The result for one job. Keyed by job_id, so a redelivered task updates, never duplicates."""

    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_tenant_triage", "tenant_id", "triage_level"),
        Index("ix_reports_tenant_ood", "tenant_id", "ood_decision"),
        Index("ix_reports_tenant_review", "tenant_id", "review_state", "triage_level"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    status: Mapped[str] = mapped_column(String(16))
    triage_level: Mapped[str | None] = mapped_column(String(16))
    triage_threshold: Mapped[float | None] = mapped_column(Float)
    top_class: Mapped[str | None] = mapped_column(String(32))
    malignant_probability: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    conformal_set: Mapped[list[str] | None] = mapped_column(JSON)
    conformal_coverage: Mapped[float | None] = mapped_column(Float)
    # Prediction.metadata_used: the clinical fields the model fused; NULL = image-only model.
    metadata_used: Mapped[list[ClinicalField] | None] = mapped_column(JSON)
    # Prediction.class_display_names (migration 0006); NULL for reports stored before it.
    class_display_names: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # Prediction.malignant_classes (migration 0007): which class codes the bundle counts as
    # malignant, so a review naming a class knows its malignancy; NULL for older reports.
    malignant_classes: Mapped[list[str] | None] = mapped_column(JSON)
    ood: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ood_decision: Mapped[str | None] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    model_sha256: Mapped[str] = mapped_column(String(64))
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # The heatmap PNG: rendered from heatmap_source on first request and kept (or, from a worker
    # before lazy heatmaps, sent ready-made). heatmap_source is contracts.reports.HeatmapSource;
    # SQL NULL (none_as_null), not JSON null, when there is none, so has_heatmap can test it.
    heatmap_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    heatmap_source: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), deferred=True)
    completed_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    # Issue 12 (migration 0007). The latest review, denormalised for the worklist's filter and
    # order: review_state is contracts.reviews.ReviewState, review_version the latest version.
    review_state: Mapped[str] = mapped_column(String(24), default="unreviewed", server_default="unreviewed")
    review_version: Mapped[int | None] = mapped_column(Integer, default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # The model's pooled embedding (float16, little-endian) and the segmented lesion's share of the
    # image, for comparing images of one lesion; NULL when the worker sent none.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True, default=None)
    lesion_area_fraction: Mapped[float | None] = mapped_column(Float, default=None)

    # Whether a heatmap exists (or can be rendered), without loading either.
    has_heatmap: Mapped[bool] = column_property(or_(heatmap_png.is_not(None), heatmap_source.is_not(None)))

    job: Mapped[Job] = relationship(back_populates="report")


class WebhookEndpoint(Base):
    """A tenant's webhook receiver. Secrets are kept as given out (signing needs them); during a
    rotation's overlap the previous one signs too. Removed endpoints keep their row (their
    deliveries refer to it) with `removed_at` set."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(256))
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class FhirEndpoint(Base):
    """A tenant's FHIR server (one at most) and the SMART Backend Services key SkinTriage signs
    its client assertions with (PEM, PKCS#8)."""

    __tablename__ = "fhir_endpoints"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    base_url: Mapped[str] = mapped_column(String(2048))
    token_url: Mapped[str] = mapped_column(String(2048))
    client_id: Mapped[str] = mapped_column(String(256))
    scope: Mapped[str] = mapped_column(String(1024))
    algorithm: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[str] = mapped_column(String(64))
    private_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Delivery(Base):
    """One event to deliver to one receiver: written in the transaction that ended its job (an
    outbox, so an ended job and its deliveries cannot diverge), then sent by the dispatcher
    (services/reports/dispatcher.py) until delivered or past `give_up_at`. `dedupe_key` makes a
    subject's event reach a receiver once however often its job is finished."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # The dispatcher's question, across tenants: what is due now.
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_deliveries_tenant_job", "tenant_id", "job_id", "created_at"),
        Index("ix_deliveries_webhook_created", "webhook_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(32))
    webhook_id: Mapped[str | None] = mapped_column(ForeignKey("webhook_endpoints.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    # A webhook's body, fixed when the event happened (retries send the same bytes and id).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    give_up_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Review(Base):
    """One version of a clinician's review of a job's result. Never updated: a change is a new
    version (`version` counts from 1 per job), so the history of a sign-off is kept whole."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("job_id", "version"),
        Index("ix_reviews_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    version: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    user_name: Mapped[str] = mapped_column(String(128))
    # The clinician's triage level, and whether it is the model's (False: an override).
    triage_level: Mapped[str] = mapped_column(String(16))
    agrees_with_model: Mapped[bool] = mapped_column(Boolean)
    working_diagnosis_code: Mapped[str | None] = mapped_column(String(32))
    working_diagnosis_text: Mapped[str | None] = mapped_column(String(256))
    note: Mapped[str | None] = mapped_column(Text)
    confirmed_diagnosis_code: Mapped[str | None] = mapped_column(String(32))
    confirmed_diagnosis_text: Mapped[str | None] = mapped_column(String(256))
    confirmed_basis: Mapped[str | None] = mapped_column(String(24))
    # Whether the confirmed diagnosis is malignant (the ground truth performance monitoring uses).
    confirmed_malignant: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Lesion(Base):
    """One lesion of a patient (opaque patient_ref), followed over time through the jobs that
    name it. The body-map position is in [0, 1] on the front or back view of a body outline."""

    __tablename__ = "lesions"
    __table_args__ = (Index("ix_lesions_tenant_patient", "tenant_id", "patient_ref", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    patient_ref: Mapped[str] = mapped_column(String(128))
    label: Mapped[str | None] = mapped_column(String(128))
    body_site: Mapped[str | None] = mapped_column(String(64))
    laterality: Mapped[str | None] = mapped_column(String(16))
    body_map_view: Mapped[str | None] = mapped_column(String(8))
    body_map_x: Mapped[float | None] = mapped_column(Float)
    body_map_y: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class AuditEvent(Base):
    """One entry of the append-only audit trail: who (user, role, key), what (action on a
    resource), when, and from where (client address, user agent, request id). No API changes or
    deletes one; on PostgreSQL a trigger refuses UPDATE (migration 0007); only the retention purge
    deletes, past REPORTS_AUDIT_RETENTION_DAYS."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_at", "tenant_id", "at", "id"),
        Index("ix_audit_events_tenant_resource", "tenant_id", "resource_type", "resource_id"),
        Index("ix_audit_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    action: Mapped[str] = mapped_column(String(48))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    user_name: Mapped[str | None] = mapped_column(String(128))
    role: Mapped[str | None] = mapped_column(String(16))
    key_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
