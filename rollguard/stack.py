"""The full stack as local processes (``rollguard stack up | status | down``): pure definitions.

:func:`plan_stack` turns :class:`~rollguard.settings.Settings` and the stack's generated secrets into
the ordered list of :class:`Service` objects that docker-compose.yml runs as containers: the same
entry points (``mlflow server``, ``airflow api-server | scheduler | dag-processor | triggerer |
celery worker``, ``rollguard serve api | ui | guard``, Prometheus, Alertmanager, Grafana) with the
same ``AIRFLOW__*`` configuration, bound to 127.0.0.1 on configurable ports. PostgreSQL is not
started: the stack uses an existing server (``ROLLGUARD_STACK_POSTGRES_URL``) or, by default,
SQLite files under ``ROLLGUARD_HOME`` like the embedded main job. Nothing here touches a process or
a file; :mod:`rollguard.stack_runner` starts, waits for, stops and inspects the processes.
tests/static/test_stack_plan.py keeps this list in step with docker-compose.yml.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from rollguard.settings import Settings

#: The repository (or installed source) root: the DAGs, the Prometheus and Alertmanager files.
ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = ROOT / "pipeline" / "dags"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
RULES_DIR = ROOT / "monitoring" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
GRAFANA_PROVISIONING = ROOT / "grafana" / "provisioning"
#: Debian's package binaries (``prometheus``, ``prometheus-alertmanager``) first, then upstream's.
BINARIES = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "grafana": ("grafana", "grafana-server"),
}
#: The simple auth manager's user of the stack (role admin).
AIRFLOW_ADMIN = "admin"
#: Databases the stack creates on ``stack_postgres_url`` (suffixes of ``stack_db_prefix``).
DATABASES = ("airflow", "mlflow", "store", "optuna")
#: ``[core] hostname_callable`` of the stack's Airflow: the worker's name, so that task instances
#: say which Celery worker ran them (every worker of one machine has the same FQDN).
HOSTNAME_CALLABLE = "rollguard.stack.task_hostname"
HOSTNAME_ENV = "ROLLGUARD_STACK_HOSTNAME"


def task_hostname() -> str:
    """Host name Airflow records on task instances: ``ROLLGUARD_STACK_HOSTNAME`` when set (each
    stack worker sets its own), else the machine's FQDN (Airflow's default)."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


@dataclass(frozen=True)
class StackSecrets:
    """Generated once per ``ROLLGUARD_HOME`` (``stack/secrets.json``, mode 600): Airflow's Fernet
    key, JWT secret and API secret key (every Airflow process must share them), the Airflow admin's
    password, the guard's webhook token and the API's admin token."""

    fernet_key: str
    jwt_secret: str
    api_secret_key: str
    airflow_admin_password: str
    guard_token: str
    admin_token: str


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state, all under ``home``: ``logs/<service>.log``,
    ``stack/run/<service>.pid``, Airflow's home, generated configs and server data."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "stack"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def guard_token(self) -> Path:
        return self.root / "guard_token"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def airflow_passwords(self) -> Path:
        return self.airflow_home / "passwords.json"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    @property
    def api_targets(self) -> Path:
        """Prometheus file-based service discovery: one target per API replica."""
        return self.prometheus / "targets" / "api.json"

    @property
    def alertmanager(self) -> Path:
        return self.root / "alertmanager"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"


@dataclass(frozen=True)
class Readiness:
    """How a service shows it is ready: ``GET url`` answers 2xx (any status when ``any_status``),
    and, when ``field`` is set, the JSON answer's dotted path ``field[0]`` equals ``field[1]``."""

    url: str
    field: tuple[str, str] | None = None
    any_status: bool = False


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack.

    Attributes:
        name: unique name; the compose service's name, with ``-<n>`` for replicas 2..n.
        compose: the docker-compose.yml service it mirrors.
        argv: the command line (absolute executable first).
        env: variables set on top of the caller's environment.
        url: where a person reaches it (None: no HTTP interface).
        ready: readiness check.
        absent: why it cannot run on this machine (a missing binary), else None.
        port: the loopback port it listens on (checked free before it starts), if any.
    """

    name: str
    compose: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    ready: Readiness | None = None
    absent: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class Job:
    """A one-shot command run before the services (compose's ``rollguard-migrate`` and
    ``airflow-init``), in order; a non-zero exit stops ``stack up``."""

    name: str
    compose: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackPlan:
    """Everything ``stack up`` does, in order: databases to create (PostgreSQL only), jobs, then
    services. ``urls`` holds the stores' URLs (with credentials: never printed)."""

    paths: StackPaths
    databases: tuple[str, ...]
    jobs: tuple[Job, ...]
    services: tuple[Service, ...]
    urls: Mapping[str, str]

    def service(self, name: str) -> Service:
        """The service called ``name``.

        Raises:
            KeyError: no such service.
        """
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)


