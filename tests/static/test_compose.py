"""Static checks of the docker-compose stack: there is no Docker engine on the development machines,
so the compose file, the Dockerfiles and the configuration they mount are checked here the way
Docker Compose, Prometheus and Grafana would read them.

Paths that other parts of the project provide (alert rules, Alertmanager config, Grafana dashboards
and their provider) are checked like every other mounted path: this suite fails until they exist.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tomllib
from graphlib import TopologicalSorter
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.compose import (
    ENV_EXAMPLE,
    ROOT,
    MissingVariable,
    bind_mounts,
    environment_of,
    interpolate,
    load_compose,
    published_ports,
    read_env_file,
    referenced_variables,
    section_table,
    versions_table,
)

sys.path.insert(0, str(ROOT / "deploy"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_image_sizes  # noqa: E402
import generate_env  # noqa: E402

RAW = load_compose()
EXAMPLE = read_env_file()
SERVICES: dict[str, dict[str, Any]] = RAW["services"]
ONE_SHOT = {
    "rollguard-migrate",
    "rollguard-ui-key",
    "airflow-init",
    "alertmanager-config",
    "mlflow-users",
}
PUBLISHED = {"ui", "api", "grafana", "mlflow", "airflow-api-server"}
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "FERNET")


def _generated_env() -> dict[str, str]:
    text = generate_env.render(ENV_EXAMPLE.read_text())
    env = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            env[name] = value
    return env


ENV = _generated_env()
COMPOSE = interpolate(RAW, ENV)


def _strings(obj: Any) -> list[str]:
    """Every string value in parsed YAML (comments are not values)."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    return []


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _is_secret(name: str) -> bool:
    return any(word in name for word in SECRET_WORDS)


# --- the file itself ------------------------------------------------------------------------------
def test_compose_file_validates_against_the_compose_specification() -> None:
    """The Compose Specification's JSON schema (vendored by check-jsonschema, Apache-2.0), applied
    to the file as written and after interpolation, as `docker compose config` does."""
    from jsonschema import Draft202012Validator

    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = Draft202012Validator(schema)
    for label, doc in (("as written", RAW), ("interpolated", COMPOSE)):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, f"{label}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]
        )


def test_every_long_running_service_has_a_healthcheck() -> None:
    missing = []
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"one-shot {name} must not restart"
            continue
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test"):
            missing.append(name)
        assert service.get("restart") in ("unless-stopped", "always"), f"{name}: restart policy"
    assert missing == []


def test_start_order_uses_conditions_and_has_no_cycle() -> None:
    """Every dependency is long-form with a condition that fits the dependency: one-shot jobs are
    waited for with service_completed_successfully, servers with service_healthy."""
    graph = {}
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        graph[name] = set(depends)
        for dep, spec in depends.items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dep}: {spec}"
    order = list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("rollguard-migrate") < order.index("api")
    assert order.index("airflow-init") < order.index("airflow-scheduler")


def test_one_shot_jobs_are_exactly_what_others_wait_for() -> None:
    awaited = {
        dep
        for service in SERVICES.values()
        for dep, spec in (service.get("depends_on") or {}).items()
        if spec.get("condition") == "service_completed_successfully"
    }
    assert awaited == ONE_SHOT
    assert SERVICES["rollguard-migrate"]["command"] == ["db", "upgrade"]
    assert SERVICES["rollguard-ui-key"]["command"][:3] == ["apikey", "create", "ui"]


def test_api_keys_are_on_and_the_ui_has_its_key_and_login() -> None:
    """The stack requires keys; the UI's key file is the one the one-shot job registers."""
    assert environment_of(SERVICES["api"])["ROLLGUARD_API_KEYS"] == "true"
    ui = environment_of(SERVICES["ui"])
    assert ui["ROLLGUARD_API_KEY_FILE"] in _secret_paths("ui")
    assert ui["ROLLGUARD_UI_AUTH_FILE"] in _secret_paths("ui")
    registered = SERVICES["rollguard-ui-key"]["command"][-1]
    assert registered == ui["ROLLGUARD_API_KEY_FILE"] and registered in _secret_paths(
        "rollguard-ui-key"
    )


# --- paths ----------------------------------------------------------------------------------------
def _mounted_and_build_paths() -> list[tuple[str, Path]]:
    paths = []
    for name, service in COMPOSE["services"].items():
        for source, _target in bind_mounts(service):
            paths.append((f"{name} mounts {source}", (ROOT / source).resolve()))
        build = service.get("build")
        if build:
            context = (ROOT / build.get("context", ".")).resolve()
            paths.append((f"{name} build context", context))
            paths.append((f"{name} dockerfile", context / build.get("dockerfile", "Dockerfile")))
    for secret in (COMPOSE.get("secrets") or {}).values():
        if "file" in secret:
            paths.append(("secret file", (ROOT / secret["file"]).resolve()))
    return sorted(set(paths))


