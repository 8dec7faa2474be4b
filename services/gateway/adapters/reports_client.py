"""The reports service's internal HTTP API: the gateway's only way to reach it.

Every call sends `X-Internal-Token`, and `X-Tenant-Id` / `X-Request-ID` where they apply.
Downstream error bodies come back as `UpstreamError` with reports' own status and code;
timeouts, refused connections and 502/503/504 without a body become `UpstreamUnavailableError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from contracts.audit import AuditPage
from contracts.errors import DomainError, ErrorBody
from contracts.integrations import (
    DeliveryList,
    DeliveryView,
    FhirEndpointConfig,
    FhirEndpointView,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookSecret,
)
from contracts.jobs import JobCreate, JobStatus
from contracts.lesions import LesionComparison, LesionCreate, LesionHistory, LesionList, LesionView
from contracts.monitoring import MonitoringView
from contracts.records import ApiKeyVerifyRequest, ApiKeyVerifyResponse, BatchCreate, BatchView
from contracts.reports import (
    JobCreateBatch,
    JobCreateBatchResult,
    JobCreateOutcome,
    JobFailure,
    JobStatuses,
    JobStatusQuery,
    JobView,
    ReportPage,
)
from contracts.reviews import NextSteps, NextStepsUpdate, ReviewCreate, ReviewList, ReviewView
from contracts.users import (
    ACTOR_HEADER,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    UserCreate,
    UserList,
    UserView,
)
from services.common.internal_auth import INTERNAL_TOKEN_HEADER, InternalTokenInvalidError
from services.common.request_id import REQUEST_ID_HEADER
from services.gateway.domain.auth import Principal, current_actor
from services.gateway.domain.errors import UpstreamError, UpstreamUnavailableError

logger = logging.getLogger(__name__)

_ModelT = TypeVar("_ModelT", bound=BaseModel)
_REPLAY_HEADER = "Idempotent-Replay"
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Blob:
    """Bytes answered by reports (a stored image or a heatmap) and their media type."""

    content: bytes
    media_type: str


def register_within_ms(timeout_seconds: float) -> int:
    """What a registration tells reports about the gateway's patience: its timeout less a margin
    (1 s, at most half of it) for the network and the clocks of two processes, so that reports
    counts a registration as late a little before the gateway has given up, never after."""
    return max(1, int(1000 * max(timeout_seconds / 2, timeout_seconds - 1.0)))


class ReportsClient:
    """Typed calls to `/internal/v1/...`; one instance (one connection pool) per process."""

    def __init__(self, http: httpx.AsyncClient, register_within_ms: int | None = None) -> None:
        self._http = http
        self._register_within_ms = register_within_ms

    @classmethod
    def create(cls, base_url: str, internal_token: str, timeout_seconds: float) -> ReportsClient:
        """Build the client and its connection pool (call once, in the app's lifespan)."""
        http = httpx.AsyncClient(
            base_url=base_url,
            headers={INTERNAL_TOKEN_HEADER: internal_token},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 3.0)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        return cls(http, register_within_ms(timeout_seconds))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def verify_api_key(self, api_key: str, *, request_id: str) -> Principal | None:
        """The key's tenant, or None when reports does not know the key (401)."""
        try:
            response = await self._send(
                "POST",
                "/internal/v1/auth/verify",
                request_id=request_id,
                body=ApiKeyVerifyRequest(api_key=api_key),
            )
        except UpstreamError as exc:
            if exc.status == 401:
                return None
            raise
        verified = _parse(ApiKeyVerifyResponse, response)
        return Principal(
            tenant_id=verified.tenant_id,
            key_id=verified.key_id,
            user_id=verified.user_id,
            user_name=verified.user_name,
            role=verified.role,
        )

    async def create_job(self, job: JobCreate, *, request_id: str) -> tuple[JobView, bool]:
        """Register a job; returns it and whether it was an idempotent replay of an earlier one."""
        headers = {"Idempotency-Key": job.idempotency_key} if job.idempotency_key else None
        response = await self._send(
            "POST",
            "/internal/v1/jobs",
            tenant_id=job.tenant_id,
            request_id=request_id,
            body=self._with_deadline(job),
            headers=headers,
        )
        return _parse(JobView, response), _is_replay(response)

    async def create_jobs(
        self, jobs: list[JobCreate], *, tenant_id: str, request_id: str
    ) -> list[JobCreateOutcome]:
        """Register several jobs of one tenant in one call; one outcome per job, in order."""
        response = await self._send(
            "POST",
            "/internal/v1/jobs/bulk",
            tenant_id=tenant_id,
            request_id=request_id,
            body=JobCreateBatch(jobs=[self._with_deadline(job) for job in jobs]),
        )
        results = _parse(JobCreateBatchResult, response).results
        # A replay answers the original job (another id), so only the count can be checked.
        if len(results) != len(jobs):
            raise UpstreamError(
                502,
                "upstream.invalid_response",
                "reports answered other jobs than it was sent",
                {"dependency": "reports", "contract": JobCreateBatchResult.__name__},
            )
        return results

    def _with_deadline(self, job: JobCreate) -> JobCreate:
        """The registration, telling reports how long this client waits for its answer."""
        if self._register_within_ms is None or job.register_within_ms is not None:
            return job
        return job.model_copy(update={"register_within_ms": self._register_within_ms})

    async def job_statuses(
        self, tenant_id: str, job_ids: list[str], *, request_id: str
    ) -> dict[str, JobStatus]:
        """The status of each of the tenant's `job_ids` (unknown ones left out), in one call."""
        response = await self._send(
            "POST",
            "/internal/v1/jobs/statuses",
            tenant_id=tenant_id,
            request_id=request_id,
            body=JobStatusQuery(job_ids=job_ids),
        )
        return _parse(JobStatuses, response).statuses

    async def requeue_job(self, tenant_id: str, job_id: str, *, request_id: str) -> JobView:
        """A job that was never queued goes back to `queued` (others are answered unchanged)."""
        response = await self._send(
            "POST", f"/internal/v1/jobs/{_seg(job_id)}/requeue", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(JobView, response)

    async def get_job(self, tenant_id: str, job_id: str, *, request_id: str) -> JobView:
        """One job of the tenant (404 for another tenant's)."""
        response = await self._send(
            "GET", f"/internal/v1/jobs/{_seg(job_id)}", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(JobView, response)

    async def fail_job(self, failure: JobFailure, *, request_id: str) -> None:
        """Record a job as failed (used when it could not be queued)."""
        await self._send(
            "POST",
            f"/internal/v1/jobs/{_seg(failure.job_id)}/fail",
            tenant_id=failure.tenant_id,
            request_id=request_id,
            body=failure,
        )

    async def get_job_image(self, tenant_id: str, job_id: str, *, request_id: str) -> Blob:
        """The stored, stripped, re-encoded image of a job."""
        return await self._blob(f"/internal/v1/jobs/{_seg(job_id)}/image", tenant_id, request_id)

    async def get_job_heatmap(self, tenant_id: str, job_id: str, *, request_id: str) -> Blob:
        """The job's heatmap PNG."""
        return await self._blob(f"/internal/v1/jobs/{_seg(job_id)}/heatmap.png", tenant_id, request_id)

    async def create_batch(
        self, tenant_id: str, batch: BatchCreate, *, request_id: str
    ) -> tuple[BatchView, bool]:
        """Register a batch; returns it and whether the id was already registered (200 vs 201):
        reports makes batches idempotent on their id."""
        response = await self._send(
            "POST",
            "/internal/v1/batches",
            tenant_id=tenant_id,
            request_id=request_id,
            body=batch,
        )
        return _parse(BatchView, response), response.status_code == 200

    async def get_batch(self, tenant_id: str, batch_id: str, *, request_id: str) -> BatchView:
        """A batch's progress and items."""
        response = await self._send(
            "GET", f"/internal/v1/batches/{_seg(batch_id)}", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(BatchView, response)

    async def list_reports(
        self, tenant_id: str, filters: Mapping[str, str], *, request_id: str
    ) -> ReportPage:
        """One page of the tenant's jobs and reports, newest first."""
        response = await self._send(
            "GET", "/internal/v1/reports", tenant_id=tenant_id, request_id=request_id, params=filters
        )
        return _parse(ReportPage, response)

    async def ready(self, *, request_id: str) -> bool:
        """True when reports' own `/readyz` answers 200."""
        try:
            response = await self._http.get("/readyz", headers={REQUEST_ID_HEADER: request_id})
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def get_job_document(
        self,
        tenant_id: str,
        job_id: str,
        document: str,
        *,
        request_id: str,
        params: Mapping[str, str] | None = None,
    ) -> Blob:
        """A finished job as a document: `fhir` (a FHIR Bundle) or `report.pdf`."""
        return await self._blob(f"/internal/v1/jobs/{_seg(job_id)}/{document}", tenant_id, request_id, params)

    async def list_job_deliveries(self, tenant_id: str, job_id: str, *, request_id: str) -> DeliveryList:
        """The job's webhook deliveries and FHIR push."""
        response = await self._send(
            "GET", f"/internal/v1/jobs/{_seg(job_id)}/deliveries", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(DeliveryList, response)

    async def replay_delivery(self, tenant_id: str, delivery_id: str, *, request_id: str) -> DeliveryView:
        """Send a delivery again."""
        response = await self._send(
            "POST",
            f"/internal/v1/deliveries/{_seg(delivery_id)}/replay",
            tenant_id=tenant_id,
            request_id=request_id,
        )
        return _parse(DeliveryView, response)

    async def create_webhook(self, tenant_id: str, body: WebhookCreate, *, request_id: str) -> WebhookCreated:
        """A new webhook endpoint, with its secret."""
        response = await self._send(
            "POST",
            "/internal/v1/webhooks",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(WebhookCreated, response)

    async def list_webhooks(self, tenant_id: str, *, request_id: str) -> WebhookList:
        """The tenant's webhook endpoints."""
        response = await self._send(
            "GET", "/internal/v1/webhooks", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(WebhookList, response)

    async def remove_webhook(self, tenant_id: str, webhook_id: str, *, request_id: str) -> None:
        """Stop delivering to an endpoint."""
        await self._send(
            "DELETE", f"/internal/v1/webhooks/{_seg(webhook_id)}", tenant_id=tenant_id, request_id=request_id
        )

    async def rotate_webhook_secret(
        self, tenant_id: str, webhook_id: str, *, request_id: str
    ) -> WebhookSecret:
        """A new signing secret for an endpoint."""
        response = await self._send(
            "POST",
            f"/internal/v1/webhooks/{_seg(webhook_id)}/rotate-secret",
            tenant_id=tenant_id,
            request_id=request_id,
        )
        return _parse(WebhookSecret, response)

    async def list_webhook_deliveries(
        self, tenant_id: str, webhook_id: str, limit: int, *, request_id: str
    ) -> DeliveryList:
        """An endpoint's delivery log."""
        response = await self._send(
            "GET",
            f"/internal/v1/webhooks/{_seg(webhook_id)}/deliveries",
            tenant_id=tenant_id,
            request_id=request_id,
            params={"limit": str(limit)},
        )
        return _parse(DeliveryList, response)

    async def put_fhir_endpoint(
        self, tenant_id: str, body: FhirEndpointConfig, *, request_id: str
    ) -> tuple[FhirEndpointView, bool]:
        """Set the tenant's FHIR endpoint; returns it and whether it was new."""
        response = await self._send(
            "PUT",
            "/internal/v1/fhir-endpoint",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(FhirEndpointView, response), response.status_code == 201

    async def get_fhir_endpoint(self, tenant_id: str, *, request_id: str) -> FhirEndpointView:
        """The tenant's FHIR endpoint."""
        response = await self._send(
            "GET", "/internal/v1/fhir-endpoint", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(FhirEndpointView, response)

    async def remove_fhir_endpoint(self, tenant_id: str, *, request_id: str) -> None:
        """Stop pushing to the tenant's FHIR endpoint."""
        await self._send("DELETE", "/internal/v1/fhir-endpoint", tenant_id=tenant_id, request_id=request_id)

    # -- issue 12: users, API keys, the audit trail (people) ------------------------------------

    async def create_user(self, tenant_id: str, body: UserCreate, *, request_id: str) -> UserView:
        """A new user of the tenant (409 `user.exists` passed through)."""
        response = await self._send(
            "POST",
            "/internal/v1/users",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(UserView, response)

    async def list_users(self, tenant_id: str, *, request_id: str) -> UserList:
        """The tenant's users, oldest first."""
        response = await self._send("GET", "/internal/v1/users", tenant_id=tenant_id, request_id=request_id)
        return _parse(UserList, response)

    async def disable_user(self, tenant_id: str, user_id: str, *, request_id: str) -> UserView:
        """Disable a user (404 `user.not_found`, 409 `user.self` passed through)."""
        response = await self._send(
            "POST", f"/internal/v1/users/{_seg(user_id)}/disable", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(UserView, response)

    async def create_user_api_key(
        self, tenant_id: str, user_id: str, body: ApiKeyCreate, *, request_id: str
    ) -> ApiKeyCreated:
        """A new key for the user, with the key itself (shown once)."""
        response = await self._send(
            "POST",
            f"/internal/v1/users/{_seg(user_id)}/api-keys",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(ApiKeyCreated, response)

    async def list_api_keys(self, tenant_id: str, *, request_id: str) -> ApiKeyList:
        """The tenant's keys (never the keys themselves)."""
        response = await self._send(
            "GET", "/internal/v1/api-keys", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(ApiKeyList, response)

    async def revoke_api_key(self, tenant_id: str, key_id: str, *, request_id: str) -> None:
        """Revoke one of the tenant's keys (404 `api_key.not_found` passed through)."""
        await self._send(
            "DELETE", f"/internal/v1/api-keys/{_seg(key_id)}", tenant_id=tenant_id, request_id=request_id
        )

    async def list_audit(self, tenant_id: str, filters: Mapping[str, str], *, request_id: str) -> AuditPage:
        """A page of the tenant's audit trail, newest first."""
        response = await self._send(
            "GET", "/internal/v1/audit", tenant_id=tenant_id, request_id=request_id, params=filters
        )
        return _parse(AuditPage, response)

    # -- issue 12: reviews and next steps ----------------------------------------------------

    async def create_review(
        self, tenant_id: str, job_id: str, body: ReviewCreate, *, request_id: str
    ) -> ReviewView:
        """A clinician's review of a done job (the acting user travels in the actor header)."""
        response = await self._send(
            "POST",
            f"/internal/v1/jobs/{_seg(job_id)}/reviews",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(ReviewView, response)

    async def list_reviews(self, tenant_id: str, job_id: str, *, request_id: str) -> ReviewList:
        """A job's reviews, version 1 first."""
        response = await self._send(
            "GET", f"/internal/v1/jobs/{_seg(job_id)}/reviews", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(ReviewList, response)

    async def get_next_steps(self, tenant_id: str, *, request_id: str) -> NextSteps:
        """The tenant's next step per triage level."""
        response = await self._send(
            "GET", "/internal/v1/next-steps", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(NextSteps, response)

    async def put_next_steps(self, tenant_id: str, body: NextStepsUpdate, *, request_id: str) -> NextSteps:
        """Set the tenant's own next steps."""
        response = await self._send(
            "PUT",
            "/internal/v1/next-steps",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(NextSteps, response)

    # -- issue 12: lesions and comparisons ---------------------------------------------------

    async def create_lesion(self, tenant_id: str, body: LesionCreate, *, request_id: str) -> LesionView:
        """A new lesion of a patient."""
        response = await self._send(
            "POST",
            "/internal/v1/lesions",
            tenant_id=tenant_id,
            request_id=request_id,
            body=body,
        )
        return _parse(LesionView, response)

    async def list_lesions(self, tenant_id: str, patient_ref: str, *, request_id: str) -> LesionList:
        """A patient's lesions, oldest first."""
        response = await self._send(
            "GET",
            "/internal/v1/lesions",
            tenant_id=tenant_id,
            request_id=request_id,
            params={"patient_ref": patient_ref},
        )
        return _parse(LesionList, response)

    async def get_lesion(self, tenant_id: str, lesion_id: str, *, request_id: str) -> LesionHistory:
        """A lesion, its images and the changes between them."""
        response = await self._send(
            "GET", f"/internal/v1/lesions/{_seg(lesion_id)}", tenant_id=tenant_id, request_id=request_id
        )
        return _parse(LesionHistory, response)

    async def compare_lesion_images(
        self, tenant_id: str, lesion_id: str, from_job: str, to_job: str, *, request_id: str
    ) -> LesionComparison:
        """Two images of a lesion compared."""
        response = await self._send(
            "GET",
            f"/internal/v1/lesions/{_seg(lesion_id)}/comparison",
            tenant_id=tenant_id,
            request_id=request_id,
            params={"from_job": from_job, "to_job": to_job},
        )
        return _parse(LesionComparison, response)

    # -- issue 12: performance monitoring ----------------------------------------------------

    async def get_monitoring(
        self, tenant_id: str, params: Mapping[str, str], *, request_id: str
    ) -> MonitoringView:
        """The tenant's performance figures (`since`, `until`, `bucket` as query parameters)."""
        response = await self._send(
            "GET", "/internal/v1/monitoring", tenant_id=tenant_id, request_id=request_id, params=params
        )
        return _parse(MonitoringView, response)

    async def _blob(
        self, path: str, tenant_id: str, request_id: str, params: Mapping[str, str] | None = None
    ) -> Blob:
        response = await self._send("GET", path, tenant_id=tenant_id, request_id=request_id, params=params)
        media_type = response.headers.get("content-type", "application/octet-stream").split(";")[0]
        return Blob(content=response.content, media_type=media_type.strip())

    async def _send(
        self,
        method: str,
        path: str,
        *,
        request_id: str,
        tenant_id: str | None = None,
        body: BaseModel | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {REQUEST_ID_HEADER: request_id, **(headers or {})}
        if tenant_id is not None:
            all_headers["X-Tenant-Id"] = tenant_id
        actor = current_actor.get()
        if actor is not None:
            all_headers[ACTOR_HEADER] = actor.to_header()
        content: str | None = None
        if body is not None:
            # pydantic's own serializer: several times faster than model_dump + json.dumps for a
            # registration's base64 image, and this is every submission's path.
            content = body.model_dump_json()
            all_headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(
                method, path, content=content, params=params, headers=all_headers
            )
        except httpx.TimeoutException as exc:
            logger.warning(
                "reports timed out",
                extra={"request_id": request_id, "upstream_method": method, "upstream_path": path},
            )
            raise UpstreamUnavailableError(
                "reports did not answer in time", {"dependency": "reports"}
            ) from exc
        except httpx.TransportError as exc:
            logger.warning(
                "reports unreachable",
                extra={"request_id": request_id, "upstream_method": method, "upstream_path": path},
            )
            raise UpstreamUnavailableError("reports is unreachable", {"dependency": "reports"}) from exc
        if response.status_code >= 400:
            raise _error_from(response, request_id, method, path)
        return response


def _error_from(response: httpx.Response, request_id: str, method: str, path: str) -> DomainError:
    status = response.status_code
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        body = None
    if status >= 500:
        logger.warning(
            "reports answered an error",
            extra={
                "request_id": request_id,
                "upstream_method": method,
                "upstream_path": path,
                "upstream_status": status,
            },
        )
    if body is not None and body.error.code == InternalTokenInvalidError.code:
        # The gateway's own configuration is wrong; callers must not see reports' internals.
        logger.error("reports rejected the gateway's internal token", extra={"request_id": request_id})
        return UpstreamUnavailableError("reports is unavailable", {"dependency": "reports"})
    if body is not None:
        error = UpstreamError(status, body.error.code, body.error.message, body.error.details)
        if status in _UNAVAILABLE_STATUSES and (retry_after := response.headers.get("Retry-After")):
            error.headers["Retry-After"] = retry_after  # reports' outage answer, passed through
        return error
    if status in _UNAVAILABLE_STATUSES:
        return UpstreamUnavailableError("reports is unavailable", {"dependency": "reports", "status": status})
    if status == 404:
        return UpstreamError(404, "not_found", "not found")
    return UpstreamError(
        502,
        "upstream.invalid_response",
        "reports answered an unexpected error",
        {"dependency": "reports", "status": status},
    )


def _parse(model: type[_ModelT], response: httpx.Response) -> _ModelT:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        logger.error(
            "reports answered a body that does not match its contract",
            extra={"contract": model.__name__, "errors": exc.error_count()},
        )
        raise UpstreamError(
            502,
            "upstream.invalid_response",
            "reports answered an unexpected body",
            {"dependency": "reports", "contract": model.__name__},
        ) from exc


def _is_replay(response: httpx.Response) -> bool:
    value: str = response.headers.get(_REPLAY_HEADER, "")
    return value.strip().lower() == "true"


def _seg(value: str) -> str:
    """One URL path segment; ids are validated by the routes, this is belt and braces."""
    return quote(value, safe="")
