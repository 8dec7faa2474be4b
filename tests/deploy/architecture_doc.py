"""The facts that deployment files must agree with, read from docs/ARCHITECTURE.md itself (so a
change to the doc without the deploy files, or the reverse, fails a test)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO_ROOT / "docs" / "ARCHITECTURE.md"

# The doc's entry-point rows, by the name deployment files give each process.
ENTRY_POINT_ROWS = {
    "migrate": "reports migrations",
    "reports": "reports API",
    "ood": "ood API",
    "gateway": "gateway API",
    "worker": "inference worker",
}
# Deployment process -> the settings row (env prefix) it reads. The migration reads reports' settings.
SETTINGS_ROW = {
    "gateway": "gateway",
    "ood": "ood",
    "reports": "reports",
    "migrate": "reports",
    "worker": "inference",
}


@dataclass(frozen=True)
class ServiceRow:
    """One row of the 'Ports and environment' table."""

    name: str
    port: int | None
    env: frozenset[str]


def _table_rows(text: str, header: str) -> list[list[str]]:
    """Cells of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@cache
def services() -> dict[str, ServiceRow]:
    """service name -> its documented port and env names."""
    rows = _table_rows(ARCHITECTURE.read_text(), "| service | port |")
    out = {}
    for name, port, settings in rows:
        env = frozenset(re.findall(r"`([A-Z][A-Z0-9_]+)`", settings))
        out[name] = ServiceRow(name, int(port) if port.isdigit() else None, env)
    return out


@cache
def entry_points() -> dict[str, list[str]]:
    """Deployment process name -> the documented command as argv."""
    rows = {label: cmd for label, cmd in _table_rows(ARCHITECTURE.read_text(), "| process | command |")}
    return {proc: shlex.split(rows[label].strip("`")) for proc, label in ENTRY_POINT_ROWS.items()}


def env_names_for(process: str) -> frozenset[str]:
    """The env names the doc allows for a deployment process (worker -> inference's)."""
    return services()[SETTINGS_ROW[process]].env


def check_command(process: str, command: list[str]) -> list[str]:
    """Differences between a deployment's command and the documented one. The liberties: a
    container binds all interfaces (`--host 0.0.0.0`: uvicorn binds loopback otherwise), and the
    worker's process count (`--concurrency N`) is the deployment's: containers run 1 and scale
    by replicas, `make run` one per usable core."""
    documented = _any_process_count(entry_points()[process])
    rest = _any_process_count(list(command))
    if "--host" in rest:
        i = rest.index("--host")
        if rest[i + 1 : i + 2] != ["0.0.0.0"]:
            return [f"{process}: --host must be 0.0.0.0, got {rest[i + 1 : i + 2]}"]
        del rest[i : i + 2]
    return [] if rest == documented else [f"{process}: {command} is not the documented {documented}"]


def _any_process_count(argv: list[str]) -> list[str]:
    """`--concurrency <positive integer>` -> `--concurrency N`; anything else stays as it is."""
    out = list(argv)
    if "--concurrency" in out:
        i = out.index("--concurrency")
        if out[i + 1 : i + 2] and out[i + 1].isdigit() and int(out[i + 1]) > 0:
            out[i + 1] = "N"
    return out
