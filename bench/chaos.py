"""`make chaos`: faults injected into a real fleet, and whether every accepted job still ends.

Each scenario starts its own fleet (bench/fleet_runner.py: reports, ood, a Celery worker, the
gateway) on a fresh PostgreSQL database reached through a `FaultProxy` (so "stopped" and "hung"
never touch the shared server) and a private `redis-server` of its own as the broker. A client
sends the images as batches with an `Idempotency-Key`, retrying after any error as a careful
client would (same key, after `Retry-After`); meanwhile the scenario's fault strikes mid-batch:

- worker_kill:        the worker (pool and all) SIGKILLed, restarted after a pause;
- broker_kill_aof:    the broker SIGKILLed, restarted after the outage (append-only file, fsync always);
- broker_kill_volatile: the same with no persistence (every queued message is lost);
- database_stopped:   every PostgreSQL connection reset and new ones refused for the outage;
- database_hung:      PostgreSQL frozen (nothing forwarded) for the outage;
- reports_kill, gateway_kill: the service SIGKILLed mid-request, restarted after a pause.

Per scenario (the targets of issue 10): jobs accepted (a job id answered in a 202), how many reached
a final state and when (seconds after the fault ended), duplicate report rows, results computed
again for a job already done (reports logs `report.redelivered`), results for a job already failed
(`report.after_failure`), and jobs that ran without their client knowing (in the database, not in
any answer). Last, how long a revoked API key keeps working (target: at most 1 s).
`python -m bench.chaos` writes bench/results/chaos-<UTC time>.json; the fault tests
(tests/faults) run the same scenarios smaller.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench.faults.proxy import FaultProxy
from bench.faults.redis_server import PrivateRedis
from bench.fleet_runner import Backends, Fleet, fresh_postgres_database
from bench.pipeline import DEFAULT_BUNDLE, DEFAULT_DATA_ROOT, load_images, write_record
from scripts.run_fleet import reports_cli

ADMIN_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TENANT = "chaos"
# A batch item refused with one of these was hit by an outage, not refused for what it is.
RETRYABLE_ITEM_CODES = frozenset({"upstream.unavailable", "dependency.unavailable", "queue.full"})
FINAL = ("done", "rejected", "failed")


@dataclass(frozen=True)
class ChaosConfig:
    """How big each scenario is. `FULL` is issue 10's setting; the fault tests use a smaller one
    with the fleet's clocks turned down (`fleet_env`), so that they fit in CI."""

    images: int = 200
    batch_size: int = 100
    outage_s: dict[str, float] = field(
        default_factory=lambda: {"broker": 20.0, "db_stopped": 30.0, "db_hung": 50.0, "restart": 5.0}
    )
    recovery_limit_s: float = 120.0  # every accepted job final within this after the fault ends
    worker_processes: int = 2
    fleet_env: dict[str, str] = field(default_factory=dict)


FULL = ChaosConfig()
# The fault tests' size (tests/faults): a fifth of the images, outages a third as long, and the
# fleet's clocks turned down to match (the lease is then 10 + 4 + 10 = 24 s instead of 50 s).
SMALL = ChaosConfig(
    images=40,
    batch_size=20,
    outage_s={"broker": 8.0, "db_stopped": 10.0, "db_hung": 15.0, "restart": 2.0},
    recovery_limit_s=60.0,
    fleet_env={
        "INFERENCE_TASK_SOFT_TIME_LIMIT": "8",
        "INFERENCE_TASK_TIME_LIMIT": "10",
        "INFERENCE_HTTP_TIMEOUT_SECONDS": "2",
        "INFERENCE_RETRY_BACKOFF_MAX_SECONDS": "4",
        "INFERENCE_BROKER_VISIBILITY_TIMEOUT": "60",
        "REPORTS_SWEEP_INTERVAL_SECONDS": "1",
        "REPORTS_SWEEP_QUEUED_GRACE_SECONDS": "5",
        "GATEWAY_REPORTS_TIMEOUT_SECONDS": "5",
    },
)