@pytest.mark.parametrize(
    ("what", "path"), [pytest.param(w, p, id=w) for w, p in _mounted_and_build_paths()]
)
def test_every_mounted_path_and_build_context_exists(what: str, path: Path) -> None:
    assert path.exists(), f"{what}: {path.relative_to(ROOT)} does not exist"


def test_config_files_are_mounted_where_the_servers_read_them() -> None:
    mounts = {name: dict(bind_mounts(service)) for name, service in COMPOSE["services"].items()}
    assert mounts["prometheus"]["./monitoring/prometheus/rules"] == "/etc/prometheus/rules"
    assert mounts["prometheus"]["./monitoring/prometheus/prometheus.yml"] == (
        "/etc/prometheus/prometheus.yml"
    )
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    assert mounts["grafana"]["./grafana/provisioning/datasources"] == (
        "/etc/grafana/provisioning/datasources"
    )
    assert mounts["grafana"]["./grafana/provisioning/dashboards"] == (
        "/etc/grafana/provisioning/dashboards"
    )
    assert mounts["postgres"]["./deploy/postgres/init"] == "/docker-entrypoint-initdb.d"


def test_grafana_dashboard_provider_reads_the_mounted_dashboards() -> None:
    """The dashboard provider (Grafana work) must point at the folder this file mounts."""
    target = dict(bind_mounts(COMPOSE["services"]["grafana"]))["./grafana/dashboards"]
    providers = sorted((ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
    assert providers, "grafana/provisioning/dashboards/*.yml is missing"
    paths = [
        p.get("options", {}).get("path")
        for f in providers
        for p in (yaml.safe_load(f.read_text()) or {}).get("providers", [])
    ]
    assert any(path and path.rstrip("/").startswith(target) for path in paths), paths


# --- variables and secrets ------------------------------------------------------------------------
def test_every_variable_is_in_env_example() -> None:
    used = set().union(*(referenced_variables(t) for t in _strings(RAW)))
    # the `environment:` source of secrets names a variable too
    used |= {s["environment"] for s in (RAW.get("secrets") or {}).values() if "environment" in s}
    missing = sorted(used - set(EXAMPLE))
    assert missing == [], f"not in .env.example: {missing}"
    unused = sorted(set(EXAMPLE) - used)
    assert unused == [], f".env.example lists variables the stack never reads: {unused}"


def test_secrets_are_required_and_have_no_default() -> None:
    text = "\n".join(_strings(RAW))
    for name in sorted(EXAMPLE):
        if not _is_secret(name):
            continue
        assert EXAMPLE[name] == "", f".env.example must leave {name} empty"
        forms = re.findall(rf"\$\{{{name}(:?[-?+]?)", text)
        used_as_secret_source = any(
            s.get("environment") == name for s in (RAW.get("secrets") or {}).values()
        )
        assert forms or used_as_secret_source, f"{name} is never used"
        assert all(form == ":?" for form in forms), f"{name} must be ${{{name}:?...}}: {forms}"


def test_missing_secret_stops_compose_with_its_name() -> None:
    env = dict(ENV)
    env["GRAFANA_ADMIN_PASSWORD"] = ""
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(RAW, env)


def test_no_literal_secret_in_the_compose_file() -> None:
    """Secret-looking settings take their value from a required variable or a secret file."""
    for name, service in SERVICES.items():
        for key, value in environment_of(service).items():
            if not _is_secret(key) or key.endswith(("_FILE", "_USER", "_USERS")):
                continue
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), f"{name}.{key} = {value!r}"
        for key, value in environment_of(service).items():
            for match in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", value):
                assert match.group(1).startswith("${"), f"{name}.{key} has a literal password"


def test_env_file_is_ignored_by_git_and_docker() -> None:
    proc = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True, check=False
    )
    assert proc.returncode == 0, ".env must be in .gitignore"
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore and ".venv/" in dockerignore and ".git/" in dockerignore


