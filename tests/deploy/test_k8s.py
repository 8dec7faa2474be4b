"""k8s/: every object valid in strict mode against the Kubernetes OpenAPI schemas
(kubernetes-validate), the KEDA ScaledObject against its own schema, kustomize builds, and the
settings and commands agree with docs/ARCHITECTURE.md."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from tests.deploy.architecture_doc import check_command, env_names_for, services
from tests.deploy.manifests import K8S_DIR, Doc, k8s_documents, k8s_files, k8s_objects

# The oldest Kubernetes the manifests target (PDB policy/v1, HPA autoscaling/v2 and the
# restricted Pod Security labels are all older) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", kv.latest_version())
KEDA_SCHEMA = Path(__file__).with_name("schemas") / "keda-scaledobject.schema.json"
OWN_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): KEDA_SCHEMA}
DEPLOYMENTS = ("gateway", "ood", "reports", "worker")
HTTP_DEPLOYMENTS = ("gateway", "ood", "reports")
PLACEHOLDER = "CHANGE-ME"
# Required settings: those with no safe default. The GATEWAY_MAX_* limits and
# INFERENCE_ORT_THREADS have defaults in the services' settings.
REQUIRED = {
    "gateway": {"GATEWAY_REPORTS_URL", "GATEWAY_BROKER_URL", "GATEWAY_INTERNAL_TOKEN"},
    "ood": {"OOD_BUNDLE_DIR", "OOD_INTERNAL_TOKEN"},
    "reports": {"REPORTS_DATABASE_URL", "REPORTS_INTERNAL_TOKEN"},
    "migrate": {"REPORTS_DATABASE_URL"},
    "worker": {
        "INFERENCE_BROKER_URL",
        "INFERENCE_BUNDLE_DIR",
        "INFERENCE_OOD_URL",
        "INFERENCE_REPORTS_URL",
        "INFERENCE_INTERNAL_TOKEN",
    },
}


def _id(item: tuple[Path, Doc]) -> str:
    path, doc = item
    return f"{path.relative_to(K8S_DIR)}:{doc['kind']}/{doc['metadata']['name']}"


@cache
def _keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    # metadata and the HPA behavior $ref the strict Kubernetes definitions kubernetes-validate ships.
    version = f"v{kv.latest_version()}-local-strict"
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/{version}/_definitions.json", kv.latest_version()
    )
    registry: Registry[Any] = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions)
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _containers(workload: Doc) -> list[Doc]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def _env_sources(workload: Doc) -> dict[str, str]:
    """env name -> value for every variable a workload's first container gets (envFrom + env)."""
    [container] = _containers(workload)
    namespaces = {"configMapRef": k8s_objects("ConfigMap"), "secretRef": k8s_objects("Secret")}
    out: dict[str, str] = {}
    for source in container.get("envFrom", []):
        [(ref_kind, ref)] = source.items()
        obj = namespaces[ref_kind][ref["name"]]
        out.update(obj.get("data", {}) | obj.get("stringData", {}))
    out.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return out


def test_there_are_manifests() -> None:
    kinds = {doc["kind"] for _, doc in k8s_documents()}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Job", "Service", "Ingress"} <= kinds
    assert {"ScaledObject", "HorizontalPodAutoscaler", "StatefulSet"} <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", k8s_documents(), ids=_id)
def test_object_validates_strictly(item: tuple[Path, Doc], version: str) -> None:
    _, doc = item
    own = OWN_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if own is not None:
        errors = list(_keda_validator().iter_errors(doc))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
        return
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        pytest.fail(f"{'.'.join(map(str, exc.path))}: {exc.message}", pytrace=False)
    except kv.SchemaNotFoundError as exc:  # an unknown kind is a failure, not a warning
        pytest.fail(exc.message, pytrace=False)


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(k8s_objects("Deployment")["gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, kv.latest_version(), strict=True)


def test_keda_schema_rejects_a_misspelled_field_and_a_bad_list_length() -> None:
    scaled = k8s_objects("ScaledObject")["worker"]
    misspelled = copy.deepcopy(scaled)
    misspelled["spec"]["maxReplicas"] = misspelled["spec"].pop("maxReplicaCount")
    numeric = copy.deepcopy(scaled)
    numeric["spec"]["triggers"][0]["metadata"]["listLength"] = 8  # KEDA metadata values are strings
    assert not _keda_validator().is_valid(misspelled)
    assert not _keda_validator().is_valid(numeric)


def test_workers_scale_on_the_inference_queue() -> None:
    scaled = k8s_objects("ScaledObject")["worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "worker"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "inference"
    # The trigger must watch the Redis the workers consume from.
    broker = _env_sources(k8s_objects("Deployment")["worker"])["INFERENCE_BROKER_URL"]
    assert broker.startswith(
        f"redis://{trigger['metadata']['address']}/{trigger['metadata']['databaseIndex']}"
    )


def test_fallback_hpa_targets_the_workers_on_cpu() -> None:
    hpa = k8s_objects("HorizontalPodAutoscaler", base_only=False)["worker"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def _kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S_DIR.rglob("kustomization.yaml"))


@pytest.mark.parametrize("directory", _kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S_DIR)) or ".")
def test_kustomization_resources_exist(directory: Path) -> None:
    for resource in yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]:
        assert (directory / resource).exists(), resource


