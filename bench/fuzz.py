"""Fuzz the public gateway API with Schemathesis: a bounded run over the gateway's own `/openapi.json`
against a real, running fleet, with every check on; writes bench/results/fuzz-<UTC time>.json.

```
make fuzz                                    # = python -m bench.fuzz --cases 10000
.venv/bin/python -m bench.fuzz --cases 2000 --seed 7
```

The fleet is the `make run` default (SQLite + SQLite broker), started here as separate processes
on loopback ports by bench/fleet_runner.py, on the shipped bundle unless `--bundle` names another.
`fuzz_gateway` is the whole run; tests/e2e/test_api_fuzz.py calls it in CI on a smaller budget.

A run is Schemathesis's own engine (what `st run` drives): the schema's examples, the coverage
phase (boundary values, missing and mistyped fields, undeclared methods), random positive and
negative cases, and stateful sequences that follow the `Location` of an accepted upload to the
job's routes. Requests carry a tenant's API key (and the operator token on `/metrics`); the
`ignored_auth` check replays them without a key and with a wrong one. A share of the positive
uploads carry real images (HAM10000 images from the shared data, which the model accepts, and
noise, which its OOD check rejects), so finished jobs, their reads and heatmaps are fuzzed too.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, cast

import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case, GenerationMode, HookContext
from schemathesis.engine import Status, events, from_schema

from bench.fleet_runner import Fleet, FleetError, embedded_backends
from bench.pipeline import DEFAULT_BUNDLE, DEFAULT_DATA_ROOT, load_images, write_record
from model_bundle.loader import load_manifest

TENANT = "fuzz"
# Every check Schemathesis has (`--checks all`). `positive_data_acceptance` is told the statuses
# that a schema-valid request may still get for what a schema cannot say: bytes that are not an
# image (400 `image.empty`, 413, 415, 422 `image.corrupt`, `batch.no_valid_items`) and a
# `cursor` that reports never issued (400 `cursor.invalid`).
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
_UPLOAD_CONTENT_STATUSES = ["400", "413", "415", "422"]
_OPERATIONS_CONFIG = [
    {
        "include-path": ["/v1/images", "/v1/batches"],
        "checks": {"positive_data_acceptance": {"expected-statuses": _ACCEPTED + _UPLOAD_CONTENT_STATUSES}},
    },
    {
        "include-path": "/v1/reports",
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, "400"]}},
    },
]
_UPLOADS = frozenset({"POST /v1/images", "POST /v1/batches"})
# Sent with some real images: a job that finishes in time answers 200 with the job, and its
# `Location` then leads the stateful phase to a finished job (whose heatmap exists).
_PREFER_WAIT = "wait=10"
REQUEST_TIMEOUT_S = 60.0  # above GATEWAY_MAX_WAIT_SECONDS (30): `Prefer: wait` is fuzzed too


@dataclass(frozen=True)
class Target:
    """A running gateway and the credentials its security schemes take."""

    base_url: str
    api_key: str
    operator_token: str

    @classmethod
    def of(cls, fleet: Fleet, tenant: str) -> Target:
        """The gateway of a started fleet, as `tenant` (and as its operator on `/metrics`)."""
        return cls(fleet.gateway_url, fleet.api_keys[tenant], fleet.env["SKINTRIAGE_INTERNAL_TOKEN"])


@dataclass
class Finding:
    """One distinct failed check: where, what, and the request that reproduces it."""

    operation: str
    check: str
    title: str
    message: str
    status: int | None
    curl: str

    def render(self) -> str:
        """Human-readable, for a test report or the console."""
        return f"{self.operation}: {self.check} ({self.status}) {self.title}\n{self.message}\n{self.curl}"


@dataclass
class FuzzReport:
    """What a run sent and what it found: cases and statuses per operation, checks, failures."""

    schemathesis_version: str = schemathesis.__version__
    cases_per_operation: Counter[str] = field(default_factory=Counter)
    statuses_per_operation: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    cases_per_phase: Counter[str] = field(default_factory=Counter)
    checks_passed: Counter[str] = field(default_factory=Counter)
    failures_per_check: Counter[str] = field(default_factory=Counter)
    failures: list[Finding] = field(default_factory=list)  # distinct (operation, check, title, status)
    errors: list[str] = field(default_factory=list)  # the engine could not run something
    rounds: int = 0
    duration_s: float = 0.0

    @property
    def cases(self) -> int:
        return sum(self.cases_per_operation.values())

    @property
    def server_errors(self) -> int:
        """Responses with a 5xx status, over every operation."""
        return sum(
            n for statuses in self.statuses_per_operation.values() for s, n in statuses.items() if s >= 500
        )

    @property
    def ok(self) -> bool:
        """No failed check, no 5xx, nothing the engine could not run."""
        return not self.failures_per_check and not self.server_errors and not self.errors

    def summary(self) -> str:
        """A few lines: totals, then every distinct failure and error."""
        lines = [
            f"schemathesis {self.schemathesis_version}: {self.cases} cases in {self.duration_s:.0f} s "
            f"({self.rounds} round(s)), 5xx: {self.server_errors}, "
            f"failures per check: {dict(self.failures_per_check) or 'none'}",
            *(
                f"  {op}: {n} cases, statuses {dict(sorted(self.statuses_per_operation[op].items()))}"
                for op, n in sorted(self.cases_per_operation.items())
            ),
        ]
        lines += [failure.render() for failure in self.failures]
        lines += [f"engine error: {error}" for error in self.errors]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The result record's `results`."""
        return {
            "schemathesis_version": self.schemathesis_version,
            "cases": self.cases,
            "cases_per_operation": dict(sorted(self.cases_per_operation.items())),
            "cases_per_phase": dict(sorted(self.cases_per_phase.items())),
            "statuses_per_operation": {
                op: {str(s): n for s, n in sorted(statuses.items())}
                for op, statuses in sorted(self.statuses_per_operation.items())
            },
            "server_errors": self.server_errors,
            "checks_passed": dict(sorted(self.checks_passed.items())),
            "failures_per_check": dict(sorted(self.failures_per_check.items())),
            "failures": [vars(failure) for failure in self.failures],
            "errors": self.errors,
            "rounds": self.rounds,
            "duration_s": round(self.duration_s, 1),
        }

    def add(self, event: events.ScenarioFinished) -> None:
        """Count one finished scenario: its cases, their responses and their checks."""
        recorder = event.recorder
        seen = {(f.operation, f.check, f.title, f.status) for f in self.failures}
        for case_id, node in recorder.cases.items():
            operation = node.value.operation.label
            self.cases_per_operation[operation] += 1
            self.cases_per_phase[event.phase.value] += 1
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            if response is not None:
                self.statuses_per_operation[operation][response.status_code] += 1
            for check in recorder.checks.get(case_id, []):
                if check.status == Status.SUCCESS:
                    self.checks_passed[check.name] += 1
                    continue
                if check.failure_info is None:  # the check itself crashed
                    self.errors.append(f"{operation}: check {check.name} errored")
                    continue
                self.failures_per_check[check.name] += 1
                failure = check.failure_info.failure
                status = response.status_code if response is not None else None
                key = (operation, check.name, failure.title, status)
                if key not in seen:
                    seen.add(key)
                    self.failures.append(
                        Finding(
                            operation,
                            check.name,
                            failure.title,
                            failure.message,
                            status,
                            check.failure_info.code_sample,
                        )
                    )


def fuzz_gateway(
    target: Target,
    cases: int,
    *,
    images: Sequence[bytes],
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> FuzzReport:
    """Run Schemathesis against `target` until at least `cases` cases have been sent, some of the
    uploads with `images` (and noise images) in place of the generated bytes; `progress` hears a
    line after each round.

    The first round runs every phase; each later round (only where operations with few possible
    inputs left the first one short) fuzzes again from the next seed.
    """
    report = FuzzReport()
    started = time.perf_counter()
    while report.cases < cases:
        sent = report.cases
        schema = _load_schema(target, seed=seed + report.rounds, first=report.rounds == 0)
        schema.hook("flatmap_case")(_with_real_images([*images, *noise_images()]))
        # Fuzzing draws up to max-examples per operation; stateful sequences add about as many.
        schema.config.generation.update(max_examples=max(1, math.ceil((cases - sent) / (2 * len(schema)))))
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                report.add(event)
            elif isinstance(event, events.NonFatalError):
                report.errors.append(_error_text(event))
            elif isinstance(event, events.FatalError):
                report.errors.append(f"fatal: {event.exception!r}")
        report.rounds += 1
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(f"round {report.rounds}: {report.cases} cases in {elapsed:.0f} s")
        if report.cases == sent:
            report.errors.append(f"round {report.rounds} sent no case")
        if report.errors:
            break
    report.duration_s = time.perf_counter() - started
    return report


def _error_text(event: events.NonFatalError) -> str:
    """What went wrong, with the errors inside a group (Hypothesis reports a flaky case as one)."""
    inner = event.value.exceptions if isinstance(event.value, BaseExceptionGroup) else ()
    causes = "".join(f"\n  caused by {error!r}" for error in inner)
    return f"{event.label}: {event.info.title}: {event.info.message}{causes}\n{event.info.traceback}"


def _load_schema(target: Target, *, seed: int, first: bool) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "seed": seed,
            # One worker: more threads trip a CPython race in Hypothesis's lambda descriptions
            # (`AST constructor recursion depth mismatch`), and on 2 cores shared with the fleet
            # two workers sent fewer cases per second (27) than one (33).
            "workers": 1,
            "continue-on-failure": True,  # count every failing case, not the first per operation
            "request-timeout": REQUEST_TIMEOUT_S,
            "checks": {"enabled": True},
            "generation": {"mode": "all", "database": "none"},
            "phases": {
                "examples": {"enabled": first},
                "coverage": {"enabled": first},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True},
            },
            "auth": {
                "openapi": {
                    "ApiKey": {"bearer": target.api_key},
                    "OperatorToken": {"bearer": target.operator_token},
                }
            },
            "operations": _OPERATIONS_CONFIG,
            "warnings": False,
        }
    )
    return schemathesis.openapi.from_url(f"{target.base_url}/openapi.json", config=config, timeout=30)