def test_generated_env_fills_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXAMPLE:
        if name.startswith(generate_env.OPERATOR_PREFIX):
            monkeypatch.delenv(name, raising=False)
    out = tmp_path / ".env"
    assert generate_env.main(["--output", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    written = read_env_file(out)
    assert set(written) == set(EXAMPLE)
    for name, value in written.items():
        if name.startswith(generate_env.OPERATOR_PREFIX):
            assert value == EXAMPLE[name], f"{name} is the operator's to give, never generated"
        elif _is_secret(name):
            assert len(value) >= 32 and re.fullmatch(r"[A-Za-z0-9_=-]+", value), name
    assert len(base64.urlsafe_b64decode(written["AIRFLOW_FERNET_KEY"])) == 32
    assert re.fullmatch(r"rg_[0-9a-f]{8}_[A-Za-z0-9_-]{32}", written["ROLLGUARD_UI_API_KEY"])
    assert re.fullmatch(r"rollguard:[A-Za-z0-9_-]{43}", written["ROLLGUARD_UI_AUTH"])
    assert read_env_file(out)["ROLLGUARD_ADMIN_TOKEN"] != _generated_env()["ROLLGUARD_ADMIN_TOKEN"]
    assert generate_env.main(["--output", str(out)]) == 2, "an existing .env is never overwritten"
    interpolate(RAW, written)  # every required variable is satisfied


# --- ports, networks, images ----------------------------------------------------------------------
def test_published_ports_do_not_clash_and_only_the_front_doors_publish() -> None:
    seen: dict[tuple[str, int], str] = {}
    publishers = set()
    for name, service in COMPOSE["services"].items():
        for host_ip, host_port, _ in published_ports(service):
            publishers.add(name)
            for ip in {host_ip, "0.0.0.0"}:
                key = (ip, host_port)
                assert key not in seen, f"{name} and {seen[key]} both publish {host_port}"
            seen[(host_ip, host_port)] = name
            assert host_ip == "127.0.0.1", f"{name} publishes beyond loopback by default"
    assert publishers == PUBLISHED


def test_backend_network_is_internal_and_holds_the_databases() -> None:
    networks = COMPOSE["networks"]
    assert networks["backend"]["internal"] is True
    for name in ("postgres", "guard", "prometheus", "airflow-scheduler"):
        assert COMPOSE["services"][name]["networks"] == ["backend"], name


def test_only_alertmanager_reaches_the_outside_network() -> None:
    """Alertmanager must reach SMTP, the webhook and PagerDuty: it joins `egress`, a network that
    is not internal and that no other service joins; the backend stays internal."""
    networks = COMPOSE["networks"]
    assert COMPOSE["services"]["alertmanager"]["networks"] == ["backend", "egress"]
    assert not (networks["egress"] or {}).get("internal", False), "egress must not be internal"
    assert networks["backend"]["internal"] is True
    on_egress = {n for n, s in COMPOSE["services"].items() if "egress" in s.get("networks", [])}
    assert on_egress == {"alertmanager"}
    assert not published_ports(COMPOSE["services"]["alertmanager"])
    # The render job needs no network at all.
    assert COMPOSE["services"]["alertmanager-config"]["network_mode"] == "none"


def _service_ports() -> dict[str, set[int]]:
    """Container ports each service listens on (its published targets and known defaults)."""
    known = {
        "postgres": {5432},
        "redis": {6379},
        "mlflow": {5000},
        "api": {8000},
        "ui": {7860},
        "guard": {8100},
        "prometheus": {9090},
        "alertmanager": {9093},
        "grafana": {3000},
        "airflow-api-server": {8080},
    }
    for name, service in COMPOSE["services"].items():
        known.setdefault(name, set()).update(t for _, _, t in published_ports(service))
    return known


def _shares_network(a: str, b: str) -> bool:
    services = COMPOSE["services"]
    return bool(set(services[a].get("networks", [])) & set(services[b].get("networks", [])))


def test_every_service_url_names_a_reachable_service() -> None:
    """Host:port pairs in environments and commands name a service, on a port it listens on, on a
    network both share (this catches e.g. a UI that cannot reach the API)."""
    ports = _service_ports()
    pattern = re.compile(r"(?://|@)([a-z][a-z0-9-]*):(\d+)(?![\w@.-])")
    checked = 0
    for name, service in COMPOSE["services"].items():
        texts = list(environment_of(service).values()) + [
            str(c) for c in (service.get("command") or [])
        ]
        for text in texts:
            for host, port in pattern.findall(text):
                if host in ("localhost", "127", "0"):
                    continue
                checked += 1
                assert host in ports, f"{name} refers to unknown service {host}"
                assert int(port) in ports[host], f"{name}: {host} does not listen on {port}"
                assert _shares_network(name, host), f"{name} cannot reach {host}"
    assert checked >= 8


def test_every_image_tag_is_pinned() -> None:
    for name, service in COMPOSE["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image name"
        if service.get("build"):
            assert image.startswith("rollguard-"), f"{name}: own images are named rollguard-*"
            continue
        assert _pinned(image), f"{name}: image {image!r} is not pinned to a version"


def _pinned(ref: str) -> bool:
    if "@sha256:" in ref:
        return True
    name, _, tag = ref.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.search(r"\d", tag))


def _dockerfile_bases(path: Path) -> list[str]:
    text = path.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.I))
    bases = []
    for ref in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        if ref not in stages:
            bases.append(ref)
    bases += re.findall(r"COPY\s+--from=(\S+:\S+)", text)
    return bases


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.airflow"])
def test_dockerfile_base_images_are_pinned(dockerfile: str) -> None:
    bases = _dockerfile_bases(ROOT / dockerfile)
    assert bases
    for ref in bases:
        assert _pinned(ref), f"{dockerfile}: {ref} is not pinned"


