"""A service's one settings object, stored on the app by `create_app` and read per request by a
dependency. Not `app.dependency_overrides[get_settings]`: while any override is installed, FastAPI
rebuilds the dependant of every sub-dependency of every request (pydantic schemas included), which
cost 8% of the gateway's CPU per image (py-spy, bench/README.md)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request


def install_settings(app: FastAPI, settings: object) -> None:
    """Make `settings` the object `app_settings` answers for this app's requests."""
    app.state.settings = settings


def app_settings(request: Request) -> Any:
    """The settings installed on the request's app (each service wraps this with its own type)."""
    return request.app.state.settings
