"""Inference worker <-> OOD service."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class OodDecision(StrEnum):
    """Verdict on whether the model's output may be shown as a triage result."""

    accepted = "accepted"
    rejected_ood = "rejected_ood"
    rejected_quality = "rejected_quality"


class OodScoreRequest(BaseModel):
    """What the worker sends: raw (uncalibrated) logits and the pooled embedding."""

    model_sha256: str = Field(description="the bundle's model hash; must match the OOD service's")
    logits: list[float] = Field(min_length=2)
    embedding: list[float] = Field(min_length=1)
    tenant_id: str | None = None
    quality: dict[str, float] | None = Field(
        default=None, description="image-quality measurements (e.g. blur, brightness)"
    )


class OodScoreResponse(BaseModel):
    """Every score, the decision, the rule that fired, and the thresholds used."""

    scores: dict[str, float]
    decision: OodDecision
    rule: str | None = Field(default=None, description="which rule rejected it; None if accepted")
    reasons: list[str] = Field(default_factory=list)
    thresholds: dict[str, float]