def _locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = {p["version"] for p in lock["package"] if p["name"] == package}
    assert len(versions) == 1, f"{package}: {versions}"
    return versions.pop()


def test_airflow_image_is_the_official_one_of_the_locked_version() -> None:
    text = (ROOT / "Dockerfile.airflow").read_text()
    version = _locked_version("apache-airflow")
    image = re.search(r"^ARG AIRFLOW_IMAGE=(\S+)", text, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert image == f"apache/airflow:slim-{version}-python3.11"
    assert f"== '{version}'" in text, "the build-time version check must match the lock"
    python_image = re.search(
        r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)",
        (ROOT / "Dockerfile").read_text(),
        flags=re.MULTILINE,
    )
    assert python_image and python_image.group(1) == "3.11", "service images use the same Python"


def test_each_image_installs_only_its_dependency_group() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = set(pyproject["dependency-groups"])
    targets = {t.name: t.groups for t in bench_image_sizes.dockerfile_targets()}
    assert targets == {
        "api": ("api",),
        "ui": ("ui",),
        "guard": ("api", "pipeline"),
        "mlflow": ("tracking",),
    }
    assert bench_image_sizes.airflow_target().groups == ("pipeline",)
    for wanted in targets.values():
        assert set(wanted) <= groups
    text = _without_comments((ROOT / "Dockerfile").read_text()).replace("\\\n", " ")
    for line in re.findall(r"uv sync [^\n]*", text):
        for flag in ("--locked", "--no-dev", "--no-default-groups", "--no-editable"):
            assert flag in line, f"{flag} missing in: {line}"
    export = re.search(
        r"uv export [^\n]*", (ROOT / "Dockerfile.airflow").read_text().replace("\\\n", " ")
    )
    assert export and "--locked" in export.group(0) and "--no-default-groups" in export.group(0)


def test_compose_builds_existing_targets_and_images_run_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE))
    for name, service in COMPOSE["services"].items():
        build = service.get("build")
        if build and build.get("dockerfile", "Dockerfile") == "Dockerfile":
            assert build.get("target") in stages, f"{name}: unknown target {build.get('target')}"
            assert service["image"].startswith(f"rollguard-{build['target']}:"), name
    bodies = dict(
        re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\n(.*?)(?=^FROM\s|\Z)", text, re.MULTILINE | re.DOTALL)
    )
    runtime_users = re.findall(r"^USER\s+(\S+)", bodies["runtime"], flags=re.MULTILINE)
    assert runtime_users and not runtime_users[-1].startswith(("0", "root"))
    for target in ("api", "ui", "guard", "mlflow"):
        users = re.findall(r"^USER\s+(\S+)", bodies[target], flags=re.MULTILINE)
        effective = users[-1] if users else runtime_users[-1]
        assert not effective.startswith(("0", "root")), f"target {target} runs as root"
    assert re.search(r"^USER\s+50000", (ROOT / "Dockerfile.airflow").read_text(), re.MULTILINE)


# --- Prometheus, Alertmanager, Grafana ------------------------------------------------------------
PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"


def test_prometheus_targets_are_compose_services() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    ports = _service_ports()
    jobs = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                host = "prometheus" if host == "localhost" else host
                assert host in ports, f"job {job['job_name']}: no service {host}"
                assert int(port) in ports[host], f"job {job['job_name']}: {host} not on {port}"
                assert _shares_network("prometheus", host), f"prometheus cannot reach {host}"
                jobs[job["job_name"]] = host
    assert {"api", "guard", "prometheus", "alertmanager"} <= set(jobs.values())
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == "alertmanager:9093"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_alert_rules_select_jobs_that_prometheus_scrapes() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    job_names = {job["job_name"] for job in config["scrape_configs"]}
    rules = ROOT / "monitoring" / "prometheus" / "rules" / "rollguard.rules.yml"
    assert rules.exists(), "monitoring/prometheus/rules/rollguard.rules.yml is missing"
    used = set(re.findall(r'job\s*=~?\s*"([^"]+)"', rules.read_text()))
    assert used and used <= job_names, f"rules select jobs {used - job_names} nobody scrapes"


