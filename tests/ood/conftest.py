"""The OOD app on the tiny bundles, through FastAPI's TestClient (lifespan included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from services.ood.api.app import create_app
from services.ood.config import Settings

TOKEN = "ood-test-internal-token-0123456789"


@pytest.fixture
def ood_settings(tiny_bundle_dir: Path) -> Settings:
    """OOD settings on the tiny bundle."""
    return Settings(bundle_dir=tiny_bundle_dir, internal_token=TOKEN)


@pytest.fixture
def manifest(tiny_bundle_dir: Path) -> BundleManifest:
    """The tiny bundle's manifest."""
    return load_manifest(tiny_bundle_dir)


@pytest.fixture
def client(ood_settings: Settings) -> Iterator[TestClient]:
    """A client of a started app (the bundle loaded in lifespan)."""
    with TestClient(create_app(ood_settings)) as started:
        yield started
