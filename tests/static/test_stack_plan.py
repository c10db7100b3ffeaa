"""``rollguard stack`` runs what docker-compose.yml runs: the same services, the same entry points
and the same Airflow configuration, checked without starting anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rollguard.settings import Settings
from rollguard.stack import (
    StackSecrets,
    alertmanager_config,
    api_targets,
    plan_stack,
    prometheus_config,
)
from tests.support.compose import ROOT, environment_of, load_compose

RAW = load_compose()
SERVICES = RAW["services"]
#: Compose services the process stack does not start: PostgreSQL and Redis are existing servers
#: given by URL (or SQLite instead of PostgreSQL).
EXTERNAL = {"postgres", "redis"}
#: Compose services `stack up` does not run as a process of their own: it writes Alertmanager's
#: config itself (stack_runner.write_configs: the shipped receivers, the guard on loopback)
#: instead of rendering the ROLLGUARD_ALERT_* receivers (docs/alerting.md, "Receivers").
#: Nor the MLflow users job: the process stack's MLflow (loopback, one person's machine) runs
#: without authentication (docs/security.md, "Registry access control", Limits).
#: Nor the UI key job: the process stack serves the API without keys (loopback, one person's
#: machine), so it has no UI key to register (rollguard-ui-key).
NOT_MIRRORED = {"alertmanager-config", "mlflow-users", "rollguard-ui-key"}
#: Compose options the process stack leaves out on purpose, per service (same reason).
UNMIRRORED_OPTIONS = {"mlflow": {"--app-name"}}
SECRETS = StackSecrets("fernet", "jwt", "api-key", "password", "guard", "admin")
#: Keys only the process stack sets: several Airflow processes on one host need distinct ports
#: and loopback addresses; the rest trims memory on a laptop.
LOCAL_ONLY = {
    "AIRFLOW_HOME", "AIRFLOW__API__HOST", "AIRFLOW__API__PORT", "AIRFLOW__API__WORKERS",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE", "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
}  # fmt: skip


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(home=tmp_path, _env_file=None, **extra)  # type: ignore[call-arg]


def _dockerfile_entry(target: str) -> tuple[list[str], list[str]]:
    """``ENTRYPOINT`` and ``CMD`` of a stage of the Dockerfile (exec form)."""
    text = (ROOT / "Dockerfile").read_text()
    stage = text.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
    found = dict(re.findall(r"^(ENTRYPOINT|CMD) (\[.*\])$", stage, re.M))
    return yaml.safe_load(found["ENTRYPOINT"]), yaml.safe_load(found.get("CMD", "[]"))


def _compose_argv(name: str) -> list[str]:
    """What the compose service runs: the image's entry point and the command (or its CMD)."""
    service = SERVICES[name]
    build = service.get("build")
    if build is None:  # an upstream image: its program, with the command given here
        return [service["image"].split("/")[-1].split(":")[0], *service.get("command", [])]
    if build.get("dockerfile") == "Dockerfile.airflow":
        return ["airflow", *service["command"]]  # the official image's entry point runs airflow
    entrypoint, cmd = _dockerfile_entry(build["target"])
    return [*entrypoint, *service.get("command", cmd)]


@pytest.mark.parametrize("executor", ["LocalExecutor", "CeleryExecutor"])
def test_every_compose_service_has_a_local_process(tmp_path: Path, executor: str) -> None:
    plan = plan_stack(_settings(tmp_path, stack_executor=executor), SECRETS, which=lambda n: n)
    mirrored = {s.compose for s in plan.services} | {j.compose for j in plan.jobs}
    expected = {
        name
        for name, svc in SERVICES.items()
        if name not in EXTERNAL | NOT_MIRRORED
        and (
            not svc.get("profiles")
            or (executor == "CeleryExecutor" and "celery" in svc["profiles"])
        )
    }
    assert mirrored == expected


