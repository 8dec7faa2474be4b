"""EHR integration (issue 11): the job as a FHIR Bundle and as a PDF, the tenant's webhook and
FHIR endpoints, and the log of deliveries made to them (replayable)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Path, Query, Request, Response, status

from contracts.integrations import (
    FHIR_JSON_MEDIA_TYPE,
    DeliveryList,
    DeliveryView,
    FhirEndpointConfig,
    FhirEndpointView,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookSecret,
)
from services.reports.api.deps import (
    NO_STORE,
    ActorDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    internal_router,
    wake_dispatcher,
)
from services.reports.db.audit import record_read
from services.reports.db.deliveries import delivery_view, list_for_job, list_for_webhook, replay
from services.reports.db.integrations import (
    create_webhook,
    fhir_endpoint_view,
    get_fhir_endpoint,
    get_webhook,
    list_webhooks,
    put_fhir_endpoint,
    remove_fhir_endpoint,
    remove_webhook,
    rotate_webhook_secret,
    webhook_view,
)
from services.reports.db.jobs import get_job
from services.reports.db.types import utc_now
from services.reports.documents import fhir_bundle_json, load_job_document, report_pdf

router = internal_router("integrations")

Id = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/internal/v1/jobs/{job_id}/fhir", response_class=Response)
def read_job_fhir(
    job_id: Id,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    bundle_type: Annotated[Literal["collection", "transaction"], Query(alias="type")] = "collection",
) -> Response:
    """The finished job as a FHIR R4 Bundle; 409 job.not_finished before it has a result. A
    user's read is audited (`fhir.read`)."""
    document = load_job_document(session, tenant, job_id)
    bundle = fhir_bundle_json(document, settings, bundle_type, utc_now())
    record_read(
        session, tenant_id=tenant, actor=actor, action="fhir.read", resource_type="job", resource_id=job_id
    )
    return Response(content=bundle, media_type=FHIR_JSON_MEDIA_TYPE, headers=NO_STORE)


@router.get("/internal/v1/jobs/{job_id}/report.pdf", response_class=Response)
def read_job_pdf(job_id: Id, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> Response:
    """The printable report; 409 job.not_finished before the job has a result. A user's read is
    audited (`pdf.read`)."""
    pdf = report_pdf(load_job_document(session, tenant, job_id), utc_now())
    record_read(
        session, tenant_id=tenant, actor=actor, action="pdf.read", resource_type="job", resource_id=job_id
    )
    return Response(content=pdf, media_type="application/pdf", headers=NO_STORE)


@router.get("/internal/v1/jobs/{job_id}/deliveries")
def read_job_deliveries(job_id: Id, tenant: TenantDep, session: SessionDep) -> DeliveryList:
    """The job's webhook deliveries and FHIR push, newest first."""
    get_job(session, tenant, job_id)
    return DeliveryList(items=[delivery_view(d) for d in list_for_job(session, tenant, job_id)])


@router.post("/internal/v1/deliveries/{delivery_id}/replay")
def replay_delivery(
    delivery_id: Id,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    actor: ActorDep,
) -> DeliveryView:
    """Send a failed (or delivered) delivery again; 409 delivery.pending while it is being tried."""
    delivery = replay(session, tenant, delivery_id, utc_now(), settings.delivery_window, actor)
    wake_dispatcher(request)
    return delivery_view(delivery)


@router.post("/internal/v1/webhooks", status_code=status.HTTP_201_CREATED)
def add_webhook(
    body: WebhookCreate, tenant: TenantDep, session: SessionDep, actor: ActorDep
) -> WebhookCreated:
    """A new webhook endpoint; its signing secret is in this answer only."""
    return create_webhook(session, tenant, body, utc_now(), actor)


@router.get("/internal/v1/webhooks")
def read_webhooks(tenant: TenantDep, session: SessionDep) -> WebhookList:
    """The tenant's webhook endpoints."""
    now = utc_now()
    return WebhookList(items=[webhook_view(e, now) for e in list_webhooks(session, tenant)])


@router.delete("/internal/v1/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: Id, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> Response:
    """Stop delivering to the endpoint."""
    remove_webhook(session, tenant, webhook_id, utc_now(), actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/internal/v1/webhooks/{webhook_id}/rotate-secret")
def rotate_secret(
    webhook_id: Id, tenant: TenantDep, session: SessionDep, settings: SettingsDep, actor: ActorDep
) -> WebhookSecret:
    """A new signing secret (in this answer only); the old one signs too for the overlap."""
    overlap = timedelta(hours=settings.webhook_secret_overlap_hours)
    return rotate_webhook_secret(session, tenant, webhook_id, utc_now(), overlap, actor)


@router.get("/internal/v1/webhooks/{webhook_id}/deliveries")
def read_webhook_deliveries(
    webhook_id: Id,
    tenant: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    """The endpoint's delivery log, newest first."""
    get_webhook(session, tenant, webhook_id)
    return DeliveryList(
        items=[delivery_view(d) for d in list_for_webhook(session, tenant, webhook_id, limit)]
    )


@router.put("/internal/v1/fhir-endpoint")
def set_fhir_endpoint(
    body: FhirEndpointConfig,
    tenant: TenantDep,
    session: SessionDep,
    response: Response,
    actor: ActorDep,
) -> FhirEndpointView:
    """Set where finished jobs are pushed (201 the first time, 200 after)."""
    endpoint, created = put_fhir_endpoint(session, tenant, body, utc_now(), actor)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return fhir_endpoint_view(endpoint)


@router.get("/internal/v1/fhir-endpoint")
def read_fhir_endpoint(tenant: TenantDep, session: SessionDep) -> FhirEndpointView:
    """The tenant's FHIR endpoint and its public JWKS; 404 when none is set."""
    return fhir_endpoint_view(get_fhir_endpoint(session, tenant))


@router.delete("/internal/v1/fhir-endpoint", status_code=status.HTTP_204_NO_CONTENT)
def delete_fhir_endpoint(tenant: TenantDep, session: SessionDep, actor: ActorDep) -> Response:
    """Stop pushing results."""
    remove_fhir_endpoint(session, tenant, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