def executable(name: str) -> str:
    """A console script beside the running interpreter (the project's venv), else on PATH, else
    the bare name (the runner reports it as missing)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or name


def database_urls(settings: Settings, paths: StackPaths) -> dict[str, str]:
    """SQLAlchemy URLs of the stack's stores: ``airflow``, ``airflow_async``, ``mlflow``,
    ``store`` and ``optuna``. With ``stack_postgres_url`` each is a database
    ``<stack_db_prefix>_<name>`` on that server (psycopg 3); else SQLite files under home (the
    embedded main job's MLflow, store and Optuna files, so the stack continues where it stopped)."""
    if settings.stack_postgres_url is None:
        airflow = f"sqlite:///{paths.airflow_home / 'airflow.db'}"
        return {
            "airflow": airflow,
            "airflow_async": "",  # Airflow derives its async SQLite URL itself
            "mlflow": f"sqlite:///{settings.home / 'mlflow.db'}",
            "store": settings.monitoring_db_url,
            "optuna": settings.optuna_url,
        }
    base = make_url(settings.stack_postgres_url)

    def url(name: str, driver: str = "postgresql+psycopg") -> str:
        database = f"{settings.stack_db_prefix}_{name}"
        return base.set(drivername=driver, database=database).render_as_string(hide_password=False)

    return {
        "airflow": url("airflow"),
        "airflow_async": url("airflow", "postgresql+psycopg_async"),
        "mlflow": url("mlflow"),
        "store": url("store"),
        "optuna": url("optuna"),
    }


def _local(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def api_ports(settings: Settings) -> list[int]:
    """One port per API replica (``stack_api_ports``, default ``[api_port]``)."""
    return list(settings.stack_api_ports) or [settings.api_port]


def _rollguard_env(settings: Settings, urls: Mapping[str, str], secrets: StackSecrets) -> dict:
    admin = settings.admin_token.get_secret_value() if settings.admin_token else secrets.admin_token
    mlflow = _local(settings.stack_mlflow_port)
    return {
        "ROLLGUARD_HOME": str(settings.home),
        "ROLLGUARD_ENV": settings.env,
        "ROLLGUARD_MODEL_NAME": settings.model_name,
        "ROLLGUARD_DATABASE_URL": urls["store"],
        "ROLLGUARD_OPTUNA_STORAGE_URL": urls["optuna"],
        "MLFLOW_TRACKING_URI": mlflow,
        "ROLLGUARD_MLFLOW_TRACKING_URI": mlflow,
        "ROLLGUARD_ADMIN_TOKEN": admin,
    }


def airflow_env(
    settings: Settings, paths: StackPaths, urls: Mapping[str, str], secrets: StackSecrets
) -> dict[str, str]:
    """The ``AIRFLOW__*`` configuration every Airflow process of the stack shares: the compose
    file's (executor, simple auth manager, secrets, execution API URL, metadata database) plus
    what one machine needs (loopback URLs, distinct log-server ports, one api-server worker)."""
    api = _local(settings.stack_airflow_port)
    env = {
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__EXECUTOR": settings.stack_executor,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
        "simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(paths.airflow_passwords),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        "AIRFLOW__CORE__FERNET_KEY": secrets.fernet_key,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": urls["airflow"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.jwt_secret,
        "AIRFLOW__API__SECRET_KEY": secrets.api_secret_key,
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.stack_airflow_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
            settings.stack_scheduler_health_port
        ),
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "false",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.stack_worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.stack_trigger_log_port),
    }
    if urls["airflow_async"]:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = urls["airflow_async"]
    if settings.stack_executor == "CeleryExecutor":
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": settings.stack_redis_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + urls["airflow"],
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                # Every key the broker writes starts with this prefix (a shared Redis stays tidy).
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": (
                    settings.stack_redis_prefix
                ),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            }
        )
    return env


