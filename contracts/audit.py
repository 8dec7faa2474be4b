"""The audit trail (issue 12): what each entry records and how an admin reads it back
(`GET /v1/audit`, gateway <-> reports). Entries are append-only: no API changes or deletes one."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

DEFAULT_AUDIT_PAGE_SIZE = 50
MAX_AUDIT_PAGE_SIZE = 200


class AuditAction(StrEnum):
    """What an entry records: reads of clinical data, and every write that matters."""

    report_read = "report.read"  # GET of a job that has a result
    report_list = "report.list"  # one per worklist page
    image_read = "image.read"
    heatmap_read = "heatmap.read"
    fhir_read = "fhir.read"
    pdf_read = "pdf.read"
    review_create = "review.create"
    lesion_create = "lesion.create"
    lesion_read = "lesion.read"
    lesion_compare = "lesion.compare"
    user_create = "user.create"
    user_disable = "user.disable"
    key_create = "key.create"
    key_revoke = "key.revoke"
    next_steps_update = "next_steps.update"
    webhook_create = "webhook.create"
    webhook_rotate_secret = "webhook.rotate_secret"
    webhook_remove = "webhook.remove"
    fhir_endpoint_update = "fhir_endpoint.update"
    fhir_endpoint_remove = "fhir_endpoint.remove"
    delivery_replay = "delivery.replay"
    audit_read = "audit.read"
    monitoring_read = "monitoring.read"


class AuditEventView(BaseModel):
    """One entry: what (action on a resource), when, who (user, role, key; null for the fleet
    itself or an operator's CLI) and from where (client address, user agent, request id)."""

    event_id: int
    at: datetime
    action: str
    resource_type: str
    resource_id: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    role: str | None = None
    key_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    details: dict[str, Any] | None = None


class AuditPage(BaseModel):
    """A page of entries, newest first; `next_cursor` continues after the last one (null: no more)."""

    items: list[AuditEventView]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")
