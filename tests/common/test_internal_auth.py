"""The one X-Internal-Token dependency, through a tiny app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.common.internal_auth import INTERNAL_TOKEN_HEADER, token_matches
from tests.common.conftest import TOKEN, TinySettings, create_tiny_app, get_settings


def test_the_shared_token_is_admitted(client: TestClient) -> None:
    response = client.get("/internal", headers={INTERNAL_TOKEN_HEADER: TOKEN})

    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {INTERNAL_TOKEN_HEADER: ""}, {INTERNAL_TOKEN_HEADER: TOKEN + "x"}])
def test_missing_or_wrong_token_is_401_auth_internal_token_invalid(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/internal", headers={**headers, "X-Request-ID": "req-auth"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.internal_token_invalid"
    assert response.json()["error"]["request_id"] == "req-auth"
    assert TOKEN not in response.text


def test_the_guard_reads_the_token_through_the_services_settings_dependency() -> None:
    app = create_tiny_app()
    app.dependency_overrides[get_settings] = lambda: TinySettings(
        internal_token=SecretStr("other-token-0123")
    )

    with TestClient(app) as client:
        assert client.get("/internal", headers={INTERNAL_TOKEN_HEADER: TOKEN}).status_code == 401
        assert client.get("/internal", headers={INTERNAL_TOKEN_HEADER: "other-token-0123"}).status_code == 200


def test_token_matches_only_the_exact_token() -> None:
    expected = SecretStr(TOKEN)

    assert token_matches(TOKEN, expected)
    assert not token_matches(None, expected)
    assert not token_matches(TOKEN.upper(), expected)
    assert not token_matches(TOKEN[:-1], expected)
