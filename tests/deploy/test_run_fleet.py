"""scripts/run_fleet.py (`make run`): the embedded defaults, overrides from the environment, the
documented commands, and (e2e) the real fleet starting, becoming ready and stopping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fleet_runner import free_base_port
from scripts.run_fleet import (
    INTERNAL_TOKEN_VARS,
    Layout,
    ProcessSpec,
    fleet_env,
    process_specs,
    usable_cores,
)
from tests.deploy.architecture_doc import REPO_ROOT, check_command, services

PROCESS_FOR = {"reports": "reports", "ood": "ood", "gateway": "gateway", "worker": "worker"}


def _layout(tmp_path: Path, base_port: int = 8000) -> Layout:
    return Layout(tmp_path / "var", base_port)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = _layout(tmp_path)
    lay.var_dir.mkdir()
    return lay


def test_defaults_are_the_documented_embedded_backends(tmp_path: Path) -> None:
    lay = Layout(REPO_ROOT / "var", 8000)
    lay.var_dir.mkdir(exist_ok=True)
    env = fleet_env(lay, {"SKINTRIAGE_INTERNAL_TOKEN": "t" * 64})
    assert env["REPORTS_DATABASE_URL"] == "sqlite:///var/skintriage.db"
    assert env["GATEWAY_BROKER_URL"] == env["INFERENCE_BROKER_URL"] == "sqla+sqlite:///var/celery-broker.db"
    assert env["OOD_BUNDLE_DIR"] == env["INFERENCE_BUNDLE_DIR"] == "models/skintriage-effnet-lite0/2.0.1"
    assert env["GATEWAY_REPORTS_URL"] == env["INFERENCE_REPORTS_URL"] == "http://127.0.0.1:8002"
    assert env["INFERENCE_OOD_URL"] == "http://127.0.0.1:8001"


def test_every_service_setting_it_sets_is_a_documented_name(layout: Layout) -> None:
    documented = set().union(*(row.env for row in services().values()))
    env = fleet_env(layout, {})
    prefixes = ("GATEWAY_", "OOD_", "REPORTS_", "INFERENCE_")
    assert {k for k in env if k.startswith(prefixes)} <= documented


def test_environment_overrides_switch_to_production_backends(layout: Layout) -> None:
    pg = "postgresql+psycopg://skintriage:pw@db.example:5432/skintriage"
    env = fleet_env(layout, {"REPORTS_DATABASE_URL": pg, "SKINTRIAGE_BROKER_URL": "redis://cache:6379/0"})
    assert env["REPORTS_DATABASE_URL"] == pg
    assert env["GATEWAY_BROKER_URL"] == env["INFERENCE_BROKER_URL"] == "redis://cache:6379/0"
    assert fleet_env(layout, {"INFERENCE_ORT_THREADS": "4"})["INFERENCE_ORT_THREADS"] == "4"


def test_native_math_runs_one_thread_per_process_unless_the_caller_says_otherwise(layout: Layout) -> None:
    env = fleet_env(layout, {})
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert fleet_env(layout, {"OPENBLAS_NUM_THREADS": "2"})["OPENBLAS_NUM_THREADS"] == "2"


def test_a_generated_internal_token_is_shared_saved_and_reused(layout: Layout) -> None:
    first = fleet_env(layout, {})
    tokens = {first[name] for name in INTERNAL_TOKEN_VARS}
    assert len(tokens) == 1 and len(tokens.pop()) == 64
    saved = layout.var_dir / "internal-token"
    assert saved.stat().st_mode & 0o077 == 0  # readable by the owner only
    assert fleet_env(layout, {})["GATEWAY_INTERNAL_TOKEN"] == first["GATEWAY_INTERNAL_TOKEN"]


def test_an_explicit_internal_token_wins(layout: Layout) -> None:
    env = fleet_env(layout, {"SKINTRIAGE_INTERNAL_TOKEN": "x" * 40})
    assert {env[name] for name in INTERNAL_TOKEN_VARS} == {"x" * 40}


def test_ports_follow_the_base_port(tmp_path: Path) -> None:
    env = fleet_env(_layout(tmp_path, 9100), {"SKINTRIAGE_INTERNAL_TOKEN": "t" * 64})
    assert env["GATEWAY_REPORTS_URL"] == "http://127.0.0.1:9102"
    assert env["INFERENCE_OOD_URL"] == "http://127.0.0.1:9101"


def test_children_run_the_documented_commands_from_the_venv(tmp_path: Path) -> None:
    specs = {spec.name: spec for spec in process_specs(_layout(tmp_path))}
    assert list(specs) == ["reports", "ood", "worker", "gateway"]
    for name, spec in specs.items():
        assert Path(spec.argv[0]).parent == Path(sys.executable).parent
        assert check_command(PROCESS_FOR[name], [Path(spec.argv[0]).name, *spec.argv[1:]]) == []
        if name != "worker":
            assert spec.ready_url == f"http://127.0.0.1:{services()[name].port}/readyz"


def test_the_worker_runs_one_process_per_usable_core_unless_told(tmp_path: Path) -> None:
    def processes(specs: list[ProcessSpec]) -> int:
        argv = next(spec.argv for spec in specs if spec.name == "worker")
        return int(argv[argv.index("--concurrency") + 1])

    assert processes(process_specs(_layout(tmp_path))) == len(os.sched_getaffinity(0)) == usable_cores()
    assert processes(process_specs(_layout(tmp_path), 3)) == 3


def _free_base_port() -> int:
    """A port p with p, p+1 and p+2 free on loopback (below the ephemeral range, as the fleet's)."""
    return free_base_port()


@pytest.mark.e2e
def test_check_starts_the_whole_fleet_waits_for_readiness_and_stops(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    # The tiny test bundle stands in for the shipped one, so this runs before a model is trained.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OOD_BUNDLE_DIR": str(tiny_bundle_dir),
        "INFERENCE_BUNDLE_DIR": str(tiny_bundle_dir),
    }
    argv = [sys.executable, "scripts/run_fleet.py", "--check", "--var-dir", str(tmp_path / "var")]
    argv += ["--base-port", str(_free_base_port())]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for name in ("reports", "ood", "worker", "gateway"):
        assert f"[fleet] {name} ready" in output
    key = (tmp_path / "var" / "demo-api-key").read_text().strip()
    assert key and f"demo tenant API key: {key}" in output
    admin_key = (tmp_path / "var" / "demo-admin-api-key").read_text().strip()
    assert admin_key and admin_key != key and f"demo admin API key: {admin_key}" in output

    # A second start reuses the saved key instead of minting another.
    argv[argv.index("--base-port") + 1] = str(_free_base_port())
    again = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert (tmp_path / "var" / "demo-api-key").read_text().strip() == key
    assert (tmp_path / "var" / "demo-admin-api-key").read_text().strip() == admin_key


@pytest.mark.e2e
def test_a_child_that_dies_stops_the_fleet_with_a_failure(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OOD_BUNDLE_DIR": str(tmp_path / "no-such-bundle"),  # ood refuses to start without its bundle
        "INFERENCE_BUNDLE_DIR": str(tiny_bundle_dir),
    }
    argv = [sys.executable, "scripts/run_fleet.py", "--check", "--var-dir", str(tmp_path / "var")]
    argv += ["--base-port", str(_free_base_port())]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "[fleet] ood exited with status" in result.stdout
