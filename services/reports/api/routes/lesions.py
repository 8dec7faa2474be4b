"""Issue 12: lesions tracked over time: their images and comparisons."""

from __future__ import annotations

from services.reports.api.deps import internal_router

router = internal_router("lesions")