def _airflow_services(settings: Settings, env: Mapping[str, str]) -> list[Service]:
    airflow = executable("airflow")
    api = _local(settings.stack_airflow_port)
    health = f"{api}/api/v2/monitor/health"
    services = [
        Service(
            "airflow-api-server", "airflow-api-server", (airflow, "api-server"), env, api,
            Readiness(f"{api}/api/v2/version"), port=settings.stack_airflow_port,
        ),
        Service(
            "airflow-scheduler", "airflow-scheduler", (airflow, "scheduler"), env, None,
            Readiness(f"{_local(settings.stack_scheduler_health_port)}/health"),
            port=settings.stack_scheduler_health_port,
        ),
        Service(
            "airflow-dag-processor", "airflow-dag-processor", (airflow, "dag-processor"), env,
            None, Readiness(health, ("dag_processor.status", "healthy")),
        ),
        Service(
            "airflow-triggerer", "airflow-triggerer", (airflow, "triggerer"), env, None,
            Readiness(health, ("triggerer.status", "healthy")),
        ),
    ]  # fmt: skip
    if settings.stack_executor == "CeleryExecutor":
        host = socket.gethostname()
        for n in range(1, settings.stack_celery_workers + 1):
            name = f"worker{n}@{host}"
            log_port = settings.stack_worker_log_port + n - 1
            services.append(
                Service(
                    "airflow-worker" if n == 1 else f"airflow-worker-{n}",
                    "airflow-worker",
                    (airflow, "celery", "worker", "--celery-hostname", name),
                    {
                        **env,
                        HOSTNAME_ENV: name,
                        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
                    },
                    None,
                    # The worker's log server answers once the worker has started (any status).
                    Readiness(_local(log_port), any_status=True),
                    port=log_port,
                )
            )
    return services


def _rollguard_services(
    settings: Settings, paths: StackPaths, env: Mapping[str, str]
) -> list[Service]:
    rollguard = executable("rollguard")
    ports = api_ports(settings)
    services = []
    for n, port in enumerate(ports, 1):
        services.append(
            Service(
                "api" if n == 1 else f"api-{n}", "api", (rollguard, "serve", "api"),
                {
                    **env, "ROLLGUARD_API_HOST": "127.0.0.1", "ROLLGUARD_API_PORT": str(port),
                    "ROLLGUARD_API_REPLICA_ID": f"api-{n}",
                },
                _local(port), Readiness(f"{_local(port)}/healthz"), port=port,
            )
        )  # fmt: skip
    guard = _local(settings.guard_port)
    services.append(
        Service(
            "guard", "guard", (rollguard, "serve", "guard"),
            {
                **env, "ROLLGUARD_GUARD_HOST": "127.0.0.1",
                "ROLLGUARD_GUARD_PORT": str(settings.guard_port),
                "ROLLGUARD_GUARD_TOKEN_FILE": str(paths.guard_token),
                "ROLLGUARD_PROMETHEUS_URL": _local(settings.stack_prometheus_port),
            },
            guard, Readiness(f"{guard}/healthz"), port=settings.guard_port,
        )
    )  # fmt: skip
    ui = _local(settings.ui_port)
    services.append(
        Service(
            "ui", "ui", (executable("rollguard-ui"),),
            {
                "ROLLGUARD_ENV": settings.env, "ROLLGUARD_UI_HOST": "127.0.0.1",
                "ROLLGUARD_UI_PORT": str(settings.ui_port), "ROLLGUARD_UI_API_URL": _local(ports[0]),
            },
            ui, Readiness(f"{ui}/"), port=settings.ui_port,
        )
    )  # fmt: skip
    return services


