"""docker-compose.yml: valid against the Compose Specification, accepted by Docker Compose v2
itself, and consistent with docs/ARCHITECTURE.md."""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest

from tests.deploy.architecture_doc import REPO_ROOT, check_command, env_names_for, services
from tests.deploy.compose_tool import compose_spec_schema, run_compose
from tests.deploy.manifests import COMPOSE_ENV, compose_env, compose_model, compose_raw

APP_SERVICES = ("gateway", "ood", "reports", "worker", "migrate")
HTTP_SERVICES = ("gateway", "ood", "reports")
ONE_SHOT = ("migrate",)
TOKEN_VARS = {
    "gateway": "GATEWAY_INTERNAL_TOKEN",
    "ood": "OOD_INTERNAL_TOKEN",
    "reports": "REPORTS_INTERNAL_TOKEN",
    "worker": "INFERENCE_INTERNAL_TOKEN",
}
DATABASE_URL = re.compile(r"^postgresql\+psycopg://skintriage:[^@]+@postgres:5432/skintriage$")
BROKER_URL = "redis://redis:6379/0"


def _validator() -> jsonschema.protocols.Validator:
    schema = compose_spec_schema()
    # The schema says "$schema": ".../draft-07/schema" (no trailing '#', which jsonschema's lookup
    # wants), so name the draft explicitly rather than fall back to the latest one.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_embedded_schema_is_the_compose_specification() -> None:
    schema = compose_spec_schema()
    assert schema["title"] == "Compose Specification"
    assert {"services", "volumes", "networks"} <= set(schema["properties"])


def test_compose_file_is_valid_against_the_compose_specification_schema() -> None:
    errors = sorted(_validator().iter_errors(compose_raw()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_validation_catches_a_misspelled_service_key() -> None:
    broken = copy.deepcopy(compose_raw())
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    assert any("helthcheck" in e.message for e in _validator().iter_errors(broken))


def test_docker_compose_accepts_the_file_when_secrets_are_set() -> None:
    result = run_compose(["config", "--quiet"], REPO_ROOT, compose_env(**COMPOSE_ENV))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_ENV))
def test_docker_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    env = {k: v for k, v in COMPOSE_ENV.items() if k != missing}
    result = run_compose(["config", "--quiet"], REPO_ROOT, compose_env(**env))
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_internal_token_reaches_every_service_from_one_variable() -> None:
    model = compose_model()["services"]
    for service, var in TOKEN_VARS.items():
        assert model[service]["environment"][var] == COMPOSE_ENV["SKINTRIAGE_INTERNAL_TOKEN"], service


@pytest.mark.parametrize("service", APP_SERVICES)
def test_service_env_names_are_the_documented_ones(service: str) -> None:
    names = set(compose_model()["services"][service]["environment"])
    assert names <= env_names_for(service), names - env_names_for(service)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_service_command_is_the_documented_entry_point(service: str) -> None:
    assert check_command(service, compose_model()["services"][service]["command"]) == []


def test_worker_runs_the_documented_celery_app_on_the_inference_queue() -> None:
    command = compose_model()["services"]["worker"]["command"]
    assert command[:3] == ["celery", "-A", "services.inference.celery_app:celery_app"]
    assert command[command.index("-Q") + 1] == "inference"


def test_worker_can_be_scaled() -> None:
    worker = compose_model()["services"]["worker"]
    # A fixed container name or a published port would make `--scale worker=N` fail.
    assert "container_name" not in worker
    assert not worker.get("ports")


@pytest.mark.parametrize("service", sorted(set(compose_raw()["services"]) - set(ONE_SHOT)))
def test_every_long_running_service_has_a_healthcheck(service: str) -> None:
    healthcheck = compose_model()["services"][service].get("healthcheck")
    assert healthcheck and healthcheck.get("test") and not healthcheck.get("disable")


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_http_services_are_probed_on_healthz_at_their_documented_port(service: str) -> None:
    test = " ".join(compose_model()["services"][service]["healthcheck"]["test"])
    port = services()[service].port
    assert "urllib.request" in test
    assert f"http://127.0.0.1:{port}/healthz" in test


def test_only_the_gateway_is_published_on_8000() -> None:
    model = compose_model()["services"]
    published = {name: svc["ports"] for name, svc in model.items() if svc.get("ports")}
    assert set(published) == {"gateway"}
    [port] = published["gateway"]
    assert (port["target"], port["published"]) == (8000, "8000")


def test_reports_waits_for_a_successful_migration() -> None:
    depends = compose_model()["services"]["reports"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"


def test_every_dependency_waits_on_a_condition() -> None:
    for name, service in compose_model()["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}"


def test_database_and_broker_urls_point_at_the_compose_backends() -> None:
    model = compose_model()["services"]
    for service in ("reports", "migrate"):
        url = model[service]["environment"]["REPORTS_DATABASE_URL"]
        assert DATABASE_URL.match(url), url
        assert COMPOSE_ENV["POSTGRES_PASSWORD"] in url
    assert model["gateway"]["environment"]["GATEWAY_BROKER_URL"] == BROKER_URL
    assert model["worker"]["environment"]["INFERENCE_BROKER_URL"] == BROKER_URL


def test_service_urls_use_compose_names_and_documented_ports() -> None:
    model = compose_model()["services"]
    assert (
        model["gateway"]["environment"]["GATEWAY_REPORTS_URL"]
        == f"http://reports:{services()['reports'].port}"
    )
    assert (
        model["worker"]["environment"]["INFERENCE_REPORTS_URL"]
        == f"http://reports:{services()['reports'].port}"
    )
    assert model["worker"]["environment"]["INFERENCE_OOD_URL"] == f"http://ood:{services()['ood'].port}"


def test_bundle_dirs_point_at_the_bundle_copied_into_the_image() -> None:
    model = compose_model()["services"]
    expected = "/app/models/skintriage-effnet-lite0/2.0.1"
    assert model["ood"]["environment"]["OOD_BUNDLE_DIR"] == expected
    assert model["worker"]["environment"]["INFERENCE_BUNDLE_DIR"] == expected


def test_postgres_16_and_redis_7_keep_data_in_named_volumes() -> None:
    model = compose_model()
    postgres, redis = model["services"]["postgres"], model["services"]["redis"]
    assert postgres["image"].startswith("postgres:16")
    assert redis["image"].startswith("redis:7")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert redis["command"][-2:] == ["--appendonly", "yes"]
    for service, target in ((postgres, "/var/lib/postgresql/data"), (redis, "/data")):
        [volume] = service["volumes"]
        assert volume["type"] == "volume" and volume["target"] == target
        assert volume["source"] in model["volumes"]


@pytest.mark.parametrize("service", sorted(compose_raw()["services"]))
def test_every_service_has_cpu_and_memory_limits(service: str) -> None:
    limits = compose_model()["services"][service]["deploy"]["resources"]["limits"]
    assert limits.get("cpus") and limits.get("memory")


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_run_from_the_one_image_without_privileges(service: str) -> None:
    svc = compose_model()["services"][service]
    assert svc["image"].startswith("skintriage:")
    assert svc["build"]["dockerfile"] == "Dockerfile"
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
