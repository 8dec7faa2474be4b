"""Start SkinTriage's embedded fleet (`make run`): reports, ood, gateway and one Celery worker as
separate local processes, with no Docker, PostgreSQL or Redis.

Defaults are the embedded ones from docs/ARCHITECTURE.md (SQLite database, kombu's SQLAlchemy
broker on SQLite, under var/); any setting already in the environment wins, so
`REPORTS_DATABASE_URL=postgresql+psycopg://... SKINTRIAGE_BROKER_URL=redis://... make run` runs the
same processes on production backends. This is a process launcher, not a scheduler: if any child
dies, it stops the others and exits non-zero.

  python scripts/run_fleet.py            migrate, ensure the demo API keys, run until Ctrl-C
  python scripts/run_fleet.py --check    the same, but exit 0 once every process is ready
  python scripts/run_fleet.py migrate    only run the migrations
  python scripts/run_fleet.py api-key [--tenant NAME]   print a new API key for a tenant
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's console scripts: uvicorn, celery, alembic
DEFAULT_BUNDLE = "models/skintriage-effnet-lite0/2.0.1"
DEMO_TENANT = "demo"
# The demo tenant's users: a clinician (var/demo-api-key: the dashboard's sign-off works with it)
# and an admin (var/demo-admin-api-key: users, keys, the audit trail, monitoring).
DEMO_CLINICIAN = ("Demo Clinician", "clinician", "demo-api-key")
DEMO_ADMIN = ("Demo Admin", "admin", "demo-admin-api-key")
INTERNAL_TOKEN_VARS = (
    "GATEWAY_INTERNAL_TOKEN",
    "OOD_INTERNAL_TOKEN",
    "REPORTS_INTERNAL_TOKEN",
    "INFERENCE_INTERNAL_TOKEN",
)
READY_TIMEOUT_S = 180.0  # the first start compiles nothing but loads the ONNX bundle twice
STOP_TIMEOUT_S = 20.0  # Celery's warm shutdown finishes the task in hand
# Celery logs "celery@HOST ready." once the worker consumes (inside a JSON line or plain text).
WORKER_READY = re.compile(r"celery@\S+ ready\.")


def log(message: str) -> None:
    """The launcher's own lines, distinguishable from the children's."""
    print(f"[fleet] {message}", flush=True)


@dataclass(frozen=True)
class Layout:
    """Where the embedded fleet keeps its state, and which ports it uses."""

    var_dir: Path
    base_port: int

    @property
    def ports(self) -> dict[str, int]:
        """gateway, ood and reports on three consecutive ports (8000, 8001, 8002 by default)."""
        return {"gateway": self.base_port, "ood": self.base_port + 1, "reports": self.base_port + 2}

    def sqlite_url(self, name: str) -> str:
        """A SQLite URL under var/, relative when var/ is the repository's (as documented)."""
        path = self.var_dir / name
        try:
            return f"sqlite:///{path.relative_to(REPO_ROOT)}"
        except ValueError:
            return f"sqlite:///{path}"


def internal_token(layout: Layout, environ: Mapping[str, str]) -> str:
    """SKINTRIAGE_INTERNAL_TOKEN, else the one saved in var/internal-token, else a new one (saved)."""
    if environ.get("SKINTRIAGE_INTERNAL_TOKEN"):
        return environ["SKINTRIAGE_INTERNAL_TOKEN"]
    saved = layout.var_dir / "internal-token"
    if saved.is_file() and saved.read_text().strip():
        return saved.read_text().strip()
    token = secrets.token_hex(32)
    saved.touch(mode=0o600)
    saved.write_text(token + "\n")
    return token


