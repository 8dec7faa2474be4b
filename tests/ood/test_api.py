"""POST /v1/score, /healthz and /readyz end to end on the tiny bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from contracts.bundle import BundleManifest
from contracts.ood import OodScoreResponse
from model_bundle.loader import BundleError
from services.ood.api.app import create_app
from services.ood.config import Settings
from tests.ood.conftest import TOKEN

AUTH = {"X-Internal-Token": TOKEN}


def _body(manifest: BundleManifest, **changes: Any) -> dict[str, Any]:
    logits = [0.0] * len(manifest.classes)
    logits[0] = 9.0
    body: dict[str, Any] = {
        "model_sha256": manifest.onnx_sha256,
        "logits": logits,
        "embedding": [0.5] * manifest.io.embedding_dim,
        "tenant_id": "tenant-a",
    }
    return body | changes


def _code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_score_accepts_a_confident_output(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest), headers=AUTH)

    assert response.status_code == 200
    verdict = OodScoreResponse.model_validate(response.json())
    assert verdict.decision == "accepted"
    assert verdict.thresholds["msp_min"] == manifest.ood.msp_min
    assert verdict.thresholds["entropy_max"] == manifest.ood.entropy_max


def test_score_rejects_a_flat_output_as_ood(client: TestClient, manifest: BundleManifest) -> None:
    flat = [0.0] * len(manifest.classes)

    response = client.post("/v1/score", json=_body(manifest, logits=flat), headers=AUTH)

    assert response.status_code == 200
    assert response.json()["decision"] == "rejected_ood"
    assert response.json()["rule"] == "msp+entropy"


def test_score_applies_the_quality_gate(client: TestClient, manifest: BundleManifest) -> None:
    quality = {
        "width": 600,
        "height": 450,
        "brightness_mean": 12.0,
        "underexposed_fraction": 0.9,
        "overexposed_fraction": 0.0,
        "laplacian_variance": 1.0,
        "contrast_std": 2.0,
        "dominant_fraction": 0.95,
        "colourfulness": 1.0,
    }

    response = client.post("/v1/score", json=_body(manifest, quality=quality), headers=AUTH)

    assert response.json()["decision"] == "rejected_quality"
    assert response.json()["reasons"] == ["too_dark"]


def test_sha_of_another_model_is_409_model_mismatch(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest, model_sha256="0" * 64), headers=AUTH)

    assert response.status_code == 409
    assert _code(response) == "ood.model_mismatch"


def test_missing_internal_token_is_401(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest))

    assert response.status_code == 401
    assert _code(response) == "auth.internal_token_invalid"


def test_wrong_internal_token_is_401(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest), headers={"X-Internal-Token": "wrong"})

    assert response.status_code == 401
    assert _code(response) == "auth.internal_token_invalid"


def test_logits_of_the_wrong_length_are_422_bad_logits(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest, logits=[1.0, 2.0, 3.0]), headers=AUTH)

    assert response.status_code == 422
    assert _code(response) == "ood.bad_logits"
    assert response.json()["error"]["details"] == {"expected": len(manifest.classes), "received": 3}


def test_embedding_of_the_wrong_length_is_422_bad_embedding(
    client: TestClient, manifest: BundleManifest
) -> None:
    response = client.post("/v1/score", json=_body(manifest, embedding=[1.0]), headers=AUTH)

    assert response.status_code == 422
    assert _code(response) == "ood.bad_embedding"


def test_incomplete_quality_is_422_bad_quality(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest, quality={"width": 10.0}), headers=AUTH)

    assert response.status_code == 422
    assert _code(response) == "ood.bad_quality"


def test_body_not_matching_the_schema_is_422_request_invalid(client: TestClient) -> None:
    response = client.post("/v1/score", json={"logits": "nope"}, headers=AUTH)

    assert response.status_code == 422
    assert _code(response) == "request.invalid"
    assert any(item["loc"][-1] == "model_sha256" for item in response.json()["error"]["details"])


def test_error_body_carries_the_callers_request_id(client: TestClient, manifest: BundleManifest) -> None:
    response = client.post("/v1/score", json=_body(manifest), headers={"X-Request-ID": "req-77"})

    assert response.json()["error"]["request_id"] == "req-77"
    assert response.headers["X-Request-ID"] == "req-77"


def test_unknown_route_is_an_error_body_404(client: TestClient) -> None:
    response = client.get("/v2/nothing")

    assert response.status_code == 404
    assert _code(response) == "route.not_found"


def test_healthz_answers_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_names_the_loaded_bundle(client: TestClient, manifest: BundleManifest) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["model"]["sha256"] == manifest.onnx_sha256


def test_readyz_is_503_before_the_bundle_is_loaded(ood_settings: Settings) -> None:
    app = create_app(ood_settings)

    response = TestClient(app).get("/readyz")  # no `with`: lifespan has not run

    assert response.status_code == 503
    assert _code(response) == "service.not_ready"


def test_unexpected_error_is_500_internal_without_internals(ood_settings: Settings) -> None:
    app = create_app(ood_settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")

    assert response.status_code == 500
    assert _code(response) == "internal"
    assert "secret" not in response.text


def test_start_up_fails_without_a_bundle(tmp_path: Path) -> None:
    app = create_app(Settings(bundle_dir=tmp_path, internal_token=TOKEN))

    with pytest.raises(BundleError), TestClient(app):
        pass


@pytest.mark.parametrize("token", ["", "change-me", "<token>"])
def test_empty_or_placeholder_internal_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError):
        Settings(internal_token=token)


def test_quality_thresholds_are_read_from_ood_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_INTERNAL_TOKEN", TOKEN)
    monkeypatch.setenv("OOD_QUALITY_MIN_SIDE_PX", "300")

    settings = Settings()  # type: ignore[call-arg]  # from the environment

    assert settings.quality_thresholds().min_side_px == 300
