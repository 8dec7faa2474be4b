"""Users, roles and the acting user (issue 12). The gateway authenticates a caller's API key to a
user of a tenant and passes who is acting to the reports service on every call (the `Actor`
header), which records it on every write and in the audit trail."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
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


# -- users and their API keys (the public API's bodies, and gateway <-> reports) ----------------

# Names are what people and audit entries show: no control characters, at least one visible one.
USER_NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# The longest key lifetime an admin may ask for (ten years); `null` = until revoked.
MAX_KEY_LIFETIME_DAYS = 3650


class UserRef(BaseModel):
    """A user as a record names them: id, and name at the time."""

    user_id: str
    name: str


class Me(BaseModel):
    """Who the caller is: `GET /v1/me`."""

    user_id: str
    name: str
    role: Role
    tenant_id: str
    key_id: str


class UserCreate(BaseModel):
    """`POST /v1/users`: a new user of the caller's tenant."""

    name: str = Field(min_length=1, max_length=128, pattern=USER_NAME_PATTERN)
    role: Role


class UserView(BaseModel):
    """A user of the tenant; `disabled_at` set once disabled (users are never deleted)."""

    user_id: str
    name: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None = None


class UserList(BaseModel):
    """The tenant's users, oldest first."""

    items: list[UserView]


class ApiKeyCreate(BaseModel):
    """`POST /v1/users/{user_id}/api-keys`: a new key for that user."""

    expires_in_days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_KEY_LIFETIME_DAYS,
        description="the key stops working after this many days; null = until revoked",
    )


class ApiKeyCreated(BaseModel):
    """A new key: `api_key` is shown this once (only its sha256 is stored)."""

    key_id: str
    api_key: str
    prefix: str
    user_id: str
    created_at: datetime
    expires_at: datetime | None = None


class ApiKeyView(BaseModel):
    """A key as listed: never the key itself, only its non-secret prefix."""

    key_id: str
    prefix: str
    user_id: str | None
    user_name: str | None
    role: Role | None
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiKeyList(BaseModel):
    """The tenant's keys, oldest first."""

    items: list[ApiKeyView]
