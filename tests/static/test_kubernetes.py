"""Static checks of the Kubernetes deployment (deploy/kubernetes/, guide docs/kubernetes.md): no
cluster, kubectl or Helm is needed. Every manifest the kustomization lists is validated against
the Kubernetes OpenAPI schemas of :data:`KUBERNETES_VERSION` (strict: unknown fields are errors)
by ``kubernetes-validate``; then what the schemas cannot know: the autoscaler scales the API on a
metric the API really exports, every container is bounded and non-root, images are the
Dockerfiles' targets, secrets are mounted or referenced and never written into a manifest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from api.metrics import ServingMetrics
from tests.support.compose import ROOT, load_compose

#: The Kubernetes release the manifests are validated against (autoscaling/v2, policy/v1 and
#: batch/v1 with ttlSecondsAfterFinished are all GA there).
KUBERNETES_VERSION = "1.33.0"

K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
ADAPTER = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
AIRFLOW = yaml.safe_load((K8S / "airflow" / "values.yaml").read_text())
#: The official Airflow chart's values schema, chart 1.22.0 (provenance: its README.md).
AIRFLOW_SCHEMA = ROOT / "tests" / "fixtures" / "airflow-chart" / "values.schema.json"
#: Words of an environment variable's name (split at ``_``) that make its value a secret.
SECRET_WORDS = frozenset({"PASSWORD", "TOKEN", "SECRET", "FERNET", "CREDENTIALS", "KEY"})


def _is_secret_name(name: str) -> bool:
    """``ROLLGUARD_ADMIN_TOKEN``, ``..._SECRET_KEY``: yes; ``ROLLGUARD_API_KEYS`` (a switch) and
    ``*_FILE`` (a path): no."""
    words = name.upper().split("_")
    return words[-1] != "FILE" and bool(SECRET_WORDS & set(words))


#: Pod-template kinds and where their pod spec sits.
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for name in KUSTOMIZATION["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc is not None:
                docs.append((name, doc))
    return docs


DOCS = _documents()


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} expected, found {len(found)}"
    return found[0]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in DOCS:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for where, pod in _pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{where}/{container['name']}", pod, container


def _dockerfile_targets() -> dict[str, list[str]]:
    """Runtime targets of the Dockerfile and each one's CMD (``FROM runtime AS api`` ...); a
    target without CMD (the UI runs its ENTRYPOINT alone) maps to ``[]``."""
    text = (ROOT / "Dockerfile").read_text()
    targets = {}
    for block in re.split(r"^FROM ", text, flags=re.M)[1:]:
        head = block.splitlines()[0]
        match = re.match(r"runtime AS (\w+)$", head.strip())
        if not match or not re.search(r"^ENTRYPOINT ", block, flags=re.M):
            continue
        cmd = re.search(r"^CMD (\[.*\])$", block, flags=re.M)
        targets[match.group(1)] = yaml.safe_load(cmd.group(1)) if cmd else []
    return targets


def _served_metric_series() -> dict[str, list[str]]:
    """Series names the API's registry exposes (counters as ``_total``) and their labels."""
    metrics = ServingMetrics.create()
    series: dict[str, list[str]] = {}
    for family in metrics.registry.collect():
        names = {
            "counter": [family.name + "_total"],
            "histogram": [family.name + s for s in ("_bucket", "_sum", "_count")],
        }.get(family.type, [family.name])
        for name in names:
            series[name] = []
    series["rollguard_http_requests_total"] = list(metrics.http_requests._labelnames)
    return series


# --- every manifest is a valid Kubernetes object ---------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk
    assert KUSTOMIZATION["namespace"] == _named("Namespace", "rollguard")["metadata"]["name"]


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in DOCS],
    ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in DOCS],
)
def test_manifest_validates_strictly(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


# --- the autoscaler ----------------------------------------------------------------------------------
def test_autoscaler_scales_the_api_deployment_on_cpu_and_request_rate() -> None:
    hpa = _named("HorizontalPodAutoscaler", "api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    deployment = _named("Deployment", target["name"])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "rollguard-api:"
    )
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Resource"]["resource"]["target"]["type"] == "Utilization"
    rule = ADAPTER["rules"]["custom"][0]
    assert metrics["Pods"]["pods"]["metric"]["name"] == rule["name"]["as"]
    assert 1 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]
    assert hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # Utilisation is a share of the CPU request: without one the CPU metric has no meaning.
    api = deployment["spec"]["template"]["spec"]["containers"][0]
    assert api["resources"]["requests"]["cpu"]