def _secret_paths(service: str) -> set[str]:
    """Where a service's secrets are mounted (``/run/secrets/<target or source>``)."""
    return {
        f"/run/secrets/{s if isinstance(s, str) else s.get('target', s['source'])}"
        for s in COMPOSE["services"][service].get("secrets", [])
    }


def test_alertmanager_reaches_the_guard_with_the_mounted_token() -> None:
    config_file = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
    assert config_file.exists(), "monitoring/alertmanager/alertmanager.yml is missing"
    config = yaml.safe_load(config_file.read_text())
    secrets = _secret_paths("alertmanager")
    guard_secrets = _secret_paths("guard")
    token_file = environment_of(COMPOSE["services"]["guard"])["ROLLGUARD_GUARD_TOKEN_FILE"]
    assert token_file in guard_secrets
    webhooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert webhooks, "no webhook receiver"
    for hook in webhooks:
        assert re.match(r"http://guard:8100/", hook["url"]), hook["url"]
        credentials = hook["http_config"]["authorization"]["credentials_file"]
        assert credentials in secrets, f"{credentials} is not mounted into alertmanager"
        assert credentials == token_file, "alertmanager and guard must read the same token"


def _named_volumes(service: str) -> dict[str, tuple[str, bool]]:
    """Named volumes of a service (short syntax): volume -> (container path, read-only)."""
    mounts = {}
    for volume in COMPOSE["services"][service].get("volumes") or []:
        parts = volume.split(":")
        if not parts[0].startswith((".", "/", "~")):
            mounts[parts[0]] = (parts[1], parts[2:] == ["ro"])
    return mounts


def test_alertmanager_runs_the_config_the_render_job_writes() -> None:
    """The one-shot job writes alertmanager.yml into a volume that Alertmanager mounts read-only
    and reads with --config.file; Alertmanager starts only after the job succeeded."""
    job, am = COMPOSE["services"]["alertmanager-config"], COMPOSE["services"]["alertmanager"]
    command = job["command"]
    assert command[:2] == ["stack", "alertmanager-config"]
    out = Path(command[command.index("--out") + 1])
    written = [(v, Path(p)) for v, (p, _) in _named_volumes("alertmanager-config").items()]
    ((volume, job_dir),) = [(v, p) for v, p in written if out.is_relative_to(p)]
    am_dir, read_only = _named_volumes("alertmanager")[volume]
    assert read_only, "Alertmanager must not write its rendered config"
    assert f"--config.file={Path(am_dir) / out.relative_to(job_dir)}" in am["command"]
    assert am["depends_on"]["alertmanager-config"] == {
        "condition": "service_completed_successfully"
    }
    # A fresh named volume takes the owner of the image folder it is mounted on: the runtime
    # image's home, owned by the uid the job runs as.
    assert job_dir == Path("/var/lib/rollguard")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown 50000:0 /var/lib/rollguard" in dockerfile


def test_receiver_settings_reach_the_render_job_and_secrets_both_containers() -> None:
    """Every receiver setting is passed to the render job; the secret ones as files mounted at the
    same path in the job and in Alertmanager (which reads them itself), sourced from operator
    variables; the job runs as production, so an empty configuration is refused."""
    from monitoring.alerting import ReceiverSettings

    env = environment_of(COMPOSE["services"]["alertmanager-config"])
    assert env["ROLLGUARD_ENV"] == "production"
    expected = {
        f"ROLLGUARD_ALERT_{name.upper()}"
        for name in ReceiverSettings.model_fields
        if not name.startswith("guard_")  # the shipped guard URL and token file are kept
    }
    assert {k for k in env if k.startswith("ROLLGUARD_ALERT_")} == expected
    job_secrets, am_secrets = _secret_paths("alertmanager-config"), _secret_paths("alertmanager")
    files = {k: v for k, v in env.items() if k.endswith("_FILE")}
    assert len(files) == 3
    for key, path in files.items():
        assert path in job_secrets and path in am_secrets, key
    for name in COMPOSE["services"]["alertmanager-config"]["secrets"]:
        source = RAW["secrets"][name]["environment"]
        assert source.startswith(generate_env.OPERATOR_PREFIX), name
        assert EXAMPLE[source] == "", f"{source} must be empty in .env.example"