@dataclass
class ClientLog:
    """What the client was told: job ids answered in 202s, and every error it got."""

    accepted: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    uploading: threading.Event = field(default_factory=threading.Event)  # the 2nd batch is on its way
    at_fault: dict[str, int] = field(default_factory=dict)  # the first batch's jobs when it struck
    after_strike: dict[str, int] = field(default_factory=dict)  # every job's status right after


class Client:
    """Sends batches in a thread; retries each with its Idempotency-Key until it is accepted."""

    def __init__(self, gateway_url: str, api_key: str, images: list[bytes], batch_size: int) -> None:
        self.http = httpx.Client(
            base_url=gateway_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(30.0, connect=3.0),
            trust_env=False,
        )
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.log = ClientLog()
        self.go_on = threading.Event()  # the scenario lets the later batches go
        self.give_up_at = float("inf")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for number, batch in enumerate(self.batches):
            if number == 1:
                self.go_on.wait()
                self.log.uploading.set()
            self._send(f"chaos-batch-{number}", batch)

    def _send(self, key: str, batch: list[bytes]) -> None:
        files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(batch)]
        while time.monotonic() < self.give_up_at:
            try:
                response = self.http.post("/v1/batches", files=files, headers={"Idempotency-Key": key})
            except httpx.HTTPError as exc:
                self.log.errors[type(exc).__name__] += 1
                time.sleep(1.0)
                continue
            if response.status_code == 202:
                answer = response.json()
                self.log.accepted.update(item["job_id"] for item in answer["items"])
                # Items refused for an outage (5xx codes) are sent again with the same key: the
                # gateway answers the accepted ones as replays and registers the rest.
                retryable = [r for r in answer["rejected"] if r["error"]["code"] in RETRYABLE_ITEM_CODES]
                if not retryable:
                    return
                for item in retryable:
                    self.log.errors[f"202 item {item['error']['code']}"] += 1
                time.sleep(1.0)
                continue
            code = response.json().get("error", {}).get("code", "?") if response.content else "?"
            self.log.errors[f"{response.status_code} {code}"] += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))


class ChaosFleet:
    """A fleet on a proxied fresh PostgreSQL database and a private Redis, for one scenario."""

    def __init__(self, stack: ExitStack, workdir: Path, bundle: Path, config: ChaosConfig, appendonly: bool):
        admin = make_url(ADMIN_POSTGRES_URL)
        self.database_url = stack.enter_context(
            fresh_postgres_database(ADMIN_POSTGRES_URL, "skintriage_chaos")
        )
        self.proxy = stack.enter_context(FaultProxy(admin.host or "127.0.0.1", admin.port or 5432))
        proxied = make_url(self.database_url).set(host="127.0.0.1", port=self.proxy.port)
        self.redis = stack.enter_context(PrivateRedis(workdir / "redis", appendonly=appendonly))
        backends = Backends("chaos", proxied.render_as_string(hide_password=False), self.redis.url(0))
        self.fleet = Fleet(
            backends,
            bundle,
            workdir,
            tenants=(TENANT,),
            worker_concurrency=config.worker_processes,
            extra_env=config.fleet_env,
        )
        stack.enter_context(self.fleet)
        # What a deployment's restart policy does (compose `restart: unless-stopped`, a k8s
        # Deployment): a process that exits on its own is started again. The harness's own
        # kills are left to the scenario, which restarts them itself.
        self.restarted: list[str] = []
        self._lock = threading.Lock()
        self._killed: set[str] = set()
        self._stop_supervising = threading.Event()
        supervisor = threading.Thread(target=self._supervise, daemon=True)
        supervisor.start()
        stack.callback(supervisor.join, 30)
        stack.callback(self._stop_supervising.set)
        # The truth is read past the proxy, so a fault never hides it.
        self.truth: Engine = create_engine(self.database_url, pool_pre_ping=True)
        stack.callback(self.truth.dispose)

    def kill(self, name: str) -> None:
        """SIGKILL the process `name` (the scenario restarts it)."""
        with self._lock:
            self._killed.add(name)
            self.fleet.kill(name)

    def restart(self, name: str) -> None:
        """Start the killed process `name` again and wait until it is ready."""
        with self._lock:
            self.fleet.restart(name)
            self._killed.discard(name)

    def _supervise(self) -> None:
        while not self._stop_supervising.wait(0.5):
            with self._lock:
                for child in list(self.fleet.children):
                    name = child.spec.name
                    if child.process.poll() is not None and name not in self._killed:
                        self.restarted.append(f"{name} (exit {child.process.returncode})")
                        self.fleet.restart(name)

    def statuses(self, job_ids: set[str]) -> dict[str, str]:
        """job id -> status, for those of `job_ids` that exist."""
        if not job_ids:
            return {}
        with self.truth.connect() as connection:
            rows = connection.execute(
                text("SELECT id, status FROM jobs WHERE id = ANY(:ids)"), {"ids": list(job_ids)}
            )
            return {row.id: row.status for row in rows}

    def status_counts(self) -> dict[str, int]:
        """status -> how many jobs have it, over every job in the database."""
        with self.truth.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) AS n FROM jobs GROUP BY status"))
            return {row.status: int(row.n) for row in rows}

    def count(self, sql: str) -> int:
        with self.truth.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())

    def log_lines(self, name: str, message: str) -> int:
        """How many lines of `name`'s log carry `message`."""
        text_ = self.fleet.child(name).log_path.read_text(errors="replace")
        return text_.count(f'"message": "{message}"')


