"""POST /v1/score/batch: a worker's micro-batch scored in one call, each item exactly as
POST /v1/score would judge it, a refused item answered in its place (tiny bundle)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from contracts.bundle import BundleManifest
from contracts.ood import MAX_SCORE_BATCH
from tests.ood.conftest import TOKEN
from tests.ood.test_api import _body

AUTH = {"X-Internal-Token": TOKEN}


def test_each_item_gets_the_verdict_the_single_route_gives_it(
    client: TestClient, manifest: BundleManifest
) -> None:
    flat = [0.0] * len(manifest.classes)
    items = [_body(manifest), _body(manifest, logits=flat), _body(manifest)]

    response = client.post("/v1/score/batch", json={"items": items}, headers=AUTH)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["verdict"]["decision"] for r in results] == ["accepted", "rejected_ood", "accepted"]
    for item, result in zip(items, results, strict=True):
        single = client.post("/v1/score", json=item, headers=AUTH).json()
        assert result["verdict"] == single
        assert result["error"] is None


def test_a_refused_item_gets_its_error_and_the_others_their_verdicts(
    client: TestClient, manifest: BundleManifest
) -> None:
    items = [_body(manifest), _body(manifest, embedding=[0.5, 0.5]), _body(manifest, model_sha256="0" * 64)]

    response = client.post("/v1/score/batch", json={"items": items}, headers=AUTH)

    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["verdict"]["decision"] == "accepted"
    assert results[1]["verdict"] is None and results[1]["error"]["code"] == "ood.bad_embedding"
    assert (
        results[2]["error"]["code"]
        == client.post("/v1/score", json=items[2], headers=AUTH).json()["error"]["code"]
    )


def test_an_empty_or_oversized_batch_and_a_missing_token_are_refused(
    client: TestClient, manifest: BundleManifest
) -> None:
    assert client.post("/v1/score/batch", json={"items": []}, headers=AUTH).status_code == 422
    too_many = [_body(manifest)] * (MAX_SCORE_BATCH + 1)
    assert client.post("/v1/score/batch", json={"items": too_many}, headers=AUTH).status_code == 422
    assert client.post("/v1/score/batch", json={"items": [_body(manifest)]}).status_code == 401