def test_generated_env_takes_the_receivers_from_the_environment() -> None:
    given = {
        "ROLLGUARD_ALERT_EMAIL_TO": "oncall@example.com, lead@example.com",
        "ROLLGUARD_ALERT_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/x",
        "ROLLGUARD_ADMIN_TOKEN": "not-taken-from-the-environment",
    }
    text = generate_env.render(ENV_EXAMPLE.read_text(), given)
    written = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert written["ROLLGUARD_ALERT_EMAIL_TO"] == given["ROLLGUARD_ALERT_EMAIL_TO"]
    assert written["ROLLGUARD_ALERT_WEBHOOK_URL"] == given["ROLLGUARD_ALERT_WEBHOOK_URL"]
    assert written["ROLLGUARD_ALERT_SMTP_SMARTHOST"] == ""
    assert written["ROLLGUARD_ADMIN_TOKEN"] != given["ROLLGUARD_ADMIN_TOKEN"]
    assert generate_env.receivers_given(text)
    assert not generate_env.receivers_given(generate_env.render(ENV_EXAMPLE.read_text(), {}))
    with pytest.raises(ValueError, match="ROLLGUARD_ALERT_EMAIL_TO must be one line"):
        generate_env.render(ENV_EXAMPLE.read_text(), {"ROLLGUARD_ALERT_EMAIL_TO": "a@b\nX=1"})


DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yml"


def test_grafana_datasources_have_fixed_uids_and_reach_services() -> None:
    grafana_env = environment_of(COMPOSE["services"]["grafana"])
    text = DATASOURCES.read_text()
    for var in set().union(*(referenced_variables(t) for t in _strings(yaml.safe_load(text)))):
        assert var in grafana_env, f"datasources.yml reads ${var}, not set for grafana"
    config = yaml.safe_load(interpolate(text, grafana_env))
    by_uid = {d["uid"]: d for d in config["datasources"]}
    assert set(by_uid) == {"prometheus", "rollguard-store", "alertmanager"}
    ports = _service_ports()
    for uid, source in by_uid.items():
        host, port = re.sub(r"^https?://", "", source["url"]).split("/")[0].rsplit(":", 1)
        assert host in ports and int(port) in ports[host], f"{uid}: {source['url']}"
        assert _shares_network("grafana", host), f"grafana cannot reach {host} ({uid})"
    store = by_uid["rollguard-store"]
    assert store["type"] in ("grafana-postgresql-datasource", "postgres")
    assert store["user"] == "grafana", "the store datasource uses the read-only role"
    assert store["jsonData"]["database"] == "rollguard"