Fault = Callable[[ChaosFleet, Client, ChaosConfig], None]


def _mid_batch(chaos: ChaosFleet, client: Client, timeout_s: float = 120.0) -> None:
    """Wait until the first batch is accepted and some of its jobs are done while others are
    running: a batch in flight. What the jobs were doing then is kept in `client.log.at_fault`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = Counter(chaos.statuses(set(client.log.accepted)).values())
        if sum(statuses[s] for s in FINAL) and statuses["running"]:
            client.log.at_fault = dict(statuses)
            return
        time.sleep(0.02)


def _strike(chaos: ChaosFleet, client: Client, fault: Callable[[], None]) -> None:
    """Start the fault, then note what every job is doing (what it stranded)."""
    fault()
    client.log.after_strike = chaos.status_counts()


def _settled_status_counts(chaos: ChaosFleet, deadline: float, settle_s: float = 0.5) -> dict[str, int]:
    """The status counts once two looks `settle_s` apart agree (or at `deadline`)."""
    counts = chaos.status_counts()
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        counts, before = chaos.status_counts(), counts
        if counts == before:
            break
    return counts


def _freeze_worker_holding_jobs(chaos: ChaosFleet, timeout_s: float = 60.0) -> None:
    """Freeze the worker at a moment it holds running jobs (a micro-batch takes a fraction of a
    second: between a look and a fault it may well have finished). The caller thaws it.

    The look waits for the counts to settle: a micro-batch's results the worker sent just before
    the stop are still on their way to reports, and a CI run saw all seven 'running' jobs turn
    done after a look that came too early."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chaos.fleet.freeze("worker")
        if _settled_status_counts(chaos, deadline).get("running", 0):
            return
        chaos.fleet.freeze("worker", frozen=False)
        time.sleep(0.01)
    raise RuntimeError(f"the worker held no running job in {timeout_s:.0f} s")


def _second_batch_during(
    chaos: ChaosFleet, outage: Callable[[], None], duration_s: float, client: Client
) -> None:
    """Start the fault, let the second batch go into it, end the fault after `duration_s`."""
    _strike(chaos, client, outage)
    client.go_on.set()
    time.sleep(duration_s)


def worker_kill(chaos: ChaosFleet, client: Client, config: ChaosConfig) -> None:
    _mid_batch(chaos, client)
    # Kill the worker only with jobs in its hands.
    _freeze_worker_holding_jobs(chaos)
    _strike(chaos, client, lambda: chaos.kill("worker"))
    client.go_on.set()
    time.sleep(config.outage_s["restart"])
    chaos.restart("worker")


def broker_kill(chaos: ChaosFleet, client: Client, config: ChaosConfig) -> None:
    _mid_batch(chaos, client)
    _second_batch_during(chaos, chaos.redis.kill, config.outage_s["broker"], client)
    chaos.redis.restart()


