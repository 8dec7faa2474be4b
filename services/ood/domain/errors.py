"""Typed errors of the OOD service; the API renders them as contracts.errors.ErrorBody."""

from __future__ import annotations

from contracts.errors import DomainError


class ModelMismatchError(DomainError):
    """The worker scored with a different bundle than the one this service loaded."""

    code, status = "ood.model_mismatch", 409


class BadLogitsError(DomainError):
    """Logits of the wrong length for the bundle's classes, or not finite."""

    code, status = "ood.bad_logits", 422


class BadEmbeddingError(DomainError):
    """An embedding of the wrong length for the bundle, or not finite."""

    code, status = "ood.bad_embedding", 422


class BadQualityError(DomainError):
    """`quality` present but not a valid set of contracts.ood_extra.QualityMeasurements."""

    code, status = "ood.bad_quality", 422


class NotReadyError(DomainError):
    """The bundle is not loaded (yet)."""

    code, status = "service.not_ready", 503