def _find(names: tuple[str, ...], which: Callable[[str], str | None]) -> str | None:
    for name in names:
        found = which(name)
        if found:
            return found
    return None


def _monitoring_services(
    settings: Settings,
    paths: StackPaths,
    secrets: StackSecrets,
    which: Callable[[str], str | None],
) -> list[Service]:
    services = []
    prom = _local(settings.stack_prometheus_port)
    am = _local(settings.stack_alertmanager_port)
    binary = _find(BINARIES["alertmanager"], which)
    services.append(
        Service(
            "alertmanager", "alertmanager",
            (
                binary or "prometheus-alertmanager",
                f"--config.file={paths.alertmanager / 'alertmanager.yml'}",
                f"--storage.path={paths.alertmanager / 'data'}",
                f"--web.listen-address=127.0.0.1:{settings.stack_alertmanager_port}",
                "--cluster.listen-address=",  # one instance: no gossip port to clash
            ),
            {}, am, Readiness(f"{am}/-/ready"),
            None if binary else "no prometheus-alertmanager binary on PATH",
            settings.stack_alertmanager_port,
        )
    )  # fmt: skip
    binary = _find(BINARIES["prometheus"], which)
    services.append(
        Service(
            "prometheus", "prometheus",
            (
                binary or "prometheus",
                f"--config.file={paths.prometheus / 'prometheus.yml'}",
                f"--storage.tsdb.path={paths.prometheus / 'data'}",
                "--storage.tsdb.retention.time=30d",
                "--web.enable-lifecycle",
                f"--web.listen-address=127.0.0.1:{settings.stack_prometheus_port}",
            ),
            {}, prom, Readiness(f"{prom}/-/ready"),
            None if binary else "no prometheus binary on PATH",
            settings.stack_prometheus_port,
        )
    )  # fmt: skip
    binary = _find(BINARIES["grafana"], which)
    grafana = _local(settings.stack_grafana_port)
    services.append(
        Service(
            "grafana", "grafana",
            (binary or "grafana", "server", "--homepath=/usr/share/grafana"),
            {
                "GF_SERVER_HTTP_ADDR": "127.0.0.1",
                "GF_SERVER_HTTP_PORT": str(settings.stack_grafana_port),
                "GF_PATHS_DATA": str(paths.root / "grafana"),
                "GF_PATHS_PROVISIONING": str(GRAFANA_PROVISIONING),
                "GF_SECURITY_ADMIN_PASSWORD": secrets.airflow_admin_password,
                "GF_USERS_ALLOW_SIGN_UP": "false",
                "GF_ANALYTICS_REPORTING_ENABLED": "false",
            },
            grafana, Readiness(f"{grafana}/api/health"),
            None if binary else "no grafana binary on PATH",
            settings.stack_grafana_port,
        )
    )  # fmt: skip
    return services


def plan_stack(
    settings: Settings,
    secrets: StackSecrets,
    *,
    which: Callable[[str], str | None] = shutil.which,
) -> StackPlan:
    """The stack for ``settings``: databases, one-shot jobs and services in start order (the
    compose file's ``depends_on`` order: MLflow, Airflow, API replicas, guard, UI, Alertmanager,
    Prometheus, Grafana). ``which`` finds the Prometheus, Alertmanager and Grafana binaries."""
    paths = StackPaths(settings.home)
    urls = database_urls(settings, paths)
    rg_env = _rollguard_env(settings, urls, secrets)
    af_env = {**rg_env, **airflow_env(settings, paths, urls, secrets)}
    mlflow = _local(settings.stack_mlflow_port)
    mlflow_service = Service(
        "mlflow", "mlflow",
        (
            executable("mlflow"), "server", "--host=127.0.0.1",
            f"--port={settings.stack_mlflow_port}", "--workers=1", "--serve-artifacts",
            f"--artifacts-destination={paths.mlflow_artifacts}",
        ),
        {
            "MLFLOW_SERVER_ALLOWED_HOSTS": "localhost,localhost:*,127.0.0.1,127.0.0.1:*",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_BACKEND_STORE_URI": urls["mlflow"],
        },
        mlflow, Readiness(f"{mlflow}/health"), port=settings.stack_mlflow_port,
    )  # fmt: skip
    jobs = (
        Job("rollguard-migrate", "rollguard-migrate", (executable("rollguard"), "db", "upgrade"),
            rg_env),
        Job("airflow-init", "airflow-init", (executable("airflow"), "db", "migrate"), af_env),
    )  # fmt: skip
    services = [
        mlflow_service,
        *_airflow_services(settings, af_env),
        *_rollguard_services(settings, paths, rg_env),
        *_monitoring_services(settings, paths, secrets, which),
    ]
    databases = (
        tuple(f"{settings.stack_db_prefix}_{n}" for n in DATABASES)
        if settings.stack_postgres_url
        else ()
    )
    return StackPlan(paths, databases, jobs, tuple(services), urls)


