"""Schemathesis over the gateway's own OpenAPI, against the real embedded fleet (bench/fuzz.py).

Every check is on: a 5xx, a status code or a header a route does not document, a body off its
schema, a schema-valid request refused or an invalid one accepted, a route that answers without a
valid API key, an undeclared method not answered 405. Bounded for CI by SKINTRIAGE_FUZZ_CASES
(default 2000: 1 min 38 s on 2 cores, fleet start and stop included); `make fuzz` runs 10 000.
Uploads draw from the first HAM10000 images of the shared data, like the other e2e tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fleet_runner import Fleet
from bench.fuzz import Target, fuzz_gateway
from tests.e2e.fleet import EMBEDDED, TENANTS, running_fleet

pytestmark = pytest.mark.e2e

CASES = int(os.environ.get("SKINTRIAGE_FUZZ_CASES", "2000"))


@pytest.fixture(scope="module")
def fleet(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The embedded fleet only, for CI's budget: a 3 000-case run on PostgreSQL + Redis found
    nothing more (services/gateway/README.md, API fuzzing)."""
    with running_fleet(EMBEDDED, tiny_bundle_dir, tmp_path_factory.mktemp("fleet-fuzz")) as started:
        yield started


def test_every_fuzzed_request_is_answered_as_the_openapi_documents(
    fleet: Fleet, ham_images: list[Path]
) -> None:
    images = [path.read_bytes() for path in ham_images[:8]]

    report = fuzz_gateway(Target.of(fleet, TENANTS[0]), CASES, images=images)

    assert report.cases >= CASES
    assert report.server_errors == 0, report.summary()
    assert report.ok, report.summary()
