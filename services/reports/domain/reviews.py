"""The rules of a clinician's review (issue 12), apart from storage: who may sign, what a result
must be to be reviewed, which class codes a diagnosis may name and what its malignancy is, which
state a review puts a result in, and which next step a result suggests."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.bundle import TriageLevel
from contracts.errors import DomainError
from contracts.reviews import ConfirmedDiagnosisInput, NextStep, NextStepsUpdate, ReviewCreate, ReviewState
from contracts.users import Actor, Role


class ReviewForbiddenError(DomainError):
    """A review without a clinician acting (the gateway admits only clinicians; this keeps any
    other path from writing an unsigned review)."""

    code, status = "auth.forbidden", 403


class NotReviewableError(DomainError):
    """Only a done job (a triaged result) can be reviewed."""

    code, status = "review.not_reviewable", 409


class ReviewConflictError(DomainError):
    """Another review was written since the version the clinician saw (or at the same moment)."""

    code, status = "review.conflict", 409


class UnknownClassError(DomainError):
    """A diagnosis code that is not one of the model's classes in this report."""

    code, status = "review.unknown_class", 422


class MalignancyUnknownError(DomainError):
    """A confirmed diagnosis whose malignancy the model does not know, given without `malignant`."""

    code, status = "review.malignancy_unknown", 422


class MalignancyConflictError(DomainError):
    """A confirmed diagnosis whose `malignant` contradicts the malignancy of the class it names."""

    code, status = "review.malignancy_conflict", 422


class NextStepsForbiddenError(DomainError):
    """A change of the tenant's next steps by someone who is not its admin."""

    code, status = "auth.forbidden", 403


def require_clinician(actor: Actor | None) -> Actor:
    """The acting clinician; ReviewForbiddenError for anyone else, or for nobody."""
    if actor is None or actor.role != Role.clinician:
        role = actor.role.value if actor is not None else None
        raise ReviewForbiddenError(
            "only a clinician may review a result", {"role": role, "allowed_roles": [Role.clinician.value]}
        )
    return actor


def require_admin_or_fleet(actor: Actor | None) -> None:
    """Next steps are an admin's to change (None: the fleet itself, an operator's tooling)."""
    if actor is not None and actor.role != Role.admin:
        raise NextStepsForbiddenError(
            "only an admin may change the next steps",
            {"role": actor.role.value, "allowed_roles": [Role.admin.value]},
        )


@dataclass(frozen=True)
class ReviewedResult:
    """What a review is checked against: the model's result for the job."""

    job_id: str
    status: str
    model_triage_level: TriageLevel | None
    class_codes: frozenset[str]
    malignant_classes: frozenset[str]
    # False for a report stored before the model's malignant classes were recorded: a code's
    # malignancy is then unknown, and `malignant` must be given.
    malignancy_known: bool


@dataclass(frozen=True)
class CheckedReview:
    """A review that passed every rule, with its derived fields."""

    model_triage_level: TriageLevel
    agrees_with_model: bool
    confirmed_malignant: bool | None
    state: ReviewState


def check_review(body: ReviewCreate, result: ReviewedResult) -> CheckedReview:
    """Apply the rules to a review of `result`; raises the rule's DomainError."""
    if result.status != "done" or result.model_triage_level is None:
        raise NotReviewableError(
            "only a done job with a triage result can be reviewed",
            {"job_id": result.job_id, "status": result.status},
        )
    for field, diagnosis in (
        ("working_diagnosis", body.working_diagnosis),
        ("confirmed_diagnosis", body.confirmed_diagnosis),
    ):
        if diagnosis is not None and diagnosis.code is not None and diagnosis.code not in result.class_codes:
            raise UnknownClassError(
                "the code is not one of the model's classes in this report",
                {"field": field, "code": diagnosis.code, "classes": sorted(result.class_codes)},
            )
    malignant = None
    if body.confirmed_diagnosis is not None:
        malignant = confirmed_malignancy(body.confirmed_diagnosis, result)
    return CheckedReview(
        model_triage_level=result.model_triage_level,
        agrees_with_model=body.triage_level == result.model_triage_level,
        confirmed_malignant=malignant,
        state=ReviewState.diagnosis_confirmed if body.confirmed_diagnosis else ReviewState.signed_off,
    )


def confirmed_malignancy(diagnosis: ConfirmedDiagnosisInput, result: ReviewedResult) -> bool:
    """Whether a confirmed diagnosis is malignant: the named class's malignancy when the model
    knows it (a value given must agree), else the value the clinician gave."""
    if diagnosis.code is not None and result.malignancy_known:
        derived = diagnosis.code in result.malignant_classes
        if diagnosis.malignant is not None and diagnosis.malignant != derived:
            raise MalignancyConflictError(
                "`malignant` contradicts the malignancy of the class the code names",
                {"code": diagnosis.code, "malignant": derived},
            )
        return derived
    if diagnosis.malignant is None:
        raise MalignancyUnknownError(
            "say whether the confirmed diagnosis is malignant: its malignancy is not known from a code",
            {"code": diagnosis.code},
        )
    return diagnosis.malignant


def next_step(
    steps: NextStepsUpdate, model_level: TriageLevel | None, reviewed_level: TriageLevel | None
) -> NextStep | None:
    """The suggested next step: for the clinician's level once signed off, else the model's; None
    for a result without a level (a rejected image)."""
    level = reviewed_level or model_level
    if level is None:
        return None
    return NextStep(triage_level=level, text=steps.text_for(level))
