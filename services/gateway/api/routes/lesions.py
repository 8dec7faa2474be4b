"""Issue 12: lesions tracked over time: their images and comparisons."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["lesions"])