def test_grafana_datasources_hold_no_credentials() -> None:
    config = yaml.safe_load(DATASOURCES.read_text())
    for source in config["datasources"]:
        for key, value in (source.get("secureJsonData") or {}).items():
            assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", str(value)), f"{source['uid']}.{key}"
        assert "password" not in source and "basicAuthPassword" not in source


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """``promtool check config`` on a copy whose rule_files point at the repository's rules folder
    (in the container it is /etc/prometheus/rules); promtool checks those rule files too."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    rules_dir = ROOT / "monitoring" / "prometheus" / "rules"
    config["rule_files"] = [str(rules_dir / Path(p).name) for p in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", str(copy)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if rules_dir.is_dir() and any(rules_dir.glob("*.yml")):
        assert "rule files found" in proc.stdout and "SUCCESS: 0 rule files" not in proc.stdout


# --- scripts ------------------------------------------------------------------------------------
SCRIPTS = ["deploy/postgres/init/10-rollguard-databases.sh", "deploy/airflow/init.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_parse_and_are_executable(script: str) -> None:
    path = ROOT / script
    assert path.stat().st_mode & 0o111, f"{script} must be executable"
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    proc = subprocess.run(
        [shellcheck, str(ROOT / script)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


def test_airflow_init_runs_the_script_baked_into_the_image() -> None:
    text = (ROOT / "Dockerfile.airflow").read_text()
    copied = re.search(r"^COPY\s+(?:--chown=\S+\s+)?deploy/airflow/\s+(\S+)", text, re.MULTILINE)
    assert copied, "Dockerfile.airflow must copy deploy/airflow/"
    (script,) = SERVICES["airflow-init"]["command"]
    assert SERVICES["airflow-init"]["entrypoint"] == ["/bin/bash"]
    assert script.startswith(copied.group(1))
    assert (ROOT / "deploy" / "airflow" / script.removeprefix(copied.group(1))).is_file()
    dags = re.search(r"^COPY\s+(?:--chown=\S+\s+)?pipeline/dags/\s+(\S+)", text, re.MULTILINE)
    assert (
        dags
        and dags.group(1).rstrip("/")
        == environment_of(SERVICES["airflow-scheduler"])["AIRFLOW__CORE__DAGS_FOLDER"]
    )


# --- MLflow access control (docs/security.md, "Registry access control") ---------------------------
#: The MLflow identity each MLflow-using service runs as, and the identities it may switch to.
MLFLOW_IDENTITIES = {
    "api": ("reader", {}),
    "guard": ("guard", {}),
    **{
        name: ("pipeline", {"GATE": "gate", "GUARD": "guard"})
        for name in SERVICES
        if name.startswith("airflow-")
    },
}


def test_mlflow_runs_rollguards_auth_app_with_the_mounted_config() -> None:
    import configparser

    mlflow = COMPOSE["services"]["mlflow"]
    assert "--app-name=rollguard-auth" in mlflow["command"]
    env = environment_of(mlflow)
    mounts = {target: source for source, target in bind_mounts(mlflow)}
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]
    assert config_path in mounts, (
        "the auth config is not mounted where MLFLOW_AUTH_CONFIG_PATH says"
    )
    config = configparser.ConfigParser()
    config.read(ROOT / mounts[config_path])
    assert config["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert config["mlflow"]["database_uri"].startswith("sqlite:////var/lib/mlflow/")
    assert "admin_password" not in config["mlflow"], "the admin password comes from .env"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == ENV["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == ENV["MLFLOW_FLASK_SECRET_KEY"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry = pyproject["project"]["entry-points"]["mlflow.app"]["rollguard-auth"]
    assert entry == "rollguard.mlflow_auth:create_app"
    assert any(
        isinstance(d, str) and d.startswith("mlflow[auth]")
        for d in pyproject["dependency-groups"]["tracking"]
    )


def test_every_mlflow_client_service_has_its_identity_and_only_its_passwords() -> None:
    for name, (user, switches) in MLFLOW_IDENTITIES.items():
        env = environment_of(COMPOSE["services"][name])
        mounted = _secret_paths(name)
        assert env["ROLLGUARD_MLFLOW_USERNAME"] == user, name
        wanted = {f"/run/secrets/mlflow_{user}_password"}
        assert env["ROLLGUARD_MLFLOW_PASSWORD_FILE"] in wanted, name
        for setting, other in switches.items():
            path = env[f"ROLLGUARD_MLFLOW_{setting}_PASSWORD_FILE"]
            assert path == f"/run/secrets/mlflow_{other}_password", name
            wanted.add(path)
        assert {p for p in mounted if "/mlflow_" in p} == wanted, f"{name} mounts {mounted}"
    # Nobody but the provisioning job holds the admin's password as a file.
    holders = {n for n in SERVICES if "/run/secrets/mlflow_admin_password" in _secret_paths(n)}
    assert holders == {"mlflow-users"}


def test_mlflow_users_job_provisions_every_identity_before_its_users_start() -> None:
    job = COMPOSE["services"]["mlflow-users"]
    assert job["command"][:2] == ["stack", "mlflow-users"]
    secrets_dir = job["command"][job["command"].index("--secrets-dir") + 1]
    assert _secret_paths("mlflow-users") == {
        f"{secrets_dir}/mlflow_{u}_password"
        for u in ("admin", "pipeline", "gate", "guard", "reader")
    }
    for name in ("api", "guard", "airflow-scheduler"):
        depends = COMPOSE["services"][name]["depends_on"]
        assert depends["mlflow-users"]["condition"] == "service_completed_successfully", name


# --- limits, log rotation, versions (docs/deploy.md, "Limits", "Logs", "Versions") ---------------
#: Headroom over the measured peak that docs/deploy.md, "Limits", states.
MEMORY_HEADROOM = 1.5
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def _bytes(value: str) -> int:
    """Compose's byte value (``768M``, ``1.5g``, ``512m``, ``100k``) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(value).strip().lower())
    assert match, f"not a byte value: {value!r}"
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _resources(name: str) -> dict[str, Any]:
    return (COMPOSE["services"][name].get("deploy") or {}).get("resources") or {}


LIMITS_TABLE = {row["service"]: row for row in section_table("Limits")}


def test_every_service_has_memory_and_cpu_limits_compose_applies_without_swarm() -> None:
    """``deploy.resources``: ``docker compose up`` applies ``limits.memory``, ``limits.cpus`` and
    ``reservations.memory`` to a plain container; ``reservations.cpus`` only means something to
    Swarm, and the service-level ``mem_limit``/``cpus`` must not contradict them (Compose refuses)."""
    for name, service in COMPOSE["services"].items():
        resources = _resources(name)
        limits, reserved = resources.get("limits") or {}, resources.get("reservations") or {}
        assert {"memory", "cpus"} <= limits.keys(), f"{name}: limits {limits}"
        assert 0 < float(limits["cpus"]) <= 2.0, f"{name}: cpus {limits['cpus']}"
        assert 0 < _bytes(reserved.get("memory", "0")) <= _bytes(limits["memory"]), name
        assert "cpus" not in reserved, f"{name}: a CPU reservation is Swarm-only"
        assert not {"mem_limit", "mem_reservation", "cpus", "cpu_count"} & service.keys(), name


