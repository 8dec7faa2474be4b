"""The serving image installs only pyproject's base dependencies (`pip install .`): the code it
copies (contracts/, model_bundle/, services/) must import nothing else, or a container would die
at start-up with a ModuleNotFoundError that no test on a developer venv (which has the `train`
and `dev` extras) would notice."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections import deque
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.architecture_doc import REPO_ROOT

SERVING_PACKAGES = ("contracts", "model_bundle", "services")


@cache
def base_dependency_closure() -> frozenset[str]:
    """Canonical names of every distribution `pip install .` brings in (extras as requested)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    queue = deque(Requirement(r) for r in project["dependencies"])
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while queue:
        req = queue.popleft()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (a platform-specific dependency); nothing to expand
        for raw in requires:
            sub = Requirement(raw)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                queue.append(sub)
    return frozenset(names)


def _imported_top_levels(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@cache
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def foreign_imports(path: Path) -> dict[str, list[str]]:
    """Imports in `path` that no distribution of the base closure provides -> their providers."""
    closure = base_dependency_closure()
    foreign = {}
    for name in _imported_top_levels(path):
        if name in sys.stdlib_module_names or name in SERVING_PACKAGES or name == "__future__":
            continue
        provided_by = {canonicalize_name(d) for d in _distributions().get(name, [])}
        if not provided_by & closure:
            foreign[name] = sorted(provided_by) or ["(not installed)"]
    return foreign


def _serving_files() -> list[Path]:
    return sorted(p for pkg in SERVING_PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py"))


def test_the_base_closure_is_what_serving_needs_and_no_more() -> None:
    closure = base_dependency_closure()
    assert {"fastapi", "onnxruntime", "celery", "redis", "psycopg", "sqlalchemy"} <= closure
    assert not {"torch", "scikit-learn", "matplotlib", "pytest"} & closure


def test_a_training_import_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "leaky.py"
    module.write_text("import json\nimport torch\nfrom sklearn.metrics import f1_score\nimport fastapi\n")
    assert set(foreign_imports(module)) == {"torch", "sklearn"}


@pytest.mark.parametrize("path", _serving_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_serving_code_imports_only_base_dependencies(path: Path) -> None:
    assert foreign_imports(path) == {}, "imports outside `pip install .`"