def database_stopped(chaos: ChaosFleet, client: Client, config: ChaosConfig) -> None:
    _mid_batch(chaos, client)
    _second_batch_during(chaos, chaos.proxy.cut, config.outage_s["db_stopped"], client)
    chaos.proxy.resume()


def database_hung(chaos: ChaosFleet, client: Client, config: ChaosConfig) -> None:
    _mid_batch(chaos, client)
    _second_batch_during(chaos, chaos.proxy.hang, config.outage_s["db_hung"], client)
    chaos.proxy.resume()


def _kill_mid_request(name: str) -> Fault:
    def fault(chaos: ChaosFleet, client: Client, config: ChaosConfig) -> None:
        _mid_batch(chaos, client)
        first_batch = len(client.log.accepted)
        # The worker holds jobs through the kill (their results and status changes then have
        # nowhere to go): frozen with jobs running until right after it. Faster jobs made this a
        # race: a CI run saw every job done before the kill landed.
        _freeze_worker_holding_jobs(chaos)
        client.go_on.set()
        # The second batch's first jobs are registered: its request is in the gateway's hands.
        deadline = time.monotonic() + 30
        while chaos.count("SELECT count(*) FROM jobs") <= first_batch and time.monotonic() < deadline:
            time.sleep(0.005)
        _strike(chaos, client, lambda: chaos.kill(name))
        chaos.fleet.freeze("worker", frozen=False)
        time.sleep(config.outage_s["restart"])
        chaos.restart(name)

    return fault


# name -> (fault, whether the broker keeps an append-only file)
SCENARIOS: dict[str, tuple[Fault, bool]] = {
    "worker_kill": (worker_kill, True),
    "broker_kill_aof": (broker_kill, True),
    "broker_kill_volatile": (broker_kill, False),
    "database_stopped": (database_stopped, True),
    "database_hung": (database_hung, True),
    "reports_kill": (_kill_mid_request("reports"), True),
    "gateway_kill": (_kill_mid_request("gateway"), True),
}


@dataclass
class ScenarioResult:
    """One scenario's figures (see the module docstring)."""

    scenario: str
    accepted: int
    final: int
    statuses: dict[str, int]
    final_within_s_of_recovery: float | None  # None: not every accepted job ended in time
    met_recovery_limit: bool
    duplicate_reports: int
    done_jobs_rerun: int
    results_after_failure: int
    silent_jobs: int
    client_errors: dict[str, int]
    fault_s: float
    redrives: int
    jobs_at_fault: dict[str, int]
    jobs_after_strike: dict[str, int]
    # Processes that exited on their own and were started again, as a restart policy would (the
    # worker when kombu fails closing a lost Redis connection: "Unrecoverable error").
    restarted: list[str]

    @property
    def met(self) -> bool:
        """Issue 10's targets for a scenario."""
        return (
            self.met_recovery_limit
            and self.final == self.accepted
            and self.duplicate_reports == 0
            and self.done_jobs_rerun == 0
            and self.results_after_failure == 0
            and self.silent_jobs == 0
        )