# One native math thread per process. NumPy's OpenBLAS otherwise starts a thread per core whose
# workers spin for a while after every matrix product; each OOD score request (a few small
# products) then burnt 40-90 ms of CPU instead of 7 (bench.fleet's cost table, 2 cores). Parallelism
# comes from processes (worker pool, replicas), and ONNX Runtime has its own INFERENCE_ORT_THREADS.
NATIVE_THREAD_LIMITS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def fleet_env(layout: Layout, environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: the caller's, plus embedded defaults for every unset setting."""
    env = dict(environ)
    ports = layout.ports
    token = internal_token(layout, environ)
    broker = environ.get("SKINTRIAGE_BROKER_URL") or "sqla+" + layout.sqlite_url("celery-broker.db")
    defaults = {
        "REPORTS_DATABASE_URL": layout.sqlite_url("skintriage.db"),
        "GATEWAY_REPORTS_URL": f"http://127.0.0.1:{ports['reports']}",
        "GATEWAY_BROKER_URL": broker,
        "OOD_BUNDLE_DIR": DEFAULT_BUNDLE,
        "INFERENCE_BROKER_URL": broker,
        "REPORTS_BROKER_URL": broker,
        "INFERENCE_BUNDLE_DIR": DEFAULT_BUNDLE,
        "INFERENCE_OOD_URL": f"http://127.0.0.1:{ports['ood']}",
        "INFERENCE_REPORTS_URL": f"http://127.0.0.1:{ports['reports']}",
        "INFERENCE_ORT_THREADS": "1",
        **dict.fromkeys(INTERNAL_TOKEN_VARS, token),
    }
    for name, value in defaults.items():
        if not env.get(name):
            env[name] = value
    # The children import the repository's packages whether or not it is pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    for name, value in NATIVE_THREAD_LIMITS.items():
        env.setdefault(name, value)
    return env


@dataclass(frozen=True)
class ProcessSpec:
    """One child: its command (the documented entry point) and how to tell it is ready."""

    name: str
    argv: list[str]
    ready_url: str | None = None
    ready_pattern: re.Pattern[str] | None = None


def usable_cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_specs(layout: Layout, worker_processes: int | None = None) -> list[ProcessSpec]:
    """reports first (the others call it), then ood, the worker and, last, the public gateway.

    The worker runs `worker_processes` Celery processes, by default one per usable core: on 2
    cores 2 processes gave 1.45x (8 clients) and 1.7x (batches) the throughput of 1 on the
    embedded default, 1.28x and 1.36x on PostgreSQL + Redis (bench/README.md)."""
    ports = layout.ports

    def api(name: str) -> ProcessSpec:
        port = ports[name]
        # uvicorn binds 127.0.0.1 by default: the embedded fleet is not reachable from outside.
        argv = [str(BIN / "uvicorn"), "--factory", f"services.{name}.api.app:create_app", "--port", str(port)]
        return ProcessSpec(name, argv, ready_url=f"http://127.0.0.1:{port}/readyz")

    worker_argv = [str(BIN / "celery"), "-A", "services.inference.celery_app:celery_app", "worker"]
    processes = worker_processes or usable_cores()
    worker_argv += ["-Q", "inference", "--concurrency", str(processes)]
    worker = ProcessSpec("worker", worker_argv, ready_pattern=WORKER_READY)
    return [api("reports"), api("ood"), worker, api("gateway")]


def run_migrations(env: Mapping[str, str]) -> None:
    """`alembic -c services/reports/alembic.ini upgrade head`, failing loudly."""
    argv = [str(BIN / "alembic"), "-c", "services/reports/alembic.ini", "upgrade", "head"]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=dict(env), check=False)
    if result.returncode != 0:
        raise SystemExit(f"[fleet] migrations failed (exit {result.returncode})")


def reports_cli(env: Mapping[str, str], *args: str) -> str:
    """Run `python -m services.reports.cli ARGS` and return its stdout."""
    argv = [sys.executable, "-m", "services.reports.cli", *args]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"[fleet] reports cli {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def key_is_live(env: Mapping[str, str], key: str, tenant: str, user: str) -> bool:
    """Whether `key` is an unrevoked key of `user` of `tenant` in this database (list-keys shows
    prefixes; the user's name is its 8th column)."""
    rows = [line.split("\t") for line in reports_cli(env, "list-keys", "--tenant", tenant).splitlines()[1:]]
    return any(len(row) >= 8 and key.startswith(row[2]) and row[4] == "-" and row[7] == user for row in rows)


def ensure_user(env: Mapping[str, str], tenant: str, name: str, role: str) -> None:
    """The tenant (and its user `name` with `role`) exist afterwards; an existing user is kept."""
    reports_cli(env, "create-tenant", tenant)
    rows = [line.split("\t") for line in reports_cli(env, "list-users", "--tenant", tenant).splitlines()[1:]]
    if not any(len(row) >= 2 and row[1] == name for row in rows):
        reports_cli(env, "create-user", "--tenant", tenant, "--name", name, "--role", role)


def demo_api_key(layout: Layout, env: Mapping[str, str], user: tuple[str, str, str] = DEMO_CLINICIAN) -> str:
    """The saved key of a demo user (var/<file>) if this database still knows it as theirs, else a
    new one for them (the user made if needed)."""
    name, role, filename = user
    saved = layout.var_dir / filename
    if saved.is_file():
        key = saved.read_text().strip()
        if key and key_is_live(env, key, DEMO_TENANT, name):
            return key
    ensure_user(env, DEMO_TENANT, name, role)
    key = reports_cli(env, "create-key", "--tenant", DEMO_TENANT, "--user", name).strip().splitlines()[-1]
    saved.touch(mode=0o600)
    saved.write_text(key + "\n")
    return key


@dataclass
class Child:
    """A started child process and the thread that copies its output, prefixed with its name."""

    spec: ProcessSpec
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)

    def pump(self) -> None:
        assert self.process.stdout is not None
        width = 8
        for line in self.process.stdout:
            if self.spec.ready_pattern is not None and self.spec.ready_pattern.search(line):
                self.ready.set()
            sys.stdout.write(f"{self.spec.name:<{width}}| {line}")
            sys.stdout.flush()