CaseHook = Callable[[HookContext, Case[Any]], st.SearchStrategy[Case[Any]]]


def _with_real_images(images: Sequence[bytes]) -> CaseHook:
    """A `flatmap_case` hook: some positive uploads as they are, others with `images` in place of
    the generated bytes (random bytes are never an image, so without it no upload is accepted),
    single images sometimes with `Prefer: wait`."""
    drawn = st.sampled_from(list(images))

    def flatmap_case(context: HookContext, case: Case[Any]) -> st.SearchStrategy[Case[Any]]:
        operation = context.operation
        meta = case.meta
        if (
            operation is None
            or operation.label not in _UPLOADS
            or meta is None
            or meta.generation.mode != GenerationMode.POSITIVE
            or not isinstance(case.body, dict)
        ):
            return st.just(case)
        if operation.label == "POST /v1/images":
            replaced = st.builds(partial(_with_upload, case, "file"), drawn, st.booleans())
        else:
            files = st.lists(drawn, min_size=1, max_size=4)
            replaced = st.builds(partial(_with_upload, case, "files"), files, st.just(False))
        return st.one_of(st.just(case), replaced)

    return flatmap_case


def _with_upload(case: Case[Any], name: str, value: bytes | list[bytes], wait: bool) -> Case[Any]:
    """`case` with this multipart part (and no `archive`: a batch takes files or one archive),
    waiting for the result if `wait`."""
    body = cast(dict[str, Any], case.body)  # a dict: `_with_real_images` checked
    body.pop("archive", None)
    body[name] = value
    if wait:
        case.headers["prefer"] = _PREFER_WAIT
    # The edited body is the case as generated, not an edit after generation: otherwise
    # Schemathesis revalidates it, counts image bytes as no JSON string, and takes the case for a
    # negative one (`negative_data_rejection` would then fail on its 202). Its engine does the same
    # for the credentials it writes into generated cases.
    case._record_starting_state()
    return case


@cache
def noise_images() -> list[bytes]:
    """A few small, valid images (JPEG and PNG) of noise: accepted uploads, rejected as OOD."""
    rng = random.Random(0)
    images = []
    for index, (width, height) in enumerate([(64, 64), (96, 72), (48, 120), (160, 128)]):
        pixels = bytes(rng.randrange(256) for _ in range(width * height * 3))
        image = Image.frombytes("RGB", (width, height), pixels)
        out = io.BytesIO()
        image.save(out, format="JPEG" if index % 2 == 0 else "PNG")
        images.append(out.getvalue())
    return images


def fuzz_embedded_fleet(bundle_dir: Path, cases: int, *, images: Sequence[bytes], seed: int) -> FuzzReport:
    """Start the embedded fleet on `bundle_dir`, fuzz its gateway, stop it (logs kept on failure)."""
    workdir = Path(tempfile.mkdtemp(prefix="skintriage-fuzz-"))
    started = time.perf_counter()
    try:
        with Fleet(embedded_backends(workdir / "var"), bundle_dir, workdir, tenants=(TENANT,)) as fleet:
            print(f"fleet ready in {time.perf_counter() - started:.1f} s; fuzzing {cases} cases", flush=True)
            report = fuzz_gateway(
                Target.of(fleet, TENANT), cases, images=images, seed=seed, progress=_print_flushed
            )
            fleet.check_alive()
            if not report.ok:
                print(f"{fleet.logs()}\n(logs kept in {workdir})", file=sys.stderr)
    except FleetError as exc:
        raise SystemExit(f"the fleet failed: {exc}\n(logs kept in {workdir})") from None
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _print_flushed(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="at least this many cases in total")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--images", type=int, default=8, help="HAM10000 images the uploads draw from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: bench/results/fuzz-<UTC time>.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Start the fleet, fuzz, stop the fleet, write the JSON; returns its path."""
    args = parse_args(argv)
    manifest = load_manifest(args.bundle)  # fail before starting anything
    images = load_images(args.data_root, args.images)
    report = fuzz_embedded_fleet(args.bundle.resolve(), args.cases, images=images, seed=args.seed)
    print(report.summary(), flush=True)
    out = write_record(
        "fuzz",
        {
            "bundle": {"name": manifest.name, "version": manifest.version, "dir": str(args.bundle)},
            "backends": {"shape": "embedded", "database": "sqlite", "broker": "sqla+sqlite"},
            "settings": {"cases": args.cases, "seed": args.seed, "images": len(images)},
            "results": report.as_json(),
        },
        args.out,
    )
    if not report.ok:
        raise SystemExit(f"the fuzz run found problems; see `failures` and `errors` in {out}")
    return out


if __name__ == "__main__":
    main()
