"""Clinicians' reviews and sign-off, the review state of a result, and the suggested next step per
triage level (issue 12). A review is a clinician's act: the gateway admits only the clinician role,
and the reports service refuses a review without a clinician as its actor."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from contracts.bundle import TriageLevel
from contracts.text import NO_CONTROL_CHARACTERS

# A note may run over several lines (newline, carriage return, tab); every other control character
# (NUL, which PostgreSQL refuses in text, included) is refused.
NOTE_CHARACTERS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
MAX_NOTE_LENGTH = 2000
MAX_CODE_LENGTH = 32
MAX_DIAGNOSIS_TEXT_LENGTH = 256
MAX_NEXT_STEP_LENGTH = 500

DEFAULT_NEXT_STEP_URGENT = "Refer for excision or biopsy within 2 weeks."
DEFAULT_NEXT_STEP_ROUTINE = "Dermatology review at the next routine appointment."
DEFAULT_NEXT_STEP_MONITOR = "Re-image in 3 months and compare."


class ReviewState(StrEnum):
    """Where a result stands: no review yet; signed off (a clinician set the triage level); or a
    diagnosis confirmed (the latest review records a confirmed diagnosis and its basis)."""

    unreviewed = "unreviewed"
    signed_off = "signed_off"
    diagnosis_confirmed = "diagnosis_confirmed"


class ReportSort(StrEnum):
    """The report list's order. `newest`: newest first. `priority` (the clinicians' worklist):
    results awaiting review (done, unreviewed) with the model's urgent level first, then the other
    results awaiting review, then everything else (reviewed results, rejected images, which cannot
    be reviewed, and jobs without a result); within each group the longest-waiting (oldest) first."""

    newest = "newest"
    priority = "priority"


class DiagnosisBasis(StrEnum):
    """What a confirmed diagnosis rests on."""

    histopathology = "histopathology"
    follow_up = "follow_up"
    clinical = "clinical"


class DiagnosisInput(BaseModel):
    """A diagnosis as a clinician gives it: one of the model's class codes, free text, or both."""

    code: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CODE_LENGTH,
        pattern=NO_CONTROL_CHARACTERS,
        description="one of the model's class codes in this report (`prediction.probabilities`)",
    )
    text: str | None = Field(
        default=None, min_length=1, max_length=MAX_DIAGNOSIS_TEXT_LENGTH, pattern=NO_CONTROL_CHARACTERS
    )

    @model_validator(mode="after")
    def _code_or_text(self) -> DiagnosisInput:
        if self.code is None and self.text is None:
            raise ValueError("a diagnosis needs a code or a text")
        return self


class ConfirmedDiagnosisInput(DiagnosisInput):
    """A confirmed diagnosis: what it is, what it rests on and whether it is malignant."""

    basis: DiagnosisBasis
    malignant: bool | None = Field(
        default=None,
        description="derived from `code` when the model knows that class's malignancy (a value given "
        "must then agree); required otherwise (422 `review.malignancy_unknown`)",
    )


class ReviewCreate(BaseModel):
    """A clinician's review of one done job: a new version every time, never an overwrite."""

    triage_level: TriageLevel = Field(description="the clinician's level (the model's confirms it)")
    working_diagnosis: DiagnosisInput | None = None
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH, pattern=NOTE_CHARACTERS)
    confirmed_diagnosis: ConfirmedDiagnosisInput | None = None
    expected_version: int | None = Field(
        default=None,
        ge=0,
        description="the latest version the clinician saw (0: none); another version since is 409 "
        "`review.conflict`. None: no check.",
    )


class Reviewer(BaseModel):
    """Who signed a review."""

    user_id: str
    name: str


class DiagnosisView(BaseModel):
    """A diagnosis as recorded, with the class's display name where it names a class."""

    code: str | None = None
    text: str | None = None
    display_name: str | None = Field(default=None, description="the model's name for `code`")


class ConfirmedDiagnosisView(DiagnosisView):
    """A confirmed diagnosis as recorded."""

    basis: DiagnosisBasis
    malignant: bool


class ReviewView(BaseModel):
    """One version of a clinician's review of a job."""

    review_id: str
    job_id: str
    version: int = Field(ge=1)
    reviewer: Reviewer
    triage_level: TriageLevel
    model_triage_level: TriageLevel
    agrees_with_model: bool = Field(description="False: the clinician overrode the model's level")
    working_diagnosis: DiagnosisView | None = None
    note: str | None = None
    confirmed_diagnosis: ConfirmedDiagnosisView | None = None
    created_at: datetime


class ReviewList(BaseModel):
    """A job's reviews, oldest (version 1) first."""

    items: list[ReviewView]


class NextStep(BaseModel):
    """The suggested next step for a result: the clinician's level once signed off, else the model's."""

    triage_level: TriageLevel
    text: str


NextStepText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NEXT_STEP_LENGTH, pattern=NOTE_CHARACTERS)
]


class NextStepsUpdate(BaseModel):
    """A tenant's own next step per triage level (admin)."""

    urgent: NextStepText
    routine: NextStepText
    monitor: NextStepText

    def text_for(self, level: TriageLevel) -> str:
        """The next step for a triage level."""
        return {"urgent": self.urgent, "routine": self.routine, "monitor": self.monitor}[level]


DEFAULT_NEXT_STEPS = NextStepsUpdate(
    urgent=DEFAULT_NEXT_STEP_URGENT, routine=DEFAULT_NEXT_STEP_ROUTINE, monitor=DEFAULT_NEXT_STEP_MONITOR
)


class NextSteps(NextStepsUpdate):
    """The next steps in force for a tenant, and whether they are the service's defaults or its own."""

    source: Literal["default", "tenant"]
