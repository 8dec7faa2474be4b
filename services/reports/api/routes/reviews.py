"""Issue 12: clinicians' reviews and sign-off, and the tenant's next steps per triage level."""

from __future__ import annotations

from services.reports.api.deps import internal_router

router = internal_router("reviews")
