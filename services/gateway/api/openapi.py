"""The gateway's OpenAPI document as FastAPI writes it, with multipart bodies as they travel.

FastAPI documents an optional form field (`int | None = Form(None)`) as `anyOf: [integer, null]`.
A multipart part is sent or left out and has no null: a client (or Schemathesis) that sends the
documented `null` sends the text "null", which the route then refuses. So in every
`multipart/form-data` body an optional field is documented as its value alone, not required.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI

_NULL = {"type": "null"}
_COMPONENT_PREFIX = "#/components/schemas/"


def install_openapi(app: FastAPI) -> None:
    """Serve `/openapi.json` with the multipart bodies rewritten (computed once, then cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's own, cached on the app after the first call
        for body in _multipart_bodies(document):
            properties = body.get("properties", {})
            for name, schema in properties.items():
                properties[name] = _without_null(schema)
        return document

    # FastAPI's documented way to change the document: replace the app's `openapi` method.
    app.openapi = openapi  # type: ignore[method-assign]


def _multipart_bodies(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    components = document.get("components", {}).get("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("multipart/form-data", {}).get("schema")
            if schema is None:
                continue
            ref = schema.get("$ref", "")
            yield components[ref.removeprefix(_COMPONENT_PREFIX)] if ref else schema


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` plus annotations -> X with the annotations; anything else unchanged."""
    alternatives = schema.get("anyOf")
    if not isinstance(alternatives, list) or len(alternatives) != 2 or _NULL not in alternatives:
        return schema
    (value,) = (alternative for alternative in alternatives if alternative != _NULL)
    return {**value, **{key: item for key, item in schema.items() if key != "anyOf"}}
