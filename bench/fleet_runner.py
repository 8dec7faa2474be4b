"""Start the whole SkinTriage fleet as real OS processes for the end-to-end tests
(tests/e2e) and the fleet benchmark (bench/fleet.py).

The commands, the environment and the readiness checks are those of the `make run` launcher
(scripts/run_fleet.py); what this adds is what a test or a benchmark needs around them: backends
of their own (a fresh PostgreSQL database and a flushed Redis database, or SQLite files in a
scratch folder), free loopback ports, a log file per process, API keys for several tenants, and
a teardown that always ends every process group it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from scripts.run_fleet import (
    READY_TIMEOUT_S,
    REPO_ROOT,
    Layout,
    ProcessSpec,
    fleet_env,
    http_ok,
    process_specs,
    reports_cli,
    run_migrations,
)

# The children's settings come only from the fleet, never from the caller's shell.
_SERVICE_PREFIXES = ("GATEWAY_", "OOD_", "REPORTS_", "INFERENCE_", "SKINTRIAGE_")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STOP_TIMEOUT_S = 20.0  # Celery's warm shutdown finishes the task in hand
LOG_TAIL_CHARS = 4000


class FleetError(RuntimeError):
    """The fleet could not be started (a step failed, a process died or never became ready)."""


@dataclass(frozen=True)
class Backends:
    """Where the fleet keeps its data and queues its tasks."""

    name: str
    database_url: str
    broker_url: str


def embedded_backends(directory: Path) -> Backends:
    """The `make run` default: a SQLite database and kombu's SQLAlchemy broker on SQLite."""
    directory.mkdir(parents=True, exist_ok=True)
    return Backends(
        "embedded",
        f"sqlite:///{directory / 'skintriage.db'}",
        f"sqla+sqlite:///{directory / 'celery-broker.db'}",
    )


