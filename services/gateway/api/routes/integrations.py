"""EHR integration (issue 11): a job as a FHIR R4 Bundle or a printable PDF, the tenant's signed
webhooks and FHIR endpoint (SMART Backend Services), and the deliveries made to them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

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
from services.gateway.api.deps import (
    ID_PATTERN,
    ContextDep,
    IntegrationManagerDep,
    JobIdPath,
    PrincipalDep,
    RequestIdDep,
)
from services.gateway.api.responses import PRIVATE_HEADERS, api_key_route

router = APIRouter(tags=["integrations"])

WebhookIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a webhook endpoint id")]
DeliveryIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a delivery id")]


@router.get(
    "/v1/jobs/{job_id}/fhir",
    response_class=Response,
    summary="A finished job as an HL7 FHIR R4 Bundle",
    description="DiagnosticReport (preliminary; the PDF report as its presentedForm), one Observation "
    "per class probability, the triage level, the OOD/quality verdict and the conformal set, Media for "
    "the image and heatmap, a Device for the model and a Provenance. `type=transaction` gives a bundle "
    "an EHR can POST: every entry is a conditional create (`ifNoneExist` on identifiers made from the "
    "job id), so posting it twice creates nothing twice. 409 `job.not_finished` until the job has a result.",
    responses={
        200: {
            "content": {FHIR_JSON_MEDIA_TYPE: {"schema": {"type": "object"}}},
            "description": "A FHIR Bundle",
        },
        **api_key_route(404, 409),
    },
)
async def get_job_fhir(
    job_id: JobIdPath,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
    bundle_type: Annotated[Literal["collection", "transaction"], Query(alias="type")] = "collection",
) -> Response:
    """The FHIR Bundle of a done or rejected job."""
    blob = await context.reports.get_job_document(
        principal.tenant_id, job_id, "fhir", request_id=request_id, params={"type": bundle_type}
    )
    return Response(content=blob.content, media_type=FHIR_JSON_MEDIA_TYPE, headers=PRIVATE_HEADERS)


@router.get(
    "/v1/jobs/{job_id}/report.pdf",
    response_class=Response,
    summary="A finished job's printable report (PDF)",
    description="Image and heatmap side by side, probabilities, triage level and its threshold, the "
    "OOD verdict, the conformal set, model version, dates, patient reference and the disclaimer. "
    "409 `job.not_finished` until the job has a result.",
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The report"},
        **api_key_route(404, 409),
    },
)
async def get_job_report_pdf(
    job_id: JobIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> Response:
    """The PDF report of a done or rejected job."""
    blob = await context.reports.get_job_document(
        principal.tenant_id, job_id, "report.pdf", request_id=request_id
    )
    headers = {**PRIVATE_HEADERS, "Content-Disposition": f'inline; filename="skintriage-{job_id}.pdf"'}
    return Response(content=blob.content, media_type="application/pdf", headers=headers)


@router.get(
    "/v1/jobs/{job_id}/deliveries",
    response_model=DeliveryList,
    summary="Where a job's result was delivered: its webhooks and its FHIR push",
    responses=api_key_route(404),
)
async def get_job_deliveries(
    job_id: JobIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> DeliveryList:
    """Each delivery with its attempts, last status and error."""
    return await context.reports.list_job_deliveries(principal.tenant_id, job_id, request_id=request_id)


@router.post(
    "/v1/deliveries/{delivery_id}/replay",
    response_model=DeliveryView,
    summary="Send a failed (or delivered) delivery again",
    description="Same webhook id and body (receivers deduplicate on `webhook-id`), a fresh retry "
    "window. 409 `delivery.pending` while the delivery is still being tried.",
    responses=api_key_route(403, 404, 409),
)
async def replay_delivery(
    delivery_id: DeliveryIdPath,
    context: ContextDep,
    principal: IntegrationManagerDep,
    request_id: RequestIdDep,
) -> DeliveryView:
    """The delivery, pending again."""
    return await context.reports.replay_delivery(principal.tenant_id, delivery_id, request_id=request_id)


@router.post(
    "/v1/webhooks",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Add a webhook endpoint (the signing secret is shown once)",
    description="`job.finished` (a job is done, rejected or failed) and `batch.finished` (every job of a "
    "batch has ended), POSTed as JSON signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
    "`webhook-signature`: HMAC-SHA256 with the `whsec_` secret), retried with backoff. The URL must be "
    "https with a host name or IP literal and no credentials (422 `request.invalid` otherwise).",
    # 400 `request.malformed`: a body that is not JSON.
    responses=api_key_route(400, 403),
)
async def add_webhook(
    body: WebhookCreate, context: ContextDep, principal: IntegrationManagerDep, request_id: RequestIdDep
) -> WebhookCreated:
    """The new endpoint and its secret."""
    return await context.reports.create_webhook(principal.tenant_id, body, request_id=request_id)


@router.get(
    "/v1/webhooks",
    response_model=WebhookList,
    summary="The tenant's webhook endpoints",
    responses=api_key_route(403),
)
async def list_webhooks(
    context: ContextDep, principal: IntegrationManagerDep, request_id: RequestIdDep
) -> WebhookList:
    """Endpoints, oldest first (secrets are never listed)."""
    return await context.reports.list_webhooks(principal.tenant_id, request_id=request_id)


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a webhook endpoint",
    responses=api_key_route(403, 404),
)
async def remove_webhook(
    webhook_id: WebhookIdPath, context: ContextDep, principal: IntegrationManagerDep, request_id: RequestIdDep
) -> Response:
    """Nothing more is delivered to it."""
    await context.reports.remove_webhook(principal.tenant_id, webhook_id, request_id=request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookSecret,
    summary="Rotate a webhook's signing secret",
    description="The new secret is shown once. Until `previous_secret_expires_at`, deliveries carry a "
    "signature with each secret, so a receiver can switch at its own pace.",
    responses=api_key_route(403, 404),
)
async def rotate_webhook_secret(
    webhook_id: WebhookIdPath, context: ContextDep, principal: IntegrationManagerDep, request_id: RequestIdDep
) -> WebhookSecret:
    """The new secret."""
    return await context.reports.rotate_webhook_secret(principal.tenant_id, webhook_id, request_id=request_id)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    summary="A webhook endpoint's delivery log, newest first",
    responses=api_key_route(403, 404),
)
async def list_webhook_deliveries(
    webhook_id: WebhookIdPath,
    context: ContextDep,
    principal: IntegrationManagerDep,
    request_id: RequestIdDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    """Deliveries with their attempts, last status and error."""
    return await context.reports.list_webhook_deliveries(
        principal.tenant_id, webhook_id, limit, request_id=request_id
    )


@router.put(
    "/v1/fhir-endpoint",
    response_model=FhirEndpointView,
    summary="Set the FHIR server finished jobs are pushed to",
    description="Each done or rejected job's transaction Bundle is POSTed to `base_url`, with a token "
    "from `token_url` obtained per SMART Backend Services (client credentials, `private_key_jwt` "
    "assertion signed RS384 or ES384). SkinTriage makes the key pair: register the answered `jwks` "
    "with the authorisation server. 201 the first time, 200 after; `rotate_key` makes a new pair.",
    # 400 `request.malformed`: a body that is not JSON.
    responses={201: {"model": FhirEndpointView, "description": "Created"}, **api_key_route(400, 403)},
)
async def put_fhir_endpoint(
    body: FhirEndpointConfig,
    context: ContextDep,
    principal: IntegrationManagerDep,
    request_id: RequestIdDep,
    response: Response,
) -> FhirEndpointView:
    """The endpoint and its public JWKS."""
    view, created = await context.reports.put_fhir_endpoint(principal.tenant_id, body, request_id=request_id)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return view


@router.get(
    "/v1/fhir-endpoint",
    response_model=FhirEndpointView,
    summary="The FHIR server results are pushed to, and the public JWKS",
    responses=api_key_route(403, 404),
)
async def get_fhir_endpoint(
    context: ContextDep, principal: IntegrationManagerDep, request_id: RequestIdDep
) -> FhirEndpointView:
    """404 `fhir_endpoint.not_found` when none is set."""
    return await context.reports.get_fhir_endpoint(principal.tenant_id, request_id=request_id)


@router.delete(
    "/v1/fhir-endpoint",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Stop pushing results to the FHIR server",
    responses=api_key_route(403, 404),
)
async def remove_fhir_endpoint(
    context: ContextDep, principal: IntegrationManagerDep, request_id: RequestIdDep
) -> Response:
    """Pending pushes fail `fhir_endpoint.removed`."""
    await context.reports.remove_fhir_endpoint(principal.tenant_id, request_id=request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