def test_limits_are_the_documented_measured_peaks_with_headroom() -> None:
    """Every service is in the "Limits" table with the limits the compose file sets, and each
    memory limit is at least its measured peak times the stated headroom."""
    assert set(LIMITS_TABLE) == set(COMPOSE["services"]), set(LIMITS_TABLE) ^ set(SERVICES)
    for name, row in LIMITS_TABLE.items():
        limits = _resources(name)["limits"]
        assert _bytes(row["memory limit"]) == _bytes(limits["memory"]), name
        assert float(row["cpus"]) == float(limits["cpus"]), name
        assert _bytes(row["reservation"]) == _bytes(_resources(name)["reservations"]["memory"])
        peak = row["peak MiB"]
        if peak.isdigit():  # measured (else the row says why not and what the limit rests on)
            assert _bytes(limits["memory"]) >= int(peak) * 2**20 * MEMORY_HEADROOM, name


@pytest.mark.parametrize(
    ("service", "setting"),
    [
        ("airflow-scheduler", "AIRFLOW__CORE__PARALLELISM"),
        ("airflow-worker", "AIRFLOW__CELERY__WORKER_CONCURRENCY"),
    ],
)
def test_task_runners_cannot_outgrow_their_limit(service: str, setting: str) -> None:
    """The LocalExecutor runs tasks inside the scheduler's container (Celery: the worker's): its
    limit holds the measured scheduler process plus as many measured training slots (a worker
    with its training task) as may run at once, so a training spike ends in that container."""
    slots = int(environment_of(COMPOSE["services"][service])[setting])
    row = LIMITS_TABLE["airflow-scheduler"]
    main, slot = int(row["main MiB"]) * 2**20, int(row["slot MiB"]) * 2**20
    assert 1 <= slots <= 4
    assert _bytes(_resources(service)["limits"]["memory"]) >= main + slots * slot


def test_every_service_rotates_its_logs() -> None:
    """One json-file set-up (the ``x-logging`` anchor) on every service: logs are capped per
    container at max-size times max-file."""
    shared = RAW["x-logging"]
    assert shared["driver"] == "json-file"
    options = shared["options"]
    assert all(isinstance(v, str) for v in options.values()), "logging options are strings"
    assert _bytes(options["max-size"]) * int(options["max-file"]) <= 100 * 2**20
    assert int(options["max-file"]) >= 2
    for name, service in SERVICES.items():
        assert service.get("logging") == shared, f"{name}: no log rotation"


VERSIONS = versions_table()


@pytest.mark.parametrize(
    ("component", "service"),
    [
        ("PostgreSQL", "postgres"),
        ("PostgreSQL (shared test databases)", "postgres"),
        ("Prometheus", "prometheus"),
        ("Alertmanager", "alertmanager"),
    ],
)
def test_shipped_images_are_the_versions_docs_state(component: str, service: str) -> None:
    """The "Versions" table names the image each server ships as and the version the tests run;
    tests/integration/test_service_versions.py checks the running side."""
    row = VERSIONS[component]
    assert COMPOSE["services"][service]["image"] == row["image"]
    tag = row["image"].rsplit(":", 1)[1]
    shipped = re.match(r"v?(\d+\.\d+)", tag)
    assert shipped, tag
    gap = row["tests"] != shipped.group(1) and not row["tests"].startswith(shipped.group(1) + ".")
    assert gap == (row["gap"] != "none"), f"{component}: the gap column says {row['gap']!r}"


def test_prometheus_reaches_alertmanager_with_an_api_both_versions_serve() -> None:
    """Alertmanager 0.27 (shipped) no longer serves API v1, which Prometheus 2.42 (tested) could
    still be told to use: the shipped config must leave api_version at v2 (both default to it)."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    for manager in config["alerting"]["alertmanagers"]:
        assert manager.get("api_version", "v2") == "v2"


def _keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def test_alertmanager_config_uses_matchers_not_the_deprecated_match_fields() -> None:
    """``match``/``match_re`` and the inhibit rules' ``source_match*``/``target_match*`` are
    deprecated since Alertmanager 0.22 for ``matchers``; both 0.25 (tested) and 0.27 (shipped)
    read ``matchers`` the same way, and amtool 0.25's strict parse (test_alert_config.py) rejects
    any field 0.25 does not know."""
    deprecated = {"match", "match_re", "source_match", "source_match_re", "target_match"}
    deprecated |= {"target_match_re"}
    doc = yaml.safe_load((ROOT / "monitoring" / "alertmanager" / "alertmanager.yml").read_text())
    assert not deprecated & _keys(doc)