# --- generated configuration (pure: documents in, documents out) ---------------------------------
def prometheus_config(
    shipped: dict[str, Any], settings: Settings, paths: StackPaths
) -> dict[str, Any]:
    """The shipped Prometheus config (monitoring/prometheus/prometheus.yml) for the local stack:
    the compose host names replaced by loopback ports, the rules read from the repository, the
    global intervals set to ``stack_scrape_seconds``, and the API found by file-based service
    discovery (``paths.api_targets``, one target per replica) instead of one static target."""
    doc = dict(shipped)
    scrape = settings.stack_scrape_seconds
    doc["global"] = {
        **shipped.get("global", {}),
        "scrape_interval": f"{int(scrape * 1000)}ms",
        "evaluation_interval": f"{int(scrape * 1000)}ms",
        "scrape_timeout": f"{int(min(scrape, 10.0) * 1000)}ms",
    }
    doc["rule_files"] = [str(RULES_DIR / "*.yml")]
    local = {
        "guard:8100": f"127.0.0.1:{settings.guard_port}",
        "alertmanager:9093": f"127.0.0.1:{settings.stack_alertmanager_port}",
        "localhost:9090": f"127.0.0.1:{settings.stack_prometheus_port}",
    }
    doc["alerting"] = {
        "alertmanagers": [{"static_configs": [{"targets": [local["alertmanager:9093"]]}]}]
    }
    jobs = []
    for job in shipped["scrape_configs"]:
        job = dict(job)
        if job["job_name"] == "rollguard-api":
            job.pop("static_configs", None)
            job["file_sd_configs"] = [{"files": [str(paths.api_targets)], "refresh_interval": "5s"}]
        else:
            job["static_configs"] = [
                {"targets": [local.get(t, t) for t in c["targets"]]} for c in job["static_configs"]
            ]
        if "scrape_interval" in job:  # a job's own interval never exceeds the global one here
            job["scrape_interval"] = doc["global"]["scrape_interval"]
            job["scrape_timeout"] = doc["global"]["scrape_timeout"]
        jobs.append(job)
    doc["scrape_configs"] = jobs
    return doc


def api_targets(settings: Settings) -> list[dict[str, Any]]:
    """File-based service discovery document: one target group per API replica, labelled with
    its replica id (``api-<n>``, as ``ROLLGUARD_API_REPLICA_ID``)."""
    return [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"replica": f"api-{n}"}}
        for n, port in enumerate(api_ports(settings), 1)
    ]


def alertmanager_config(shipped: dict[str, Any], guard_url: str, token_file: Path) -> dict:
    """The shipped Alertmanager config with the guard webhook at ``guard_url`` and its bearer
    token read from ``token_file``."""
    doc = dict(shipped)
    receivers = []
    for receiver in shipped["receivers"]:
        receiver = dict(receiver)
        if receiver["name"] == "rollguard-guard":
            hooks = []
            for hook in receiver["webhook_configs"]:
                hook = {**hook, "url": f"{guard_url}/v1/alerts"}
                http = dict(hook.get("http_config", {}))
                http["authorization"] = {
                    **http.get("authorization", {}),
                    "credentials_file": str(token_file),
                }
                hook["http_config"] = http
                hooks.append(hook)
            receiver["webhook_configs"] = hooks
        receivers.append(receiver)
    doc["receivers"] = receivers
    return doc
