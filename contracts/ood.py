"""Inference worker <-> OOD service."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from contracts.errors import ErrorDetail


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


# OOD verdicts asked for in one call (a worker's micro-batch).
MAX_SCORE_BATCH = 64


class OodScoreBatchRequest(BaseModel):
    """Several model outputs to score in one call; each is judged on its own."""

    items: list[OodScoreRequest] = Field(min_length=1, max_length=MAX_SCORE_BATCH)


class OodScoreItem(BaseModel):
    """One item's outcome: its verdict, or the error a single `POST /v1/score` would have
    answered for it (e.g. `ood.bad_embedding`). Exactly one of the two is set."""

    verdict: OodScoreResponse | None = None
    error: ErrorDetail | None = None


class OodScoreBatchResponse(BaseModel):
    """One outcome per item, in the request's order."""

    results: list[OodScoreItem]
