"""Issue 12: users, API keys, who am I, and the audit trail."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["people"])
