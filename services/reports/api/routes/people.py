"""Issue 12: users, API keys, who am I, and the audit trail."""

from __future__ import annotations

from services.reports.api.deps import internal_router

router = internal_router("people")
