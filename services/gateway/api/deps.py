"""FastAPI dependencies: settings, the long-lived adapters, the request id, the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from anyio import CapacityLimiter
from fastapi import Depends, Form, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from contracts.jobs import ImageMetadata
from contracts.users import Role
from services.common.app_settings import app_settings
from services.common.errors import RequestInvalidError, validation_details
from services.common.internal_auth import token_matches
from services.common.request_id import request_id_of
from services.gateway.adapters.finish_listener import Waiters
from services.gateway.adapters.reports_client import ReportsClient
from services.gateway.adapters.task_publisher import TaskPublisher
from services.gateway.api.metrics import Metrics
from services.gateway.config import Settings
from services.gateway.domain.admission import QueueDepthGuard, TenantRateLimiter
from services.gateway.domain.auth import ApiKeyCache, Principal, current_actor
from services.gateway.domain.batch import BatchLimits
from services.gateway.domain.errors import ForbiddenRoleError, InvalidApiKeyError, MissingApiKeyError
from services.gateway.domain.group_commit import GroupCommit
from services.gateway.domain.upload_validation import ImageLimits

if TYPE_CHECKING:  # submission builds on this module
    from services.gateway.api.submission import Registration, RegistrationKey, Submitted

# reports refuses longer keys (contracts.records.ApiKeyVerifyRequest): no round trip for those.
_MAX_API_KEY_LENGTH = 256

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


@dataclass
class GatewayContext:
    """What the lifespan builds once per process and every request shares."""

    reports: ReportsClient
    publisher: TaskPublisher
    auth_cache: ApiKeyCache
    metrics: Metrics
    decode_slots: CapacityLimiter  # worker threads that may decode images at the same time
    rate_limiter: TenantRateLimiter
    queue_guard: QueueDepthGuard
    # Single submissions registered and queued together while others of the tenant are in flight.
    registrations: GroupCommit[RegistrationKey, Registration, Submitted]
    # Wakes waiting requests: Redis notifications, or one status poll of reports per tick for all
    # waits (a broker without pub/sub); None: each wait polls on its own.
    finish_listener: Waiters | None = None

    async def admit(self, tenant_id: str, images: int) -> None:
        """Refuse new work (429 `rate.limited`, 503 `queue.full`) before anything is registered."""
        # The queue first: a request refused for a full queue must not spend the tenant's tokens.
        await self.queue_guard.check(images)
        self.rate_limiter.acquire(tenant_id, images)


def get_context(request: Request) -> GatewayContext:
    """The process's adapters (set up in the lifespan)."""
    context = getattr(request.app.state, "context", None)
    if not isinstance(context, GatewayContext):
        raise RuntimeError("the gateway's lifespan has not run")
    return context


def get_request_id(request: Request) -> str:
    """This request's id (made or accepted by the request-context middleware)."""
    return request_id_of(request.scope) or "unknown"


bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer <API key>`"
)
# Its own security scheme in the OpenAPI: a tenant's API key never opens `/metrics`.
operator_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="`Authorization: Bearer <GATEWAY_INTERNAL_TOKEN>` (operators only)",
)


def request_settings(request: Request) -> Settings:
    """The gateway's settings (installed by create_app)."""
    settings: Settings = app_settings(request)
    return settings


SettingsDep = Annotated[Settings, Depends(request_settings)]
ContextDep = Annotated[GatewayContext, Depends(get_context)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
OperatorCredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(operator_scheme)]


async def authenticate(
    request: Request, credentials: CredentialsDep, context: ContextDep, request_id: RequestIdDep
) -> Principal:
    """The tenant behind the Bearer API key, verified by reports and cached briefly."""
    if credentials is None or not credentials.credentials.strip():
        raise MissingApiKeyError("send `Authorization: Bearer <API key>`")
    api_key = credentials.credentials.strip()
    if len(api_key) > _MAX_API_KEY_LENGTH:
        raise InvalidApiKeyError("the API key is not valid")
    principal = context.auth_cache.get(api_key)
    if principal is None:
        principal = await context.reports.verify_api_key(api_key, request_id=request_id)
        if principal is None:
            raise InvalidApiKeyError("the API key is not valid")
        context.auth_cache.put(api_key, principal)
    request.state.tenant_id = principal.tenant_id
    client_ip = request.client.host if request.client is not None else None
    current_actor.set(principal.actor(client_ip, request.headers.get("user-agent")))
    return principal


async def require_operator_token(credentials: OperatorCredentialsDep, settings: SettingsDep) -> None:
    """Operator endpoints (`/metrics`): `Authorization: Bearer <GATEWAY_INTERNAL_TOKEN>`, compared
    like every internal token (services.common.internal_auth), answered with the public auth codes."""
    if credentials is None or not credentials.credentials:
        raise MissingApiKeyError("send `Authorization: Bearer <internal token>`")
    if not token_matches(credentials.credentials, settings.internal_token):
        raise InvalidApiKeyError("the token is not valid")


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def roles_allowed(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must have one of `roles` (403 `auth.forbidden` otherwise)."""
    allowed = frozenset(roles)

    async def require_role(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise ForbiddenRoleError(
                f"a {principal.role.value} may not do this",
                {"role": principal.role.value, "allowed_roles": sorted(r.value for r in allowed)},
            )
        return principal

    return require_role


# Who may do what (contracts.users.Role): reviews are a clinician's act; users, keys, the audit
# trail, monitoring and the next steps are an admin's; integrations are an integrator's or admin's.
ClinicianDep = Annotated[Principal, Depends(roles_allowed(Role.clinician))]
AdminDep = Annotated[Principal, Depends(roles_allowed(Role.admin))]
IntegrationManagerDep = Annotated[Principal, Depends(roles_allowed(Role.integrator, Role.admin))]
JobIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a job id")]
BatchIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a batch id")]


def image_limits(settings: Settings) -> ImageLimits:
    """What an acceptable image is, from the settings."""
    return ImageLimits(
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        min_side=settings.min_side,
        reencode_max_side=settings.reencode_max_side,
        jpeg_quality=settings.jpeg_quality,
    )


def batch_limits(settings: Settings) -> BatchLimits:
    """What an acceptable batch is, from the settings."""
    return BatchLimits(
        max_items=settings.max_batch_items,
        max_archive_entries=settings.max_archive_entries,
        max_archive_uncompressed_bytes=settings.max_archive_uncompressed_bytes,
        image=image_limits(settings),
    )


_METADATA_FIELDS: dict[str, Any] = ImageMetadata.model_json_schema()["properties"]


def _metadata_schema(name: str) -> dict[str, Any]:
    """`json_schema_extra` documenting metadata form field `name` with the constraints
    `ImageMetadata` checks (length, no control characters, the age range, the values of `sex`)."""
    return {"anyOf": _METADATA_FIELDS[name]["anyOf"]}


async def metadata_form(
    patient_ref: Annotated[
        str | None,
        Form(
            description="opaque patient reference; SkinTriage never interprets it",
            json_schema_extra=_metadata_schema("patient_ref"),
        ),
    ] = None,
    body_site: Annotated[
        str | None,
        Form(description="e.g. 'back', 'lower extremity'", json_schema_extra=_metadata_schema("body_site")),
    ] = None,
    age: Annotated[int | None, Form(description="years", json_schema_extra=_metadata_schema("age"))] = None,
    sex: Annotated[str | None, Form(json_schema_extra=_metadata_schema("sex"))] = None,
    client_ref: Annotated[
        str | None,
        Form(description="the caller's own reference", json_schema_extra=_metadata_schema("client_ref")),
    ] = None,
    lesion_id: Annotated[
        str | None,
        Form(
            description="the lesion (`POST /v1/lesions`) this image shows; it must be the patient's",
            json_schema_extra=_metadata_schema("lesion_id"),
        ),
    ] = None,
) -> ImageMetadata:
    """Optional clinical context sent as form fields, checked by `contracts.jobs.ImageMetadata`."""
    raw = {
        "patient_ref": patient_ref,
        "body_site": body_site,
        "age": age,
        "sex": sex,
        "client_ref": client_ref,
        "lesion_id": lesion_id,
    }
    try:
        return ImageMetadata.model_validate(raw)
    except ValidationError as exc:
        details = validation_details(exc.errors())
        for detail in details:
            detail["loc"] = ["body", *detail["loc"]]
        raise RequestInvalidError("the image metadata is invalid", details) from exc


MetadataDep = Annotated[ImageMetadata, Depends(metadata_form)]
IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="repeat a request safely: the same key returns the original job(s), queues nothing",
    ),
]
