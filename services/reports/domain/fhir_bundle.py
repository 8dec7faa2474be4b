"""One finished job as an HL7 FHIR R4 Bundle (plain JSON-able dicts, no FHIR library at runtime).

The bundle holds a DiagnosticReport, its Observations (one per class probability, the triage level,
the OOD/quality verdict, the conformal set), Media for the image and the heatmap, a Device for the
model and a Provenance. Everything is derived from the job and the model, so building it twice
gives the same JSON byte for byte, and a retried transaction POST creates nothing twice.

Once a clinician has signed the result off (issue 12), the DiagnosticReport is `final`, names the
clinician (`resultsInterpreter`, a Practitioner in the bundle) and concludes with the clinician's
level; a second Provenance records the sign-off. In a transaction the signed DiagnosticReport is a
conditional update (PUT on its identifier), so the final replaces the preliminary the EHR holds;
the model's Observations stay as they were (preliminary: they are the model's output).
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import quote

from contracts.jobs import DicomRef, JobStatus
from contracts.ood import OodDecision, OodScoreResponse
from contracts.reports import JobView, ModelRef, Prediction, ReportView
from contracts.reviews import ReviewView

JsonObject = dict[str, Any]
BundleType = Literal["collection", "transaction"]

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_DIAGNOSTIC_SERVICE_SECTION = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

# Local code systems. Separate systems keep a class code (model-defined, e.g. "mel") from ever
# colliding with one of SkinTriage's own codes.
LOCAL_CODES = "https://skintriage.org/fhir/CodeSystem/skintriage"
LESION_CLASS_CODES = "https://skintriage.org/fhir/CodeSystem/lesion-class"
TRIAGE_LEVEL_CODES = "https://skintriage.org/fhir/CodeSystem/triage-level"
OOD_DECISION_CODES = "https://skintriage.org/fhir/CodeSystem/ood-decision"

MODEL_SHA256_SYSTEM = "urn:skintriage:model-sha256"
# FHIR's system for DICOM UIDs (values are `urn:oid:<uid>`).
DICOM_UID_SYSTEM = "urn:dicom:uid"
DERMATOSCOPY_SNOMED_CODE = "1237125003"
REPORT_LOCAL_CODE = "skin-lesion-triage"

TRIAGE_LEVEL_DISPLAY = {"urgent": "Urgent", "routine": "Routine", "monitor": "Monitor"}
OOD_DECISION_DISPLAY = {
    OodDecision.accepted: "Accepted",
    OodDecision.rejected_ood: "Rejected: out of distribution",
    OodDecision.rejected_quality: "Rejected: insufficient image quality",
}
_REJECTION_REASON = {
    OodDecision.rejected_ood: "the image lies outside what the model was trained on",
    OodDecision.rejected_quality: "the image quality is insufficient",
}

# Every fullUrl is uuid5(this namespace, name): fixed, so a job's URNs never change between calls.
FULL_URL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://skintriage.org/fhir/bundle")

_FINISHED = frozenset({JobStatus.done, JobStatus.rejected})
IMAGE_ROLE = "media/image"


class BundleNotAvailableError(ValueError):
    """The job has no result (queued, running or failed), so there is nothing to put in a bundle."""


@dataclass(frozen=True)
class _Entry:
    full_url: str
    resource: JsonObject
    # The search query a transaction's conditional create uses ("identifier=system|value").
    if_none_exist: str
    # A transaction replaces the resource the query finds (a conditional update) instead of
    # creating it only when there is none: the signed-off DiagnosticReport.
    replaces: bool = False


@dataclass(frozen=True)
class _Context:
    job_id: str
    identifier_system: str
    subject: JsonObject | None
    body_site: JsonObject | None
    effective: str
    completed: str
    device_reference: JsonObject
    image_reference: JsonObject


def job_bundle(
    job: JobView,
    *,
    image: bytes,
    image_media_type: str,
    heatmap_png: bytes | None,
    report_pdf: bytes | None,
    bundle_type: BundleType = "collection",
    identifier_system: str = "urn:skintriage:job",
    patient_identifier_system: str = "urn:skintriage:patient-ref",
    practitioner_identifier_system: str = "urn:skintriage:user",
    generated_at: datetime,
) -> JsonObject:
    """The job's result as a FHIR R4 Bundle: a `collection` to read or archive, or a `transaction`
    an EHR can be POSTed (every entry a conditional create, so a retried POST adds nothing; once
    signed off, the DiagnosticReport a conditional update, so the final replaces the preliminary).
    Raises BundleNotAvailableError when the job has no result yet (or failed)."""
    if bundle_type not in get_args(BundleType):
        raise ValueError(f"bundle_type must be one of {get_args(BundleType)}, not {bundle_type!r}")
    result = job.result
    if job.status not in _FINISHED or result is None:
        raise BundleNotAvailableError(f"job {job.job_id} has no result (status {job.status.value})")
    prediction = _triaged_prediction(result)

    device = _device_entry(result.model)
    context = _Context(
        job_id=job.job_id,
        identifier_system=identifier_system,
        subject=_patient_subject(job.metadata.patient_ref, patient_identifier_system),
        body_site={"text": job.metadata.body_site} if job.metadata.body_site else None,
        effective=_instant(job.created_at),
        completed=_instant(result.completed_at),
        device_reference={"reference": device.full_url},
        image_reference={"reference": _full_url(f"{job.job_id}/{IMAGE_ROLE}")},
    )
    image_media = _media_entry(
        context,
        IMAGE_ROLE,
        _attachment(image_media_type, image, "Dermoscopic image as submitted"),
        issued=context.effective,
        made_by_model=False,
    )
    heatmap_media = []
    if heatmap_png is not None:
        heatmap = _attachment("image/png", heatmap_png, "Class-activation heatmap of the model's top class")
        heatmap_media.append(
            _media_entry(context, "media/heatmap", heatmap, issued=context.completed, made_by_model=True)
        )

    observations: list[_Entry] = []
    if prediction is not None:
        observations += [
            _probability_observation(context, prediction, code) for code in prediction.probabilities
        ]
        observations.append(_triage_observation(context, result, prediction))
        observations.append(_conformal_observation(context, prediction))
    if result.ood is not None:
        observations.append(_ood_observation(context, result.ood))

    media = [image_media, *heatmap_media]
    # Only a triaged result can be signed off (reports refuses a review of a rejected image).
    review = result.review if prediction is not None else None
    practitioner = _practitioner_entry(review, practitioner_identifier_system) if review is not None else None
    report = _report_entry(context, result, prediction, observations, media, report_pdf)
    if review is not None and practitioner is not None and prediction is not None:
        report = _signed_off(report, result, prediction, review, practitioner)
    if job.dicom is not None:
        _link_dicom(job.dicom, report, image_media)
    # The model produced the report, the Observations and the heatmap; the image is its input.
    provenance = _provenance_entry(context, targets=[report, *observations, *heatmap_media])
    entries = [report, *observations, *media, device, provenance]
    if review is not None and practitioner is not None:
        entries += [practitioner, _review_provenance_entry(context, review, report, practitioner)]
    return {
        "resourceType": "Bundle",
        "identifier": {"system": identifier_system, "value": f"{job.job_id}/bundle"},
        "type": bundle_type,
        "timestamp": _instant(generated_at),
        "entry": [_bundle_entry(entry, bundle_type) for entry in entries],
    }


def _triaged_prediction(result: ReportView) -> Prediction | None:
    """The prediction to report, or None for a rejected image: whatever the model said about an
    image the OOD/quality gate refused must not reach the EHR as a result."""
    if result.status != JobStatus.done:
        return None
    if result.prediction is None:
        raise ValueError(f"job {result.job_id} is done but its report has no prediction")
    return result.prediction


def _bundle_entry(entry: _Entry, bundle_type: BundleType) -> JsonObject:
    if bundle_type == "transaction" and entry.replaces:
        # A conditional update: the server replaces the resource its identifier finds (or creates
        # it), and rewrites the URN the other entries use to that resource's id.
        return {
            "fullUrl": entry.full_url,
            "resource": entry.resource,
            "request": {"method": "PUT", "url": f"{entry.resource['resourceType']}?{entry.if_none_exist}"},
        }
    if bundle_type == "transaction":
        # The server assigns ids on POST; the fullUrl URN is only a placeholder it rewrites.
        return {
            "fullUrl": entry.full_url,
            "resource": entry.resource,
            "request": {
                "method": "POST",
                "url": entry.resource["resourceType"],
                "ifNoneExist": entry.if_none_exist,
            },
        }
    # A collection is read as it is, so each resource carries an id: the UUID of its URN, which
    # keeps fullUrl and id telling the same story.
    resource_type, rest = entry.resource["resourceType"], dict(entry.resource)
    del rest["resourceType"]
    resource = {"resourceType": resource_type, "id": entry.full_url.removeprefix("urn:uuid:"), **rest}
    return {"fullUrl": entry.full_url, "resource": resource}


def _full_url(name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(FULL_URL_NAMESPACE, name)}"


def _search_token(system: str, value: str) -> str:
    """`system|value` as a token search parameter in a URL query: FHIR's backslash escapes for
    `\\ | , $` inside each part, then percent-encoding (`:` and `/` are legal in a query as is)."""

    def part(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
        return quote(escaped, safe=":/")

    return f"{part(system)}|{part(value)}"


def _job_identifier(job_id: str, role: str, identifier_system: str) -> tuple[str, JsonObject, str]:
    """fullUrl, identifier and conditional-create query of the resource playing `role` in a job."""
    value = f"{job_id}/{role}"
    identifier = {"system": identifier_system, "value": value}
    return _full_url(value), identifier, f"identifier={_search_token(identifier_system, value)}"


def _instant(value: datetime) -> str:
    # Stored times are UTC; a naive one is read as UTC rather than the host's zone, since FHIR
    # instants and dateTimes with a time must carry an offset.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _patient_subject(patient_ref: str | None, system: str) -> JsonObject | None:
    # patient_ref is opaque to SkinTriage and no Patient resource is sent, so the subject is a
    # logical reference the EHR resolves against its own patient identifiers.
    if not patient_ref:
        return None
    return {"type": "Patient", "identifier": {"system": system, "value": patient_ref}}


def _coding(system: str, code: str, display: str | None = None) -> JsonObject:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(*codings: JsonObject, text: str | None = None) -> JsonObject:
    concept: JsonObject = {"coding": list(codings)}
    if text:
        concept["text"] = text
    return concept


def _fraction(value: float) -> JsonObject:
    """value[x] of a unitless number (a probability, a score): a UCUM `1` quantity, or the reason
    it is absent, since JSON (and FHIR's decimal) has no NaN or infinity."""
    if math.isnan(value):
        return {
            "dataAbsentReason": _concept(_coding(DATA_ABSENT_REASON, "not-a-number", "Not a Number (NaN)"))
        }
    if math.isinf(value):
        code, display = ("positive-infinity", "Positive Infinity (PINF)")
        if value < 0:
            code, display = ("negative-infinity", "Negative Infinity (NINF)")
        return {"dataAbsentReason": _concept(_coding(DATA_ABSENT_REASON, code, display))}
    return {"valueQuantity": {"value": value, "unit": "1", "system": UCUM, "code": "1"}}


def _attachment(content_type: str, data: bytes, title: str) -> JsonObject:
    return {
        "contentType": content_type,
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        # Attachment.hash is defined as the base64 of the data's SHA-1.
        "hash": base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii"),
        "title": title,
    }


def _device_entry(model: ModelRef) -> _Entry:
    # One Device per model, shared by every job it scored: its URN and conditional create are keyed
    # by the model's sha256, never by the job, so EHRs hold one Device per model version.
    return _Entry(
        full_url=_full_url(f"model-sha256/{model.sha256}"),
        resource={
            "resourceType": "Device",
            "identifier": [{"system": MODEL_SHA256_SYSTEM, "value": model.sha256}],
            "status": "active",
            "deviceName": [
                {"name": f"{model.name} {model.version}", "type": "user-friendly-name"},
                {"name": model.name, "type": "model-name"},
            ],
            "type": {"text": "SkinTriage skin-lesion triage model (software)"},
            "version": [{"value": model.version}],
        },
        if_none_exist=f"identifier={_search_token(MODEL_SHA256_SYSTEM, model.sha256)}",
    )


def _dicom_uid(uid: str) -> JsonObject:
    """A DICOM UID as a FHIR Identifier (the `urn:dicom:uid` system takes `urn:oid:` values)."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


def _link_dicom(dicom: DicomRef, report: _Entry, image_media: _Entry) -> None:
    """An image that arrived as DICOM: the report names its study (a logical reference, since the
    ImagingStudy lives in the PACS, not in this bundle) and the image Media its SOP instance and
    acquisition time, so the EHR can join the triage to the images it already holds."""
    report.resource["imagingStudy"] = [
        {"type": "ImagingStudy", "identifier": _dicom_uid(dicom.study_instance_uid)}
    ]
    image_media.resource["identifier"].append(_dicom_uid(dicom.sop_instance_uid))
    if dicom.acquired_at is not None:
        image_media.resource["createdDateTime"] = _instant(dicom.acquired_at)
    if dicom.laterality is not None:
        site = image_media.resource.get("bodySite", {}).get("text")
        text = f"{site} ({dicom.laterality})" if site else dicom.laterality
        image_media.resource["bodySite"] = {"text": text}


def _media_entry(
    context: _Context, role: str, content: JsonObject, *, issued: str, made_by_model: bool
) -> _Entry:
    full_url, identifier, condition = _job_identifier(context.job_id, role, context.identifier_system)
    resource: JsonObject = {
        "resourceType": "Media",
        "identifier": [identifier],
        "status": "completed",
        "type": _concept(_coding(MEDIA_TYPE, "image", "Image")),
    }
    if context.subject is not None:
        resource["subject"] = context.subject
    resource["issued"] = issued
    if context.body_site is not None:
        resource["bodySite"] = context.body_site
    # Media.device is "the device used to collect the media": the model made the heatmap, but the
    # submitted image came from the clinic's dermatoscope, which SkinTriage knows nothing about.
    if made_by_model:
        resource["device"] = context.device_reference
    resource["content"] = content
    return _Entry(full_url, resource, condition)


def _observation(
    context: _Context, role: str, code: JsonObject, value: JsonObject, **elements: Any
) -> _Entry:
    full_url, identifier, condition = _job_identifier(
        context.job_id, f"observation/{role}", context.identifier_system
    )
    resource: JsonObject = {
        "resourceType": "Observation",
        "identifier": [identifier],
        "status": "preliminary",
        "category": [_concept(_coding(OBSERVATION_CATEGORY, "imaging", "Imaging"))],
        "code": code,
    }
    if context.subject is not None:
        resource["subject"] = context.subject
    resource["effectiveDateTime"] = context.effective
    resource["issued"] = context.completed
    resource.update(value)
    if context.body_site is not None:
        resource["bodySite"] = context.body_site
    # DiagnosticReport.performer and Observation.performer may not reference a Device in R4
    # (Practitioner, Organization, CareTeam, ...): the model is named where R4 allows a Device,
    # Observation.device here, Media.device for the heatmap and Provenance.agent.who.
    resource["device"] = context.device_reference
    resource["derivedFrom"] = [context.image_reference]
    resource.update(elements)
    return _Entry(full_url, resource, condition)


def _probability_observation(context: _Context, prediction: Prediction, code: str) -> _Entry:
    display = prediction.display_name(code)
    return _observation(
        context,
        f"prob-{code}",
        _concept(_coding(LESION_CLASS_CODES, code, display), text=f"Probability of {display}"),
        _fraction(prediction.probabilities[code]),
    )


def _triage_concept(level: str) -> JsonObject:
    display = TRIAGE_LEVEL_DISPLAY[level]
    return _concept(_coding(TRIAGE_LEVEL_CODES, level, display), text=display)


def _triage_level(result: ReportView, prediction: Prediction) -> str:
    level = result.triage_level or prediction.triage_level
    if level not in TRIAGE_LEVEL_DISPLAY:
        raise ValueError(f"job {result.job_id} has an unknown triage level {level!r}")
    return level


def _triage_observation(context: _Context, result: ReportView, prediction: Prediction) -> _Entry:
    return _observation(
        context,
        "triage",
        _concept(_coding(LOCAL_CODES, "triage-level", "Skin-lesion triage level"), text="Triage level"),
        {"valueCodeableConcept": _triage_concept(_triage_level(result, prediction))},
        component=[
            {
                "code": _concept(
                    _coding(LOCAL_CODES, "malignant-probability", "Probability of a malignant lesion")
                ),
                **_fraction(prediction.malignant_probability),
            },
            {
                "code": _concept(
                    _coding(LOCAL_CODES, "triage-threshold", "Threshold on P(malignant) that set the level")
                ),
                **_fraction(prediction.triage_threshold),
            },
        ],
    )


def _conformal_observation(context: _Context, prediction: Prediction) -> _Entry:
    members = [f"{prediction.display_name(code)} ({code})" for code in prediction.conformal_set]
    # A conformal set may be empty, and FHIR strings may not be: say so in words.
    listing = ", ".join(members) if members else "no class"
    coverage = prediction.conformal_coverage
    return _observation(
        context,
        "conformal-set",
        _concept(
            _coding(LOCAL_CODES, "conformal-set", "Conformal prediction set"), text="Conformal prediction set"
        ),
        {"valueString": f"{listing} (coverage {coverage:.0%})" if math.isfinite(coverage) else listing},
        component=[
            {
                "code": _concept(_coding(LOCAL_CODES, "conformal-coverage", "Target coverage of the set")),
                **_fraction(coverage),
            },
            *(
                {
                    "code": _concept(_coding(LOCAL_CODES, "conformal-set-member", "Class in the set")),
                    "valueCodeableConcept": _concept(
                        _coding(LESION_CLASS_CODES, code, prediction.display_name(code))
                    ),
                }
                for code in prediction.conformal_set
            ),
        ],
    )


def _ood_observation(context: _Context, ood: OodScoreResponse) -> _Entry:
    components: list[JsonObject] = [
        {"code": _concept(_coding(LOCAL_CODES, f"ood-score-{name}", f"OOD score {name}")), **_fraction(score)}
        for name, score in ood.scores.items()
    ]
    components += [
        {
            "code": _concept(_coding(LOCAL_CODES, f"ood-threshold-{name}", f"OOD threshold {name}")),
            **_fraction(threshold),
        }
        for name, threshold in ood.thresholds.items()
    ]
    if ood.rule:
        components.append(
            {
                "code": _concept(_coding(LOCAL_CODES, "ood-rule", "Rule that rejected the image")),
                "valueString": ood.rule,
            }
        )
    elements: JsonObject = {"component": components}
    reasons = [reason for reason in ood.reasons if reason.strip()]
    if reasons:
        elements["note"] = [{"text": reason} for reason in reasons]
    return _observation(
        context,
        "ood-verdict",
        _concept(
            _coding(LOCAL_CODES, "ood-verdict", "Out-of-distribution and image-quality verdict"),
            text="Out-of-distribution and image-quality verdict",
        ),
        {
            "valueCodeableConcept": _concept(
                _coding(OOD_DECISION_CODES, ood.decision.value, OOD_DECISION_DISPLAY[ood.decision]),
                text=OOD_DECISION_DISPLAY[ood.decision],
            )
        },
        **elements,
    )


def _conclusion(result: ReportView, prediction: Prediction | None) -> str:
    if prediction is not None:
        level = _triage_level(result, prediction)
        probability, threshold = prediction.malignant_probability, prediction.triage_threshold
        return (
            f"Triage level: {TRIAGE_LEVEL_DISPLAY[level]} "
            f"(P(malignant) {probability:.3f}, threshold {threshold:.3f}). "
            f"Most likely class: {prediction.display_name(prediction.top_class)}. {result.disclaimer}"
        )
    ood = result.ood
    why = "the image was rejected"
    if ood is not None and ood.decision in _REJECTION_REASON:
        why = f"the image was rejected because {_REJECTION_REASON[ood.decision]}"
    details = []
    if ood is not None and ood.rule:
        details.append(f"rule: {ood.rule}")
    if ood is not None and ood.reasons:
        details.append(f"reasons: {'; '.join(ood.reasons)}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"Not triaged: {why}{suffix}. {result.disclaimer}"


def _report_entry(
    context: _Context,
    result: ReportView,
    prediction: Prediction | None,
    observations: list[_Entry],
    media: list[_Entry],
    report_pdf: bytes | None,
) -> _Entry:
    identifier = {"system": context.identifier_system, "value": context.job_id}
    resource: JsonObject = {
        "resourceType": "DiagnosticReport",
        "identifier": [identifier],
        "status": "preliminary",
        "category": [_concept(_coding(V2_DIAGNOSTIC_SERVICE_SECTION, "IMG", "Diagnostic Imaging"))],
        "code": _concept(
            _coding(SNOMED, DERMATOSCOPY_SNOMED_CODE, "Optical dermatoscopy of skin"),
            _coding(LOCAL_CODES, REPORT_LOCAL_CODE, "Skin-lesion triage"),
            text="Dermoscopic skin-lesion triage",
        ),
    }
    if context.subject is not None:
        resource["subject"] = context.subject
    resource["effectiveDateTime"] = context.effective
    resource["issued"] = context.completed
    # No performer: see _observation for where the model Device sits instead.
    resource["result"] = [{"reference": entry.full_url} for entry in observations]
    resource["media"] = [
        {"comment": entry.resource["content"]["title"], "link": {"reference": entry.full_url}}
        for entry in media
    ]
    resource["conclusion"] = _conclusion(result, prediction)
    if prediction is not None:
        resource["conclusionCode"] = [_triage_concept(_triage_level(result, prediction))]
    if report_pdf is not None:
        resource["presentedForm"] = [
            _attachment("application/pdf", report_pdf, f"SkinTriage report {context.job_id}")
        ]
    return _Entry(
        _full_url(f"{context.job_id}/diagnostic-report"),
        resource,
        f"identifier={_search_token(context.identifier_system, context.job_id)}",
    )


def _practitioner_entry(review: ReviewView, identifier_system: str) -> _Entry:
    """The signing clinician, identified by their SkinTriage user id (one Practitioner per user:
    the URN and the conditional create are keyed by the user, never by the job)."""
    identifier = {"system": identifier_system, "value": review.reviewer.user_id}
    return _Entry(
        _full_url(f"practitioner/{review.reviewer.user_id}"),
        {
            "resourceType": "Practitioner",
            "identifier": [identifier],
            "active": True,
            "name": [{"text": review.reviewer.name}],
        },
        f"identifier={_search_token(identifier_system, review.reviewer.user_id)}",
    )


def _diagnosis_words(code: str | None, text: str | None, display_name: str | None) -> str:
    named = f"{display_name or code} ({code})" if code else ""
    return "; ".join(part for part in (named, text) if part)


def _review_conclusion(result: ReportView, prediction: Prediction, review: ReviewView) -> str:
    clinician = TRIAGE_LEVEL_DISPLAY[review.triage_level]
    model = TRIAGE_LEVEL_DISPLAY[_triage_level(result, prediction)]
    stance = "confirming the model's level" if review.agrees_with_model else f"overriding the model's {model}"
    parts = [
        f"Signed off by {review.reviewer.name} on {_instant(review.created_at)} (review version "
        f"{review.version}): triage level {clinician}, {stance}."
    ]
    if review.working_diagnosis is not None:
        working = review.working_diagnosis
        parts.append(
            f"Working diagnosis: {_diagnosis_words(working.code, working.text, working.display_name)}."
        )
    if review.confirmed_diagnosis is not None:
        confirmed = review.confirmed_diagnosis
        words = _diagnosis_words(confirmed.code, confirmed.text, confirmed.display_name)
        nature = "malignant" if confirmed.malignant else "not malignant"
        parts.append(
            f"Confirmed diagnosis: {words} ({nature}; basis: {confirmed.basis.value.replace('_', ' ')})."
        )
    if review.note and review.note.strip():
        parts.append(f"Note: {review.note.strip()}")
    parts.append(f"Model result: {_conclusion(result, prediction)}")
    return " ".join(parts)


def _signed_off(
    report: _Entry, result: ReportView, prediction: Prediction, review: ReviewView, practitioner: _Entry
) -> _Entry:
    """The DiagnosticReport once a clinician signed it off: final, interpreted by the clinician,
    concluding with the clinician's level; a conditional update in a transaction."""
    resource = dict(report.resource)
    resource["resultsInterpreter"] = [{"reference": practitioner.full_url}]
    resource["status"] = "final"
    resource["conclusion"] = _review_conclusion(result, prediction, review)
    resource["conclusionCode"] = [_triage_concept(review.triage_level)]
    return _Entry(report.full_url, resource, report.if_none_exist, replaces=True)


def _review_provenance_entry(
    context: _Context, review: ReviewView, report: _Entry, practitioner: _Entry
) -> _Entry:
    """Who signed the report off and when, one Provenance per review version (tagged like the
    model's Provenance, so a retried transaction creates it once)."""
    tag = _coding(context.identifier_system, f"{context.job_id}/review/{review.version}/provenance")
    return _Entry(
        _full_url(f"{context.job_id}/review/{review.version}/provenance"),
        {
            "resourceType": "Provenance",
            "meta": {"tag": [tag]},
            "target": [{"reference": report.full_url}],
            "recorded": _instant(review.created_at),
            "agent": [
                {
                    "type": _concept(_coding(PROVENANCE_PARTICIPANT_TYPE, "verifier", "Verifier")),
                    "who": {"reference": practitioner.full_url},
                }
            ],
        },
        f"_tag={_search_token(tag['system'], tag['code'])}",
    )


def _provenance_entry(context: _Context, *, targets: list[_Entry]) -> _Entry:
    # R4's Provenance has no identifier, so a conditional create cannot search by one. A meta.tag
    # carrying the job is kept by servers and searchable on every resource type (`_tag`), which
    # makes `Provenance?_tag=system|code` find the one this job already created. Searching by
    # `target` would not work: the targets' server ids do not exist until the transaction runs.
    tag = _coding(context.identifier_system, f"{context.job_id}/provenance")
    return _Entry(
        _full_url(f"{context.job_id}/provenance"),
        {
            "resourceType": "Provenance",
            "meta": {"tag": [tag]},
            "target": [{"reference": entry.full_url} for entry in targets],
            "recorded": context.completed,
            "agent": [
                {
                    "type": _concept(_coding(PROVENANCE_PARTICIPANT_TYPE, "performer", "Performer")),
                    "who": context.device_reference,
                }
            ],
            "entity": [{"role": "source", "what": context.image_reference}],
        },
        f"_tag={_search_token(tag['system'], tag['code'])}",
    )