def start(spec: ProcessSpec, env: Mapping[str, str]) -> Child:
    """Start a child in its own session, so a terminal's Ctrl-C reaches only the launcher, which
    then stops the children in order."""
    process = subprocess.Popen(
        spec.argv,
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    child = Child(spec, process)
    threading.Thread(target=child.pump, name=f"pump-{spec.name}", daemon=True).start()
    return child


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ChildDiedError(Exception):
    """A child exited while the fleet was meant to be running."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.spec.name} exited with status {child.process.returncode}")
        self.child = child


def check_alive(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is not None:
            raise ChildDiedError(child)


def wait_ready(child: Child, children: list[Child], stopping: Callable[[], bool]) -> None:
    """Block until `child` is ready; raise if any child dies or the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stopping():
        check_alive(children)
        url = child.spec.ready_url
        if (url is not None and http_ok(url)) or child.ready.is_set():
            log(f"{child.spec.name} ready")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.spec.name} not ready after {READY_TIMEOUT_S:.0f}s")
        time.sleep(0.5)


def stop_all(children: list[Child]) -> None:
    """SIGTERM in reverse start order (gateway first: stop intake), then SIGKILL stragglers."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in reversed(children):
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{child.spec.name} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it")
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def run_fleet(
    layout: Layout, env: Mapping[str, str], check: bool, worker_processes: int | None = None
) -> int:
    """Migrate, ensure the demo keys, start every process, wait for readiness, then serve until a
    signal (or, with check, return at once). Returns the exit status."""
    stop_signal: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_signal.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    run_migrations(env)
    api_key = demo_api_key(layout, env, DEMO_CLINICIAN)
    admin_key = demo_api_key(layout, env, DEMO_ADMIN)
    children: list[Child] = []
    status = 0
    try:
        for spec in process_specs(layout, worker_processes):
            log(f"starting {spec.name}: {Path(spec.argv[0]).name} {' '.join(spec.argv[1:])}")
            children.append(start(spec, env))
            wait_ready(children[-1], children, lambda: bool(stop_signal))
        if not stop_signal:
            url = f"http://127.0.0.1:{layout.ports['gateway']}"
            log(f"SkinTriage is up: {url}  (API docs: {url}/docs)")
            clinician_file, admin_file = layout.var_dir / DEMO_CLINICIAN[2], layout.var_dir / DEMO_ADMIN[2]
            log(f"demo tenant API key: {api_key}  (clinician {DEMO_CLINICIAN[0]!r}, {clinician_file})")
            log(f"demo admin API key: {admin_key}  (admin {DEMO_ADMIN[0]!r}, {admin_file})")
            auth = f'-H "Authorization: Bearer {api_key}"'
            log(f'try: curl {auth} -H "Prefer: wait=20" -F "file=@IMAGE.jpg" {url}/v1/images')
        if check:
            log("--check: every process is ready; stopping")
        else:
            while not stop_signal:
                check_alive(children)
                time.sleep(0.5)
    except ChildDiedError as exc:
        log(f"{exc}; stopping the fleet")
        code = exc.child.process.returncode
        # A child killed by a signal reports -N; exit as a shell would (128 + N). Exiting 0 is
        # still a failure: nothing here is meant to stop on its own.
        status = 128 - code if code < 0 else code or 1
    except TimeoutError as exc:
        log(f"{exc}; stopping the fleet")
        status = 1
    finally:
        stop_all(children)
    if stop_signal:
        log(f"stopped on signal {signal.Signals(stop_signal[0]).name}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["run", "migrate", "api-key"], default="run")
    parser.add_argument("--check", action="store_true", help="exit 0 once every process is ready")
    parser.add_argument("--tenant", default=DEMO_TENANT, help="tenant for `api-key` (default: demo)")
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "var", help="state dir (default: var/)")
    parser.add_argument("--base-port", type=int, default=8000, help="gateway port; ood +1, reports +2")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=int(os.environ.get("SKINTRIAGE_WORKER_PROCESSES", "0")) or None,
        help="Celery worker processes (default: $SKINTRIAGE_WORKER_PROCESSES, else one per usable core)",
    )
    args = parser.parse_args(argv)

    layout = Layout(args.var_dir.resolve(), args.base_port)
    layout.var_dir.mkdir(parents=True, exist_ok=True)
    env = fleet_env(layout, os.environ)
    if args.command == "migrate":
        run_migrations(env)
        return 0
    if args.command == "api-key":
        print(reports_cli(env, "create-key", "--tenant", args.tenant).strip())
        return 0
    return run_fleet(layout, env, check=args.check, worker_processes=args.worker_processes)


if __name__ == "__main__":
    sys.exit(main())