def test_base_kustomization_lists_every_base_manifest() -> None:
    base = K8S_DIR / "base"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in k8s_files() if p.parent == base}


def test_every_manifest_belongs_to_a_kustomization() -> None:
    listed = {
        (directory / resource).resolve()
        for directory in _kustomization_dirs()
        for resource in yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    }
    assert {p.resolve() for p in k8s_files()} <= listed


@pytest.mark.parametrize("overlay", ["", "overlays/no-keda", "overlays/dev-datastores"])
def test_kustomize_builds(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (which embeds kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kinds.count("Deployment") == 4
    assert ("ScaledObject" in kinds) != ("HorizontalPodAutoscaler" in kinds)
    for doc in yaml.safe_load_all(result.stdout):
        if doc and doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "skintriage", doc["metadata"]["name"]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_runs_the_documented_command(name: str) -> None:
    [container] = _containers(k8s_objects("Deployment")[name])
    assert check_command(name, container["command"]) == []


def test_migration_job_runs_the_documented_command() -> None:
    [container] = _containers(k8s_objects("Job")["migrate"])
    assert check_command("migrate", container["command"]) == []


@pytest.mark.parametrize("name", [*DEPLOYMENTS, "migrate"])
def test_env_names_are_the_documented_ones_and_complete(name: str) -> None:
    kind = "Job" if name == "migrate" else "Deployment"
    names = set(_env_sources(k8s_objects(kind)[name]))
    assert names <= env_names_for(name), names - env_names_for(name)
    assert REQUIRED[name] <= names, REQUIRED[name] - names


def test_configmaps_and_secrets_only_hold_documented_names() -> None:
    documented = set().union(*(row.env for row in services().values()))
    for kind in ("ConfigMap", "Secret"):
        for name, obj in k8s_objects(kind).items():
            keys = set(obj.get("data", {})) | set(obj.get("stringData", {}))
            assert keys <= documented, f"{kind}/{name}: {keys - documented}"


def test_secret_values_are_obvious_placeholders() -> None:
    for name, secret in k8s_objects("Secret").items():
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value or key.endswith("BROKER_URL"), f"{name}.{key}"
    tokens = {
        s["stringData"][k] for s in k8s_objects("Secret").values() for k in s["stringData"] if "TOKEN" in k
    }
    assert tokens == {PLACEHOLDER}


@pytest.mark.parametrize("name", HTTP_DEPLOYMENTS)
def test_http_deployment_probes_readyz_and_healthz_on_its_documented_port(name: str) -> None:
    [container] = _containers(k8s_objects("Deployment")[name])
    assert container["ports"] == [{"name": "http", "containerPort": services()[name].port}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = k8s_objects("Service")[name]
    assert service["spec"]["ports"][0]["port"] == services()[name].port
    assert service["spec"]["selector"] == k8s_objects("Deployment")[name]["spec"]["selector"]["matchLabels"]


def test_worker_probes_ping_itself_over_the_broker() -> None:
    [container] = _containers(k8s_objects("Deployment")["worker"])
    for probe in ("readinessProbe", "livenessProbe"):
        command = " ".join(container[probe]["exec"]["command"])
        assert "services.inference.celery_app:celery_app inspect ping -d celery@$HOSTNAME" in command


@pytest.mark.parametrize("name", [*DEPLOYMENTS, "migrate"])
def test_pods_run_as_non_root_with_requests_and_limits(name: str) -> None:
    kind = "Job" if name == "migrate" else "Deployment"
    pod = k8s_objects(kind)[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    for container in pod["containers"]:
        assert container["image"].startswith("skintriage:")
        assert (
            set(container["resources"]["requests"])
            == set(container["resources"]["limits"])
            == {"cpu", "memory"}
        )
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]


def test_ingress_exposes_only_the_gateway() -> None:
    [ingress] = k8s_objects("Ingress").values()
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"gateway"}


def test_in_cluster_urls_use_service_names_and_documented_ports() -> None:
    deployments = k8s_objects("Deployment")
    port = {name: services()[name].port for name in HTTP_DEPLOYMENTS}
    assert _env_sources(deployments["gateway"])["GATEWAY_REPORTS_URL"] == f"http://reports:{port['reports']}"
    worker = _env_sources(deployments["worker"])
    assert worker["INFERENCE_REPORTS_URL"] == f"http://reports:{port['reports']}"
    assert worker["INFERENCE_OOD_URL"] == f"http://ood:{port['ood']}"
