"""Consistency checks between a request's headers, path and body."""

from __future__ import annotations

from services.common.errors import RequestInvalidError
from services.reports.domain.errors import IdMismatchError, TenantMismatchError


def check_tenant(body_tenant_id: str, tenant: str) -> None:
    """The body's tenant must be the header's."""
    if body_tenant_id != tenant:
        raise TenantMismatchError("body tenant_id differs from X-Tenant-Id")


def check_job_id(body_job_id: str, path_job_id: str) -> None:
    """The body's job id must be the path's."""
    if body_job_id != path_job_id:
        raise IdMismatchError("body job_id differs from the path")


def check_lengths(values: dict[str, str | None], limits: dict[str, int]) -> None:
    """Body strings the contract leaves unbounded must fit their columns (and not be empty)."""
    problems = []
    for field, limit in limits.items():
        value = values.get(field)
        if value is None:
            continue
        if not value:
            problems.append({"loc": ["body", field], "msg": "must not be empty", "type": "string_too_short"})
        elif len(value) > limit:
            problems.append(
                {"loc": ["body", field], "msg": f"at most {limit} characters", "type": "string_too_long"}
            )
    if problems:
        raise RequestInvalidError("request is invalid", details=problems)
