"""Users, roles and the acting user (issue 12). The gateway authenticates a caller's API key to a
user of a tenant and passes who is acting to the reports service on every call (the `Actor`
header), which records it on every write and in the audit trail."""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError


class Role(StrEnum):
    """What a user may do. `clinician`: read results, review and sign off, track lesions.
    `integrator`: an EHR or script (API only): submit, read, lesions, webhooks and the FHIR
    endpoint; never signs off. `admin`: users and keys, the audit trail, monitoring, the tenant's
    next steps, integrations; never signs off (a review is a clinician's act)."""

    clinician = "clinician"
    integrator = "integrator"
    admin = "admin"


# Header the gateway sets on its calls to reports (internal token required there): base64url of
# the Actor's JSON, so names in any script survive HTTP header encoding.
ACTOR_HEADER = "X-SkinTriage-Actor"


class Actor(BaseModel):
    """Who is acting and from where: a user of the tenant through one API key."""

    user_id: str = Field(max_length=64)
    user_name: str = Field(max_length=128)
    role: Role
    key_id: str | None = Field(default=None, max_length=64)
    client_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=256)

    def to_header(self) -> str:
        """The header value (base64url of compact JSON, no padding)."""
        raw = self.model_dump_json(exclude_none=True).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def from_header(cls, value: str) -> Actor | None:
        """The actor a header names; None when it is not a valid one."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            return cls.model_validate(json.loads(raw))
        except (binascii.Error, ValueError, UnicodeDecodeError, ValidationError):
            return None