def run_scenario(
    name: str, config: ChaosConfig, bundle: Path, images: list[bytes], workdir: Path
) -> ScenarioResult:
    """Start a fleet, send the images while the fault strikes, wait for the jobs, count."""
    fault, appendonly = SCENARIOS[name]
    with ExitStack() as stack:
        chaos = ChaosFleet(stack, workdir, bundle, config, appendonly)
        client = Client(chaos.fleet.gateway_url, chaos.fleet.api_keys[TENANT], images, config.batch_size)
        stack.callback(client.http.close)
        client.give_up_at = time.monotonic() + 600
        client.thread.start()
        fault_began = time.monotonic()
        fault(chaos, client, config)
        recovered = time.monotonic()
        client.thread.join(timeout=300)
        accepted = set(client.log.accepted)
        deadline = recovered + config.recovery_limit_s
        ended_at: float | None = None
        while time.monotonic() < deadline + 30:  # a little past the limit, to see how late
            statuses = chaos.statuses(accepted)
            if all(statuses.get(job_id) in FINAL for job_id in accepted):
                ended_at = time.monotonic()
                break
            time.sleep(0.5)
        statuses = chaos.statuses(accepted)
        everything = chaos.count("SELECT count(*) FROM jobs WHERE status <> 'failed'")
        known = sum(1 for s in statuses.values() if s != "failed")
        within = None if ended_at is None else round(max(0.0, ended_at - recovered), 1)
        return ScenarioResult(
            scenario=name,
            accepted=len(accepted),
            final=sum(1 for s in statuses.values() if s in FINAL),
            statuses=dict(Counter(statuses.values())),
            final_within_s_of_recovery=within,
            met_recovery_limit=within is not None and within <= config.recovery_limit_s,
            duplicate_reports=chaos.count("SELECT count(*) - count(DISTINCT job_id) FROM reports"),
            done_jobs_rerun=chaos.log_lines("reports", "report.redelivered"),
            results_after_failure=chaos.log_lines("reports", "report.after_failure"),
            silent_jobs=everything - known,
            client_errors=dict(client.log.errors),
            fault_s=round(recovered - fault_began, 1),
            redrives=chaos.count("SELECT coalesce(sum(redrives), 0) FROM jobs"),
            jobs_at_fault=client.log.at_fault,
            jobs_after_strike=client.log.after_strike,
            restarted=list(chaos.restarted),
        )


def revocation_seconds(fleet: Fleet, attempts: int = 5) -> list[float]:
    """Seconds from `revoke-key` returning to the gateway's first 401 for that key, `attempts`
    times (a fresh key each, used once before it is revoked so that the gateway has cached it)."""
    delays = []
    for _ in range(attempts):
        key = reports_cli(fleet.env, "create-key", "--tenant", TENANT).strip().splitlines()[-1]
        rows = [line.split("\t") for line in reports_cli(fleet.env, "list-keys").splitlines()[1:]]
        key_id = next(row[0] for row in rows if key.startswith(row[2]))
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=fleet.gateway_url, headers=headers, trust_env=False) as http:
            assert http.get("/v1/reports").status_code == 200
            reports_cli(fleet.env, "revoke-key", key_id)
            revoked = time.monotonic()
            while http.get("/v1/reports").status_code != 401:
                if time.monotonic() - revoked > 60:
                    raise RuntimeError("a revoked key still works after 60 s")
                time.sleep(0.01)
            delays.append(round(time.monotonic() - revoked, 3))
    return delays


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder for one scenario's fleet (logs, the broker's files), removed after
    unless `keep` is set on it (a failed scenario's logs are kept for a look)."""
    path = Path(tempfile.mkdtemp(prefix="skintriage-chaos-"))
    try:
        yield path
    finally:
        if not (path / "keep").exists():
            shutil.rmtree(path, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, default all")
    parser.add_argument("--out", type=Path, help="default: bench/results/chaos-<UTC time>.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the chosen scenarios at issue 10's size and write the JSON; returns its path."""
    args = parse_args(argv)
    config = FULL
    images = load_images(args.data_root, config.images)
    results = []
    for name in args.scenarios.split(","):
        with scratch_dir() as workdir:
            started = time.perf_counter()
            result = run_scenario(name, config, args.bundle.resolve(), images, workdir / name)
            print(f"{name}: {json.dumps(asdict(result))} ({time.perf_counter() - started:.0f} s)", flush=True)
            if not result.met:
                (workdir / "keep").touch()
                print(f"{name} missed a target: its fleet's logs are kept in {workdir / name / 'logs'}")
            results.append(result)
    with scratch_dir() as workdir, ExitStack() as stack:
        revocation = revocation_seconds(ChaosFleet(stack, workdir, args.bundle.resolve(), config, True).fleet)
    print(f"revocation: {revocation} s", flush=True)
    fields = {
        "config": asdict(config),
        "scenarios": [asdict(r) | {"met": r.met} for r in results],
        "revocation_s": revocation,
        "revocation_met": max(revocation) <= 1.0,
        "all_met": all(r.met for r in results) and max(revocation) <= 1.0,
    }
    return write_record("chaos", fields, args.out)


if __name__ == "__main__":
    main()
