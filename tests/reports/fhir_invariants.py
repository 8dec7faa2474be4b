"""Checks on a SkinTriage FHIR R4 Bundle that the fhir.resources models do not make: references
resolve inside the bundle and point at resource types R4 allows there, entry requests fit the
bundle type and re-find their own resource, and codes come from their value sets.

External code systems are spelled out here rather than imported from the builder, so a typo in
the builder cannot agree with itself; SkinTriage's own code systems are the builder's to define.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import typing
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.reference import Reference

from services.reports.domain.fhir_bundle import (
    LESION_CLASS_CODES,
    LOCAL_CODES,
    OOD_DECISION_CODES,
    TRIAGE_LEVEL_CODES,
)

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DERMATOSCOPY = "1237125003"

BUNDLE_TYPES = {
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
}
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}
# R4 required bindings of each resource's status.
STATUSES = {
    "DiagnosticReport": {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Observation": {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Media": {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    },
    "Device": {"active", "inactive", "entered-in-error", "unknown"},
}
# HL7 v2 table 0074, Diagnostic Service Section ID.
_V2_0074_CODES = (
    "AU BG BLB CG CH CP CT CTH CUS EC EN GE HM ICU IMG IMM LAB MB MCB MYC NMR NMS "
    "NRS OSL OT OTH OUS PAT PF PHR PHY PT RAD RC RT RUS RX SP SR TX URN VR VUS XRC"
)
# Codes of the code systems the bundle draws on; a coding in one of them with another code is wrong.
CODE_SYSTEMS = {
    V2_0074: set(_V2_0074_CODES.split()),
    OBSERVATION_CATEGORY: {
        "social-history",
        "vital-signs",
        "imaging",
        "laboratory",
        "procedure",
        "survey",
        "exam",
        "therapy",
        "activity",
    },
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type": {
        "enterer",
        "performer",
        "author",
        "verifier",
        "legal",
        "attester",
        "informant",
        "custodian",
        "assembler",
        "composer",
    },
    "http://terminology.hl7.org/CodeSystem/media-type": {"image", "video", "audio"},
    "http://terminology.hl7.org/CodeSystem/data-absent-reason": {
        "unknown",
        "asked-unknown",
        "temp-unknown",
        "not-asked",
        "asked-declined",
        "masked",
        "not-applicable",
        "unsupported",
        "as-text",
        "error",
        "not-a-number",
        "negative-infinity",
        "positive-infinity",
        "not-performed",
        "not-permitted",
    },
    TRIAGE_LEVEL_CODES: {"urgent", "routine", "monitor"},
    OOD_DECISION_CODES: {"accepted", "rejected_ood", "rejected_quality"},
}
# Every quantity in the bundle is a unitless fraction or score.
UCUM_UNITS = {"1"}
_SCTID = re.compile(r"^[1-9][0-9]{5,17}$")
_UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def check_bundle(bundle: dict[str, Any]) -> list[str]:
    """Every broken invariant of the bundle, in words; [] when there is none."""
    if bundle.get("resourceType") != "Bundle":
        return [f"resourceType is {bundle.get('resourceType')!r}, not 'Bundle'"]
    problems: list[str] = []
    bundle_type = bundle.get("type")
    if bundle_type not in BUNDLE_TYPES:
        problems.append(f"Bundle.type {bundle_type!r} is not a bundle type")
    entries = bundle.get("entry") or []
    types_by_url: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"entry[{index}]"
        resource = entry.get("resource")
        if not isinstance(resource, dict) or "resourceType" not in resource:
            problems.append(f"{where} has no resource")
            continue
        full_url = entry.get("fullUrl")
        problems += _full_url_problems(where, full_url, resource)
        if isinstance(full_url, str):
            if full_url in types_by_url:
                problems.append(f"{where}: fullUrl {full_url} appears twice")
            types_by_url[full_url] = resource["resourceType"]
        problems += _request_problems(where, entry, bundle_type)
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        where = f"entry[{index}] {resource['resourceType']}"
        problems += _reference_problems(where, resource, types_by_url)
        problems += _code_problems(where, resource)
        problems += _attachment_problems(where, resource)
    problems += _report_problems(entries)
    return problems


def _resources(entries: list[dict[str, Any]], resource_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (entry.get("fullUrl", ""), entry["resource"])
        for entry in entries
        if isinstance(entry.get("resource"), dict) and entry["resource"].get("resourceType") == resource_type
    ]


def _full_url_problems(where: str, full_url: Any, resource: dict[str, Any]) -> list[str]:
    if not isinstance(full_url, str):
        return [f"{where} has no fullUrl"]
    if full_url.startswith("urn:uuid:"):
        text = full_url.removeprefix("urn:uuid:")
        try:
            valid = str(uuid.UUID(text)) == text
        except ValueError:
            valid = False
        return [] if valid else [f"{where}: fullUrl {full_url} is not a urn:uuid: URN of a lowercase UUID"]
    parts = urlsplit(full_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return [f"{where}: fullUrl {full_url} is neither a urn:uuid: URN nor an absolute URL"]
    resource_id = resource.get("id")
    if resource_id and not full_url.endswith(f"/{resource['resourceType']}/{resource_id}"):
        return [f"{where}: fullUrl {full_url} does not end with the resource's type and id"]
    return []


def _request_problems(where: str, entry: dict[str, Any], bundle_type: Any) -> list[str]:
    request = entry.get("request")
    if bundle_type not in {"transaction", "batch"}:
        extra = [key for key in ("request", "response") if key in entry]
        return [f"{where}: a {bundle_type} entry has {key}" for key in extra]
    if not isinstance(request, dict):
        return [f"{where}: a {bundle_type} entry has no request"]
    problems = []
    resource = entry["resource"]
    if request.get("method") not in HTTP_METHODS:
        problems.append(f"{where}: request.method {request.get('method')!r} is not an HTTP method")
    if not request.get("url"):
        problems.append(f"{where}: request has no url")
    elif request.get("method") == "POST" and request["url"] != resource["resourceType"]:
        problems.append(f"{where}: POST url {request['url']!r} is not {resource['resourceType']!r}")
    elif request.get("method") == "PUT":
        problems += _update_problems(where, request["url"], resource)
    condition = request.get("ifNoneExist")
    if condition is not None:
        problems += _condition_problems(where, condition, resource)
    return problems


def _update_problems(where: str, url: str, resource: dict[str, Any]) -> list[str]:
    """A PUT is a conditional update (`Type?identifier=...`, which must find the resource itself,
    or it would replace another) or an update by id (`Type/id` of the resource's own id)."""
    resource_type = resource["resourceType"]
    if url.startswith(f"{resource_type}?"):
        return _condition_problems(where, url.removeprefix(f"{resource_type}?"), resource)
    if resource.get("id") and url == f"{resource_type}/{resource['id']}":
        return []
    return [f"{where}: PUT url {url!r} is neither {resource_type}?<search> nor {resource_type}/<its id>"]


def _condition_problems(where: str, condition: str, resource: dict[str, Any]) -> list[str]:
    """A conditional create must find the very resource it creates, or a retry duplicates it."""
    try:
        pairs = parse_qsl(condition, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return [f"{where}: ifNoneExist {condition!r} is not a search query"]
    if len(pairs) != 1 or pairs[0][0] not in {"identifier", "_tag"}:
        return [f"{where}: ifNoneExist {condition!r} is not one identifier or _tag search"]
    name, token = pairs[0]
    parts = _UNESCAPED_BAR.split(token)
    if len(parts) != 2:
        return [f"{where}: ifNoneExist {condition!r} is not system|value"]
    system, value = (re.sub(r"\\(.)", r"\1", part) for part in parts)
    if name == "identifier":
        own = {(item.get("system"), item.get("value")) for item in resource.get("identifier", [])}
    else:
        own = {(tag.get("system"), tag.get("code")) for tag in resource.get("meta", {}).get("tag", [])}
    if (system, value) not in own:
        return [f"{where}: ifNoneExist {condition!r} does not match the resource's own {name}"]
    return []


def _element_class(annotation: Any) -> type[Any] | None:
    """The FHIR model class of a field (Reference, CodeableConcept, a backbone element), or None
    for a primitive."""
    if hasattr(annotation, "get_model_klass"):
        return typing.cast(type[Any], annotation.get_model_klass())
    for argument in typing.get_args(annotation):
        found = _element_class(argument)
        if found is not None:
            return found
    return None


def _reference_problems(where: str, resource: dict[str, Any], types_by_url: dict[str, str]) -> list[str]:
    problems = []
    model = get_fhir_model_class(resource["resourceType"])
    for path, reference, allowed in _references(model, resource, resource["resourceType"]):
        target = reference.get("reference")
        target_type: str | None
        if target is not None:
            if target not in types_by_url:
                problems.append(f"{where}: {path} -> {target} resolves to no entry's fullUrl")
                continue
            target_type = types_by_url[target]
        elif "identifier" in reference:
            # A logical reference names something outside the bundle; only its type can be checked.
            target_type = reference.get("type")
            if target_type is None:
                continue
        else:
            problems.append(f"{where}: {path} has neither reference nor identifier")
            continue
        if allowed and "Resource" not in allowed and target_type not in allowed:
            problems.append(f"{where}: {path} points at a {target_type}; R4 allows {sorted(allowed)}")
    return problems


def _references(
    model: type[Any], data: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(path, reference, allowed target types) of every Reference in an element, at any depth."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for key, value in data.items():
        field = fields.get(key)
        element = _element_class(field.annotation) if field is not None and key != "contained" else None
        if field is None or element is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            if issubclass(element, Reference):
                allowed = (field.json_schema_extra or {}).get("enum_reference_types", [])
                yield f"{path}.{key}", item, list(allowed)
            else:
                yield from _references(element, item, f"{path}.{key}")


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _code_problems(where: str, resource: dict[str, Any]) -> list[str]:
    problems = []
    resource_type = resource["resourceType"]
    if resource_type in STATUSES and resource.get("status") not in STATUSES[resource_type]:
        problems.append(f"{where}: status {resource.get('status')!r} is not a {resource_type} status")
    for element in _walk(resource):
        system, code = element.get("system"), element.get("code")
        if "valueQuantity" in element:
            problems += _quantity_problems(where, element["valueQuantity"])
        if not isinstance(system, str) or code is None:
            continue
        if system in CODE_SYSTEMS and code not in CODE_SYSTEMS[system]:
            problems.append(f"{where}: code {code!r} is not in {system}")
        if system == SNOMED and not _SCTID.match(str(code)):
            problems.append(f"{where}: {code!r} is not a SNOMED CT identifier")
    if resource_type == "Observation":
        categories = _codings(resource.get("category", []), OBSERVATION_CATEGORY)
        if not categories:
            problems.append(f"{where}: no category from {OBSERVATION_CATEGORY}")
        problems += _observation_value_problems(where, resource)
    return problems


def _quantity_problems(where: str, quantity: dict[str, Any]) -> list[str]:
    problems = []
    value = quantity.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        problems.append(f"{where}: quantity value {value!r} is not a finite number")
    if quantity.get("system") != UCUM:
        problems.append(f"{where}: quantity system {quantity.get('system')!r} is not UCUM")
    elif quantity.get("code") not in UCUM_UNITS or quantity.get("unit") not in UCUM_UNITS:
        problems.append(f"{where}: UCUM unit {quantity.get('code')!r}/{quantity.get('unit')!r} is not '1'")
    return problems


def _codings(concepts: Any, system: str) -> list[str]:
    items = concepts if isinstance(concepts, list) else [concepts]
    return [
        coding.get("code")
        for concept in items
        if isinstance(concept, dict)
        for coding in concept.get("coding", [])
        if coding.get("system") == system
    ]


def _observation_value_problems(where: str, observation: dict[str, Any]) -> list[str]:
    problems = []
    code = observation.get("code", {})
    if _codings(code, LESION_CLASS_CODES):
        value = observation.get("valueQuantity", {}).get("value")
        if "valueQuantity" in observation and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            problems.append(f"{where}: class probability {value!r} is outside [0, 1]")
    if "triage-level" in _codings(code, LOCAL_CODES):
        levels = _codings(observation.get("valueCodeableConcept", {}), TRIAGE_LEVEL_CODES)
        if len(levels) != 1:
            problems.append(f"{where}: the triage Observation has no single triage-level code")
    if "ood-verdict" in _codings(code, LOCAL_CODES):
        decisions = _codings(observation.get("valueCodeableConcept", {}), OOD_DECISION_CODES)
        if len(decisions) != 1:
            problems.append(f"{where}: the verdict Observation has no single decision code")
    return problems


def _attachment_problems(where: str, resource: dict[str, Any]) -> list[str]:
    problems = []
    attachments = [resource.get("content")] if resource["resourceType"] == "Media" else []
    attachments += resource.get("presentedForm", [])
    for attachment in attachments:
        if not isinstance(attachment, dict):
            problems.append(f"{where}: attachment missing")
            continue
        if not attachment.get("contentType"):
            problems.append(f"{where}: attachment has no contentType")
        try:
            data = base64.b64decode(attachment.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{where}: attachment data is not base64")
            continue
        if "size" in attachment and attachment["size"] != len(data):
            problems.append(f"{where}: attachment size {attachment['size']} is not {len(data)}")
        if "hash" in attachment:
            sha1 = base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii")
            if attachment["hash"] != sha1:
                problems.append(f"{where}: attachment hash is not the base64 SHA-1 of its data")
    return problems


def _report_problems(entries: list[dict[str, Any]]) -> list[str]:
    reports = _resources(entries, "DiagnosticReport")
    if len(reports) != 1:
        return [f"the bundle has {len(reports)} DiagnosticReports, not 1"]
    _, report = reports[0]
    problems = []
    if "IMG" not in _codings(report.get("category", []), V2_0074):
        problems.append("DiagnosticReport.category lacks v2-0074 IMG")
    if DERMATOSCOPY not in _codings(report.get("code", {}), SNOMED):
        problems.append(f"DiagnosticReport.code lacks SNOMED CT {DERMATOSCOPY}")
    if report.get("status") == "final" and not report.get("resultsInterpreter"):
        # SkinTriage's report is final only once a clinician signed it off: it must say who.
        problems.append("a final DiagnosticReport names no resultsInterpreter")
    in_result = {item.get("reference") for item in report.get("result", [])}
    for full_url, _ in _resources(entries, "Observation"):
        if full_url not in in_result:
            problems.append(f"Observation {full_url} is not in DiagnosticReport.result")
    return problems
