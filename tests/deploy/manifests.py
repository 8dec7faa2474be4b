"""Load the deployment files under test: the k8s manifests (every YAML document under k8s/) and
the resolved docker-compose model."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.architecture_doc import REPO_ROOT
from tests.deploy.compose_tool import run_compose

K8S_DIR = REPO_ROOT / "k8s"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Sentinels for the two required compose variables, to see where their values land.
COMPOSE_ENV = {
    "SKINTRIAGE_INTERNAL_TOKEN": "sentinel-internal-token",
    "POSTGRES_PASSWORD": "sentinel-pg-password",
}

Doc = dict[str, Any]


def k8s_files() -> list[Path]:
    """Every manifest file (kustomization files are kustomize's input, not API objects)."""
    return sorted(p for p in K8S_DIR.rglob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_documents() -> tuple[tuple[Path, Doc], ...]:
    """(file, object) for every non-empty YAML document under k8s/."""
    return tuple((path, doc) for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc)


def k8s_objects(kind: str, base_only: bool = True) -> dict[str, Doc]:
    """name -> object of one kind (by default only the base that `kubectl apply -k k8s` applies)."""
    base = K8S_DIR / "base"
    return {
        doc["metadata"]["name"]: doc
        for path, doc in k8s_documents()
        if doc["kind"] == kind and (not base_only or path.parent == base)
    }


def compose_env(**overrides: str) -> dict[str, str]:
    """A minimal environment for the compose binary: PATH and HOME plus the given variables."""
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env.update(overrides)
    return env


@cache
def compose_model() -> Doc:
    """The compose file as Compose itself resolves it (anchors merged, variables interpolated)."""
    result = run_compose(["config", "--format", "json"], REPO_ROOT, compose_env(**COMPOSE_ENV))
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert isinstance(model, dict)
    return model


def compose_raw() -> Doc:
    """The compose file as written (YAML merge keys resolved, variables not interpolated)."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc
