"""Issue 12: the model's performance in this clinic: overrides, sensitivity and specificity
against confirmed diagnoses, OOD rejections over time."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["monitoring"])