@pytest.mark.parametrize("executor", ["LocalExecutor", "CeleryExecutor"])
def test_each_process_runs_the_compose_entry_point(tmp_path: Path, executor: str) -> None:
    """Same program and sub-command; options may differ only in value (ports, paths, workers)."""
    plan = plan_stack(_settings(tmp_path, stack_executor=executor), SECRETS, which=lambda n: n)
    for svc in plan.services:
        compose = _compose_argv(svc.compose)
        program = Path(svc.argv[0]).name
        assert (
            program.startswith(compose[0].replace("alertmanager", "prometheus-alertmanager"))
            or compose[0] in program
        ), (svc.name, svc.argv, compose)
        words = [a for a in compose[1:] if not a.startswith("-")]
        assert list(svc.argv[1 : 1 + len(words)]) == words, (svc.name, svc.argv, compose)
        options = {a.split("=")[0] for a in compose[1:] if a.startswith("--")}
        ours = {a.split("=")[0] for a in svc.argv[1:] if a.startswith("--")}
        skipped = UNMIRRORED_OPTIONS.get(svc.compose, set())
        assert options - skipped <= ours | {"--host", "--port"}, (svc.name, options - ours)


def test_airflow_processes_share_the_compose_configuration(tmp_path: Path) -> None:
    plan = plan_stack(
        _settings(tmp_path, stack_executor="CeleryExecutor", stack_postgres_url="postgresql://u@h/db"),
        SECRETS, which=lambda n: n,
    )  # fmt: skip
    compose_keys = {
        k for name in ("airflow-scheduler", "airflow-worker")
        for k in environment_of(SERVICES[name]) if k.startswith("AIRFLOW")
    }  # fmt: skip
    for svc in plan.services:
        if not svc.name.startswith("airflow-"):
            continue
        ours = {k for k in svc.env if k.startswith("AIRFLOW")}
        assert compose_keys <= ours, (svc.name, compose_keys - ours)
        assert ours - compose_keys <= LOCAL_ONLY, (svc.name, ours - compose_keys)
        assert svc.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    workers = [s for s in plan.services if s.compose == "airflow-worker"]
    assert len(workers) == 2
    names = [s.argv[s.argv.index("--celery-hostname") + 1] for s in workers]
    assert len(set(names)) == 2
    assert len({s.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] for s in workers}) == 2


def test_generated_prometheus_config_discovers_api_replicas_from_a_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path, stack_api_ports=[18001, 18002, 18003])
    plan = plan_stack(settings, SECRETS, which=lambda n: n)
    shipped = yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    doc = prometheus_config(shipped, settings, plan.paths)
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert set(jobs) == {j["job_name"] for j in shipped["scrape_configs"]}
    api = jobs["rollguard-api"]
    assert "static_configs" not in api
    assert api["file_sd_configs"][0]["files"] == [str(plan.paths.api_targets)]
    targets = api_targets(settings)
    assert [t["targets"] for t in targets] == [[f"127.0.0.1:{p}"] for p in (18001, 18002, 18003)]
    assert [t["labels"]["replica"] for t in targets] == ["api-1", "api-2", "api-3"]
    every = [t for j in jobs.values() for c in j.get("static_configs", []) for t in c["targets"]]
    assert all(t.startswith("127.0.0.1:") for t in every), every


def test_generated_alertmanager_config_calls_the_local_guard(tmp_path: Path) -> None:
    shipped = yaml.safe_load((ROOT / "monitoring/alertmanager/alertmanager.yml").read_text())
    doc = alertmanager_config(shipped, "http://127.0.0.1:18100", tmp_path / "token")
    hook = next(r for r in doc["receivers"] if r["name"] == "rollguard-guard")["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:18100/v1/alerts"
    assert hook["http_config"]["authorization"]["credentials_file"] == str(tmp_path / "token")
    assert doc["route"] == shipped["route"]


def test_grafana_is_absent_without_a_binary(tmp_path: Path) -> None:
    plan = plan_stack(_settings(tmp_path), SECRETS, which=lambda n: None)
    assert plan.service("grafana").absent == "no grafana binary on PATH"
