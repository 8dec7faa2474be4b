"""Issue 12: clinicians' reviews and sign-off, and the tenant's next steps per triage level."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["reviews"])