def test_adapter_rule_reads_a_counter_the_api_exports() -> None:
    """The rule's series is read from api/metrics.py (not a copy of its name), with the labels
    the metrics query uses; the routes it leaves out are the API's own probe routes."""
    served = _served_metric_series()
    rule = ADAPTER["rules"]["custom"][0]
    series = re.match(r"^(\w+)\{", rule["seriesQuery"])
    assert series is not None
    name = series.group(1)
    assert name in served, f"{name} is not a metric of api/metrics.py"
    assert name.endswith("_total")  # a counter: rate() of it is requests per second
    assert re.fullmatch(rule["name"]["matches"], name)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "rate(<<.Series>>" in rule["metricsQuery"]
    excluded = re.search(r'route!~"([^"]+)"', rule["metricsQuery"])
    assert excluded is not None and "route" in served[name]
    app = (ROOT / "api" / "app.py").read_text()
    for route in excluded.group(1).split("|"):
        assert f'@router.get("{route}"' in app, route


def test_api_probes_use_the_health_routes() -> None:
    api = _named("Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    app = (ROOT / "api" / "app.py").read_text()
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for path in ("/readyz", "/healthz"):
        assert f'@router.get("{path}"' in app


def test_prometheus_scrapes_pods_with_the_rules_job_names_and_pod_labels(tmp_path: Path) -> None:
    config = yaml.safe_load(_named("ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose_jobs = yaml.safe_load(
        (ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text()
    )["scrape_configs"]
    for job in ("rollguard-api", "rollguard-guard"):
        assert job in {j["job_name"] for j in compose_jobs}
        targets = {r.get("target_label") for r in jobs[job]["relabel_configs"]}
        assert {"namespace", "pod", "__address__"} <= targets
    api_pods = _named("Deployment", "api")["spec"]["template"]["metadata"]
    assert api_pods["annotations"]["prometheus.io/scrape"] == "true"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    # Debian's Prometheus is built without Kubernetes discovery (promtool rejects the field), so
    # promtool checks the rest, relabelling included, with file discovery in its place.
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    config["rule_files"] = [
        str(p) for p in (ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml")
    ]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", str(copy)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- every container ---------------------------------------------------------------------------------
@pytest.mark.parametrize("where,pod,container", [pytest.param(*c, id=c[0]) for c in _containers()])
def test_container_is_bounded_and_non_root(
    where: str, pod: dict[str, Any], container: dict[str, Any]
) -> None:
    resources = container.get("resources", {})
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(section, {})), f"{where}: {section}"
    pod_ctx = pod.get("securityContext", {})
    ctx = {**pod_ctx, **container.get("securityContext", {})}
    assert ctx.get("runAsNonRoot") is True, where
    assert ctx.get("runAsUser", 0) != 0, where
    assert ctx.get("allowPrivilegeEscalation") is False, where
    assert "ALL" in ctx.get("capabilities", {}).get("drop", []), where
    assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


def test_images_are_the_dockerfile_targets_with_one_tag() -> None:
    targets = _dockerfile_targets()
    assert set(targets) == {"api", "ui", "guard", "mlflow"}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    compose = load_compose()["services"]
    third_party = {s["image"] for s in compose.values() if not s["image"].startswith("rollguard-")}
    used = set()
    for where, pod, container in _containers():
        image = container["image"]
        repo, _, tag = image.partition(":")
        if not repo.startswith("rollguard-"):
            assert image in third_party, f"{where}: {image} is not the image compose pins"
            continue
        target = repo.removeprefix("rollguard-")
        assert target in targets, f"{where}: no Dockerfile target {target}"
        assert tag == version, where
        # Rollguard images run as the Dockerfile's USER 50000:0.
        assert pod["securityContext"]["runAsUser"] == 50000, where
        used.add(target)
        if where.startswith("Deployment/") and target != "mlflow":
            args = container.get("args", [])
            assert args == targets[target], f"{where} runs {args}"
    assert used == set(targets)


def test_secrets_are_mounted_or_referenced_never_written() -> None:
    assert not _of_kind("Secret"), "Secrets are created by the operator (docs/kubernetes.md)"
    for where, pod, container in _containers():
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        secret_paths = [
            mounts[v["name"]]
            for v in pod.get("volumes", [])
            if v["name"] in mounts and ("secret" in v or "projected" in v)
        ]
        for env in container.get("env", []):
            name = env["name"]
            if "value" not in env:
                continue
            value = str(env["value"])
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{where}: {name}"
            if name.endswith("_FILE"):
                assert any(value.startswith(p.rstrip("/") + "/") for p in secret_paths), (
                    f"{where}: {name}={value} is not in a mounted Secret"
                )
            else:
                assert not _is_secret_name(name), f"{where}: {name} is literal"
    for volume in (v for _, pod in _pod_specs() for v in pod.get("volumes", [])):
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] & 0o007 == 0, volume["name"]


def test_referenced_configmaps_and_claims_exist() -> None:
    configmaps = {doc["metadata"]["name"] for doc in _of_kind("ConfigMap")}
    claims = {doc["metadata"]["name"] for doc in _of_kind("PersistentVolumeClaim")}
    for where, pod in _pod_specs():
        for volume in pod.get("volumes", []):
            if "configMap" in volume and not volume["configMap"].get("optional"):
                assert volume["configMap"]["name"] in configmaps, where
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, where


def test_services_select_pods_and_name_their_ports() -> None:
    templates = {
        doc["metadata"]["name"]: doc["spec"]["template"]
        for _, doc in DOCS
        if doc["kind"] in {"Deployment", "StatefulSet"}
    }
    for service in _of_kind("Service"):
        name = service["metadata"]["name"]
        template = templates[name]
        selector = service["spec"]["selector"]
        assert selector.items() <= template["metadata"]["labels"].items(), name
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, name


@pytest.mark.parametrize(
    "configmap,key,source",
    [
        ("mlflow-auth", "basic_auth.ini", "deploy/mlflow/basic_auth.ini"),
        (
            "postgres-init",
            "10-rollguard-databases.sh",
            "deploy/postgres/init/10-rollguard-databases.sh",
        ),
    ],
)
def test_configmap_copies_equal_their_files(configmap: str, key: str, source: str) -> None:
    assert _named("ConfigMap", configmap)["data"][key] == (ROOT / source).read_text()


# --- Airflow's chart values ------------------------------------------------------------------------
def test_airflow_values_run_the_rollguard_image_like_compose() -> None:
    assert AIRFLOW["executor"] in {"CeleryExecutor", "KubernetesExecutor"}
    dockerfile = (ROOT / "Dockerfile.airflow").read_text()
    base = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:slim-([\d.]+)-", dockerfile, re.M)
    assert base is not None and AIRFLOW["airflowVersion"] == base.group(1)
    assert "-t rollguard-airflow " in dockerfile
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert AIRFLOW["images"]["airflow"] == {
        "repository": "rollguard-airflow",
        "tag": version,
        "pullPolicy": "IfNotPresent",
    }
    assert (AIRFLOW["uid"], AIRFLOW["gid"]) == (50000, 0)
    assert (
        AIRFLOW["redis"]["uid"] != 0 and AIRFLOW["redis"]["securityContexts"]["pod"]["runAsNonRoot"]
    )
    compose_env = load_compose()["services"]["airflow-scheduler"]["environment"]
    wanted = {k for k in compose_env if k.startswith(("ROLLGUARD_", "MLFLOW_"))}
    given = {e["name"] for e in AIRFLOW["env"]} | {s["envName"] for s in AIRFLOW["secret"]}
    assert wanted <= given, wanted - given
    for env in AIRFLOW["env"]:
        if env["name"].endswith("_FILE"):
            mounts = {m["mountPath"] for m in AIRFLOW["volumeMounts"]}
            assert any(env["value"].startswith(m + "/") for m in mounts), env["name"]
        else:
            assert not any(w in env["name"] for w in SECRET_WORDS), env["name"]
    assert not re.search(r"://[^/@\s]*:[^/@\s]*@", yaml.safe_dump(AIRFLOW))


def test_airflow_values_validate_against_the_charts_schema() -> None:
    """As ``helm install`` validates values (JSON Schema draft 7, the chart's own schema); the
    schema lets unknown top-level keys through, so those are checked against its properties."""
    schema = json.loads(AIRFLOW_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(AIRFLOW)]
    assert errors == []
    assert set(AIRFLOW) <= set(schema["properties"]), set(AIRFLOW) - set(schema["properties"])
    assert re.fullmatch(schema["properties"]["executor"]["pattern"], AIRFLOW["executor"])


def test_config_maps_hold_no_empty_values() -> None:
    """An empty value still sets the variable: MLflow's S3 client refuses an empty
    MLFLOW_S3_ENDPOINT_URL (every artifact call fails), so optional settings are left out."""
    for config_map in _of_kind("ConfigMap"):
        for key, value in (config_map.get("data") or {}).items():
            assert value != "", f"ConfigMap {config_map['metadata']['name']}: {key} is empty"