def require_loopback(url: str) -> None:
    """Refuse a server that is not on this machine: tests and benchmarks never leave loopback."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise FleetError(f"{host!r} is not a loopback address")


@contextmanager
def fresh_postgres_database(admin_url: str, prefix: str = "skintriage_e2e") -> Iterator[str]:
    """A new, empty database `<prefix>_<random>` on the server of `admin_url` (which names an
    existing database to connect to); yields its URL (same driver) and drops it afterwards."""
    require_loopback(admin_url)
    admin = make_url(admin_url)
    name = f"{prefix}_{secrets.token_hex(6)}"
    libpq = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            # FORCE (PostgreSQL 13+) ends connections a killed process may have left behind.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def flushed_redis_database(url: str, db: int) -> Iterator[str]:
    """The Redis server of `url` on database number `db`, flushed before and after."""
    require_loopback(url)
    parts = urlsplit(url)
    db_url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))
    client = redis.Redis.from_url(db_url)
    try:
        client.flushdb()
        yield db_url
        client.flushdb()
    finally:
        client.close()


def free_base_port(attempts: int = 200, ports: int = 3) -> int:
    """A port p such that p .. p + ports - 1 are free on loopback (gateway, ood, reports), chosen
    below the kernel's ephemeral range. Inside it, a readiness check polling a port nobody listens
    on yet can be given that very port as its own source port and connect to itself (TCP
    self-connect): it then reads its own request back (seen once in CI: `BadStatusLine: GET
    /readyz HTTP/1.1`). And a port found free there could be handed to a part bound to port 0 (a
    fault proxy, a private Redis) before the service binds it."""
    low = _ephemeral_low()
    for _ in range(attempts):
        base = secrets.randbelow(low - ports - _LOWEST_PORT) + _LOWEST_PORT
        if all(_port_free(base + i) for i in range(ports)):
            return base
    raise FleetError(f"no {ports} consecutive free loopback ports")


_LOWEST_PORT = 20000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for port 0 (Linux), else the IANA range's start."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 49152
    return low if low > _LOWEST_PORT + 100 else 49152


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Child:
    """A started process, its log file and how to tell it is ready."""

    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0  # where this process's output starts in the log (after a restart)

    def is_ready(self) -> bool:
        if self.spec.ready_url is not None:
            return http_ok(self.spec.ready_url)
        assert self.spec.ready_pattern is not None
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)  # a restarted process: only what it wrote itself
            return bool(self.spec.ready_pattern.search(log.read().decode(errors="replace")))


@dataclass
class Fleet:
    """reports, ood, one Celery worker and the gateway, each its own process (group).

    `start()` migrates the database, creates one API key per tenant with the reports CLI,
    starts every process and waits until all are ready; `stop()` ends them. Use it as a
    context manager so a failure anywhere still stops what was started.
    """

    backends: Backends
    bundle_dir: Path
    workdir: Path
    tenants: Sequence[str] = ("tenant-a",)
    worker_concurrency: int | None = 1  # None: `make run`'s default, one process per usable core
    ort_threads: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict, init=False)
    children: list[Child] = field(default_factory=list, init=False)
    layout: Layout = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.layout = Layout(self.workdir, free_base_port())
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
        settings = {
            "SKINTRIAGE_INTERNAL_TOKEN": secrets.token_hex(32),
            "SKINTRIAGE_BROKER_URL": self.backends.broker_url,
            "REPORTS_DATABASE_URL": self.backends.database_url,
            "OOD_BUNDLE_DIR": str(self.bundle_dir),
            "INFERENCE_BUNDLE_DIR": str(self.bundle_dir),
            "INFERENCE_ORT_THREADS": str(self.ort_threads),
            **self.extra_env,
        }
        self.env = fleet_env(self.layout, inherited | settings)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.layout.ports['gateway']}"

    @property
    def database_url(self) -> str:
        return self.backends.database_url

    def start(self) -> None:
        """Migrate, create the tenants' keys, start every process and wait until all are ready."""
        try:
            run_migrations(self.env)
            for tenant in self.tenants:
                output = reports_cli(self.env, "create-key", "--tenant", tenant)
                self.api_keys[tenant] = output.strip().splitlines()[-1]
        except SystemExit as exc:  # the launcher's helpers exit on failure; a library raises
            raise FleetError(str(exc)) from None
        # Nothing waits on another to start (the gateway's /readyz waits for reports), so all
        # four start at once: the slow part, loading the bundle, overlaps in ood and the worker.
        for spec in self._specs():
            self.children.append(self._spawn(spec))
        self._wait_ready()

    def _specs(self) -> list[ProcessSpec]:
        return process_specs(self.layout, self.worker_concurrency)

    def _spawn(self, spec: ProcessSpec, append: bool = False) -> Child:
        log_path = self.workdir / "logs" / f"{spec.name}.log"
        offset = log_path.stat().st_size if append and log_path.exists() else 0
        with log_path.open("ab" if append else "wb") as out:
            process = subprocess.Popen(
                spec.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: the stop below reaches the worker's pool children too.
                start_new_session=True,
            )
        return Child(spec, process, log_path, offset)

    def _wait_ready(self, restarted: Child | None = None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = [restarted] if restarted is not None else list(self.children)
        while pending:
            self.check_alive()
            pending = [child for child in pending if not child.is_ready()]
            if pending and time.monotonic() > deadline:
                names = ", ".join(child.spec.name for child in pending)
                raise FleetError(f"not ready after {READY_TIMEOUT_S:.0f} s: {names}\n{self.logs()}")
            if pending:
                time.sleep(0.25)

    def child(self, name: str) -> Child:
        """The started process called `name` (gateway, ood, reports, worker)."""
        return next(child for child in self.children if child.spec.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL the process `name` and everything in its group (a crashed host or container:
        no shutdown handler runs, nothing is acknowledged or flushed)."""
        process = self.child(name).process
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def freeze(self, name: str, frozen: bool = True) -> None:
        """SIGSTOP (or, `frozen=False`, SIGCONT) the process `name` and its group: its work stops
        where it is, as a hung host's would."""
        process = self.child(name).process
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def restart(self, name: str) -> None:
        """Start the process `name` again (after `kill`), its output appended to the same log,
        and wait until it is ready."""
        old = self.child(name)
        if old.process.poll() is None:
            raise FleetError(f"{name} is still running")
        child = self._spawn(old.spec, append=True)
        self.children[self.children.index(old)] = child
        self._wait_ready(restarted=child)

    def check_alive(self) -> None:
        """Raise FleetError (with the logs) if a process has exited."""
        dead = [c for c in self.children if c.process.poll() is not None]
        if dead:
            exits = ", ".join(f"{c.spec.name} exited with {c.process.returncode}" for c in dead)
            raise FleetError(f"{exits}\n{self.logs()}")

    def logs(self, tail_chars: int = LOG_TAIL_CHARS) -> str:
        """The end of every process's log, one section each."""
        sections = []
        for child in self.children:
            text = child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
            state = "running" if child.process.poll() is None else f"exited {child.process.returncode}"
            sections.append(f"----- {child.spec.name} ({state}) {child.log_path} -----\n{text[-tail_chars:]}")
        return "\n".join(sections)

    def stop(self) -> None:
        """SIGTERM in reverse start order (gateway first), then SIGKILL each process group."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in reversed(self.children):
            with suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Also ends what the process left behind in its group (a pool child, say).
            with suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
