"""The internal services' API description, for operators only: `/docs` and `/redoc` are off, and
`/openapi.json` answers only a caller with the internal token (issue 10: reports and ood served
their whole API description to anyone who could reach them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI


def internal_fastapi(title: str, guard: Callable[..., None], **kwargs: Any) -> FastAPI:
    """A FastAPI app without public docs whose `/openapi.json` requires `guard` (the service's
    internal-token dependency)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, **kwargs)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(guard)])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    return app
