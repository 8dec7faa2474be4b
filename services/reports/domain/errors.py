"""Typed errors with machine codes; the API renders them as `contracts.errors.ErrorBody`."""

from __future__ import annotations

from contracts.errors import DomainError


class InvalidApiKeyError(DomainError):
    """The API key is unknown or revoked (deliberately indistinguishable)."""

    code, status = "auth.invalid_api_key", 401


class TenantNotFoundError(DomainError):
    """`X-Tenant-Id` names no tenant."""

    code, status = "tenant.not_found", 404


class TenantMismatchError(DomainError):
    """The body's tenant_id differs from `X-Tenant-Id`."""

    code, status = "request.tenant_mismatch", 400


class IdMismatchError(DomainError):
    """The body's job_id differs from the one in the path."""

    code, status = "request.id_mismatch", 400


class JobNotFoundError(DomainError):
    """No such job for this tenant (another tenant's job is reported the same way)."""

    code, status = "job.not_found", 404


class JobConflictError(DomainError):
    """The job id is already taken by another tenant's job."""

    code, status = "job.conflict", 409


class BatchNotFoundError(DomainError):
    """No such batch for this tenant."""

    code, status = "batch.not_found", 404


class BatchConflictError(DomainError):
    """The batch id is already taken by another tenant's batch."""

    code, status = "batch.conflict", 409


class HeatmapNotFoundError(DomainError):
    """The job has no heatmap (not finished, rejected, or none was produced)."""

    code, status = "heatmap.not_found", 404


class ImageInvalidError(DomainError):
    """The stored image is not valid base64 or does not match its sha256."""

    code, status = "image.invalid", 422


class ReportInvalidError(DomainError):
    """A report upsert that cannot be stored (wrong status, missing prediction, bad heatmap)."""

    code, status = "report.invalid", 422


class CursorInvalidError(DomainError):
    """The pagination cursor was not issued by this service."""

    code, status = "cursor.invalid", 400


class DatabaseUnavailableError(DomainError):
    """The database did not answer."""

    code, status = "dependency.database_unavailable", 503


class JobNotFinishedError(DomainError):
    """A job's FHIR bundle or printable report was asked for before it has a result."""

    code, status = "job.not_finished", 409


class WebhookNotFoundError(DomainError):
    """No such webhook endpoint for this tenant (or it was removed)."""

    code, status = "webhook.not_found", 404


class FhirEndpointNotFoundError(DomainError):
    """The tenant has no FHIR endpoint configured."""

    code, status = "fhir_endpoint.not_found", 404


class DeliveryNotFoundError(DomainError):
    """No such delivery for this tenant."""

    code, status = "delivery.not_found", 404


class DeliveryPendingError(DomainError):
    """A replay of a delivery that is still being tried."""

    code, status = "delivery.pending", 409


# -- issue 12: users, API keys, the audit trail (people) -----------------------------------------


class UserNotFoundError(DomainError):
    """No such user in this tenant (another tenant's user is reported the same way)."""

    code, status = "user.not_found", 404


class UserExistsError(DomainError):
    """The tenant already has a user with this name."""

    code, status = "user.exists", 409


class UserSelfError(DomainError):
    """An admin tried to disable themselves (which could leave the tenant without an admin)."""

    code, status = "user.self", 409


class UserDisabledError(DomainError):
    """A disabled user cannot be given a new API key."""

    code, status = "user.disabled", 409


class ApiKeyNotFoundError(DomainError):
    """No such API key in this tenant."""

    code, status = "api_key.not_found", 404


class ApiKeySelfError(DomainError):
    """An admin tried to revoke the key they are using (revoke it with another key)."""

    code, status = "api_key.self", 409


# -- issue 12: lesions ------------------------------------------------------------------------


class LesionNotFoundError(DomainError):
    """No such lesion for this tenant (another tenant's lesion is reported the same way)."""

    code, status = "lesion.not_found", 404


class LesionPatientMismatchError(DomainError):
    """A job names a lesion of another patient than its own patient_ref."""

    code, status = "lesion.patient_mismatch", 422


class LesionJobMismatchError(DomainError):
    """A comparison names a job of the tenant that is not an image of this lesion."""

    code, status = "lesion.job_not_in_lesion", 422


class LesionJobNotComparableError(DomainError):
    """A comparison names a job that has no result to compare (not done: queued, rejected...)."""

    code, status = "lesion.job_not_comparable", 409
