"""The alert-driven rollback path with real binaries on loopback, for the end-to-end test and the
benchmark: MLflow (given), the model server, the guard service, Prometheus and Alertmanager, with
configs generated from the shipped ones (rules, Alertmanager routes) and chosen intervals.

The degradation is injected the way the monitor step reports one: by writing ``monitoring_results``
rows (kind ``quality``: ``degraded`` = 1 and the live/expected average precision) for the newest
week into the monitoring store, through the ORM model. Nothing else is touched: the guard's exporter
reads them on the next scrape, the rule fires, Alertmanager calls the guard, the guard rolls back.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import Engine, delete, insert, select

from rollguard.db.models import AliasAudit, GuardCheckRow, MonitoringResult
from rollguard.settings import Settings
from tests.support.api_models import log_registered_version, train_booster
from tests.support.api_servers import start_api
from tests.support.servers import ServerProcess, free_port, venv_bin

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "prometheus" / "rules" / "rollguard.rules.yml"
ALERTMANAGER = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
TRIGGER = "RollguardLiveQualityDegraded"
TOKEN = "alert-webhook-token-0123456789abcdef"
WEEK = "1997-06-02"


def missing_binaries() -> str | None:
    """Why the stack cannot run here (a missing binary), or None."""
    for path, package in (
        (PROMETHEUS_BIN, "prometheus"),
        (ALERTMANAGER_BIN, "prometheus-alertmanager"),
    ):
        if not path.exists():
            return f"{path} not found (Debian package {package})"
    return None


@dataclass(frozen=True)
class Intervals:
    """The intervals of one setup, seconds.

    ``scrape``: Prometheus scrape interval; ``evaluation``: the rule groups' interval; ``trigger_for``:
    the rollback alert's ``for:``; ``group_wait`` / ``group_interval``: Alertmanager's, on the guard
    route; ``api_poll``: the model server's alias poll (``ROLLGUARD_API_POLL_SECONDS``).
    """

    name: str
    scrape: float
    evaluation: float
    trigger_for: float
    group_wait: float
    group_interval: float
    api_poll: float

    @property
    def worst_case_seconds(self) -> float:
        """Sum of the waits on the path: each stage may wait up to its full interval."""
        return self.scrape + self.evaluation + self.trigger_for + self.group_wait + self.api_poll

    @property
    def floor_seconds(self) -> float:
        """Waits that always elapse whatever the phase: the ``for:`` and the group wait."""
        return self.trigger_for + self.group_wait


def _duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


def shipped_intervals(trigger: str = TRIGGER) -> Intervals:
    """The intervals the stack ships for the rollback ``trigger`` alert: its rule group's interval
    and ``for:``, the Alertmanager guard route's waits, a 15 s scrape (docs/alerting.md) and the
    API's 5 s poll."""
    rules = yaml.safe_load(RULES.read_text())
    group, rule = next(
        (g, r) for g in rules["groups"] for r in g["rules"] if r.get("alert") == trigger
    )
    am = yaml.safe_load(ALERTMANAGER.read_text())
    route = next(r for r in am["route"]["routes"] if r["receiver"] == "rollguard-guard")
    return Intervals(
        name="shipped",
        scrape=15.0,
        evaluation=_seconds(group["interval"]),
        trigger_for=_seconds(rule["for"]),
        group_wait=_seconds(route["group_wait"]),
        group_interval=_seconds(route["group_interval"]),
        api_poll=Settings.model_fields["api_poll_seconds"].default,
    )


TEST_INTERVALS = Intervals(
    name="test", scrape=1.0, evaluation=1.0, trigger_for=1.0, group_wait=1.0, group_interval=1.0,
    api_poll=0.5,
)  # fmt: skip


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(f"unsupported duration {text!r}")


def write_rules(path: Path, iv: Intervals, triggers: tuple[str, ...] = (TRIGGER,)) -> Path:
    """The shipped rules with every group evaluated every ``iv.evaluation`` seconds and the
    ``for:`` of each rollback trigger in ``triggers`` set to ``iv.trigger_for``."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = _duration(iv.evaluation)
        for rule in group["rules"]:
            if rule.get("alert") in triggers:
                rule["for"] = _duration(iv.trigger_for)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_alertmanager(path: Path, iv: Intervals, guard_url: str, token_file: Path) -> Path:
    """The shipped Alertmanager config with the guard's URL and token file, and the guard route's
    waits set from ``iv``."""
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    route = next(r for r in doc["route"]["routes"] if r["receiver"] == "rollguard-guard")
    route["group_wait"] = _duration(iv.group_wait)
    route["group_interval"] = _duration(iv.group_interval)
    hook = next(r for r in doc["receivers"] if r["name"] == "rollguard-guard")["webhook_configs"][0]
    hook["url"] = f"{guard_url}/v1/alerts"
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def render_alertmanager_config(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``rollguard stack alertmanager-config --out out`` (this checkout first on the import
    path) with ``env`` on top of this process's environment less every ``ROLLGUARD_ALERT_*`` and
    ``ROLLGUARD_ENV`` variable."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ROLLGUARD_ALERT_") and k != "ROLLGUARD_ENV"
    }
    return subprocess.run(
        [venv_bin("rollguard"), "stack", "alertmanager-config", "--out", str(out)],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def write_prometheus(
    path: Path, iv: Intervals, rules: Path, api_port: int, guard_port: int, am_port: int
) -> Path:
    """A Prometheus config scraping the API (job ``rollguard-api``) and the guard (job
    ``rollguard-guard``), loading ``rules`` and sending alerts to Alertmanager."""
    doc = {
        "global": {
            "scrape_interval": _duration(iv.scrape),
            "evaluation_interval": _duration(iv.evaluation),
            "scrape_timeout": _duration(min(iv.scrape, 10.0)),
        },
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "rollguard-api",
                "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
            },
            {
                "job_name": "rollguard-guard",
                "static_configs": [{"targets": [f"127.0.0.1:{guard_port}"]}],
            },
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class AlertStack:
    """A running stack for one registered model with versions ``v1`` (previous) and ``v2`` (champion)."""

    root: Path
    intervals: Intervals
    settings: Settings
    engine: Engine
    v1: str
    v2: str
    api: ServerProcess
    guard: ServerProcess
    prometheus: ServerProcess
    alertmanager: ServerProcess
    token_file: Path
    servers: list[ServerProcess] = field(default_factory=list)

    def serving_version(self) -> str | None:
        """The version ``GET /v1/model`` says is serving (None when not ready)."""
        resp = httpx.get(self.api.url + "/v1/model", timeout=5)
        return resp.json().get("model_version") if resp.status_code == 200 else None

    def inject_degradation(self, version: str | None = None) -> datetime:
        """Write what the live guard writes when it finds the champion degraded (a
        ``guard_checks`` row, state ``degraded``), beside the monitor step's figures for that
        week; its time."""
        version = version or self.v2
        now = datetime.now(UTC)
        common = dict(
            model_name=self.settings.model_name,
            week=WEEK,
            model_version=version,
            kind="quality",
            feature="",
            sample_size=4000,
            computed_at=now,
        )
        rows = [
            {**common, "metric": "average_precision", "value": 0.21, "state": "ok"},
            {**common, "metric": "expected_average_precision", "value": 0.45, "state": "ok"},
            {
                **common,
                "metric": "degraded",
                "value": 1.0,
                "state": "ok",
                "detail": "live average precision 0.21 below the gate's 0.45 by more than the margin",
            },
        ]
        with self.engine.begin() as conn:
            conn.execute(
                delete(MonitoringResult).where(
                    MonitoringResult.model_name == self.settings.model_name,
                    MonitoringResult.week == WEEK,
                    MonitoringResult.kind == "quality",
                )
            )
            conn.execute(insert(MonitoringResult), rows)
            conn.execute(
                insert(GuardCheckRow).values(
                    model_name=self.settings.model_name,
                    champion_version=version,
                    state="degraded",
                    reason="injected: realized quality worse than the previous champion",
                    report="{}",
                    checked_at=now,
                )
            )
        return now

    def rollbacks(self) -> list[Any]:
        """The ``rollback`` audit rows of the model, oldest first."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(AliasAudit.__table__)
                .where(
                    AliasAudit.model_name == self.settings.model_name,
                    AliasAudit.action == "rollback",
                )
                .order_by(AliasAudit.id)
            ).all()

    def logs(self) -> str:
        """Tails of every server's log."""
        return "\n".join(f"--- {s.name}\n{s.log_tail(40)}" for s in self.servers)

    def stop(self) -> None:
        """Stop every server started for this stack (newest first) and close the store."""
        for server in reversed(self.servers):
            server.stop()
        self.engine.dispose()


def register_versions(tracking_uri: str, model_name: str, engine: Engine) -> tuple[str, str]:
    """Two real small XGBoost versions; ``champion`` = v2 and v1 the previous champion (retired),
    moved through :func:`registry_guard.registry.move_champion` as the pipeline does."""
    from mlflow import MlflowClient

    from registry_guard import registry

    v1 = log_registered_version(train_booster(seed=1, rounds=8), model_name, tracking_uri)
    v2 = log_registered_version(train_booster(seed=2, rounds=9), model_name, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    registry.move_champion(
        model_name, v1, expected=None, actor="pipeline", reason="bootstrap", client=client,
        engine=engine,
    )  # fmt: skip
    registry.move_champion(
        model_name, v2, expected=v1, actor="pipeline", reason="gate promote", client=client,
        engine=engine,
    )  # fmt: skip
    return v1, v2


def start_stack(
    root: Path,
    tracking_uri: str,
    iv: Intervals,
    *,
    cooldown_seconds: float = 900.0,
    register: Callable[[str, str, Engine], tuple[str, str]] = register_versions,
    triggers: tuple[str, ...] = (TRIGGER,),
    rules: Callable[[Path, Intervals], Path] | None = None,
    alertmanager_config: Callable[[Path, Intervals, str, Path], Path] = write_alertmanager,
) -> AlertStack:
    """Register two versions (``register(tracking_uri, model_name, engine)`` returns ``(previous,
    champion)``) and start API, guard, Alertmanager and Prometheus under ``root``; the rules'
    ``triggers`` get ``iv.trigger_for``, and the guard confirms live alerts with this Prometheus.

    ``rules(path, iv)`` (default: :func:`write_rules` with ``triggers``) and
    ``alertmanager_config(path, iv, guard_url, token_file)`` write the
    rules file and the Alertmanager config (default: the shipped ones, see :func:`write_rules` and
    :func:`write_alertmanager`).

    Raises:
        RuntimeError: a server did not become ready (with its log tail).
    """
    from rollguard.store import open_store

    root.mkdir(parents=True, exist_ok=True)
    home, logs = root / "home", root / "logs"
    model_name = f"alerts-{uuid.uuid4().hex[:8]}"
    settings = Settings(  # type: ignore[call-arg]
        home=home, env="test", _env_file=None, mlflow_tracking_uri=tracking_uri,
        model_name=model_name,
    )  # fmt: skip
    engine = open_store(settings)
    v1, v2 = register(tracking_uri, model_name, engine)
    prom_port = free_port()
    token_file = root / "guard_token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    servers: list[ServerProcess] = []
    try:
        api = start_api(
            home, tracking_uri, model_name, logs, token=TOKEN,
            ROLLGUARD_API_POLL_SECONDS=str(iv.api_poll),
        )  # fmt: skip
        servers.append(api)
        guard_port = free_port()
        guard = ServerProcess(
            "guard",
            [
                venv_bin("rollguard"),
                "serve",
                "guard",
                "--host",
                "127.0.0.1",
                "--port",
                str(guard_port),
            ],
            port=guard_port,
            ready_path="/healthz",
            log_dir=logs,
            env={
                "ROLLGUARD_HOME": str(home),
                "ROLLGUARD_ENV": "test",
                "MLFLOW_TRACKING_URI": tracking_uri,
                "ROLLGUARD_MODEL_NAME": model_name,
                "ROLLGUARD_GUARD_TOKEN_FILE": str(token_file),
                "ROLLGUARD_ROLLBACK_COOLDOWN_SECONDS": str(cooldown_seconds),
                "ROLLGUARD_PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}",
                "PYTHONPATH": str(ROOT),
            },
            cwd=ROOT,
        ).start(timeout=120)
        servers.append(guard)
        am_port = free_port()
        am_config = alertmanager_config(root / "alertmanager.yml", iv, guard.url, token_file)
        alertmanager = ServerProcess(
            "alertmanager",
            [
                str(ALERTMANAGER_BIN),
                f"--config.file={am_config}",
                f"--storage.path={root / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            port=am_port,
            ready_path="/-/ready",
            log_dir=logs,
        ).start(timeout=60)
        servers.append(alertmanager)
        rules_path = root / "rollguard.rules.yml"
        rules_file = rules(rules_path, iv) if rules else write_rules(rules_path, iv, triggers)
        prom_config = write_prometheus(
            root / "prometheus.yml", iv, rules_file, api.port, guard.port, am_port
        )
        prometheus = ServerProcess(
            "prometheus",
            [
                str(PROMETHEUS_BIN),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={root / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            port=prom_port,
            ready_path="/-/ready",
            log_dir=logs,
        ).start(timeout=60)
        servers.append(prometheus)
    except BaseException:
        for server in reversed(servers):
            server.stop()
        engine.dispose()
        raise
    return AlertStack(
        root, iv, settings, engine, v1, v2, api, guard, prometheus, alertmanager, token_file,
        servers,
    )  # fmt: skip


def wait_until(predicate, timeout: float, what: str, period: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value (returned); AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(period)


def targets_up(stack: AlertStack) -> bool:
    """True when Prometheus has scraped both the API and the guard successfully."""
    data = httpx.get(stack.prometheus.url + "/api/v1/targets", timeout=5).json()
    health = {t["labels"]["job"]: t["health"] for t in data["data"]["activeTargets"]}
    return health.get("rollguard-api") == "up" and health.get("rollguard-guard") == "up"


@dataclass(frozen=True)
class RollbackTiming:
    """Seconds from the injected degradation to each stage of the path (None: not observed).

    ``exported``: the guard's ``/metrics`` shows ``rollguard_guard_state{state="degraded"} 1``;
    ``firing``: Prometheus' ``/api/v1/alerts`` lists the trigger as firing; ``in_alertmanager``:
    Alertmanager's ``/api/v2/alerts`` has it; ``rolled_back``: ``moved_at`` of the rollback audit
    row; ``restored``: first ``GET /v1/model`` answer naming the previous version.
    """

    exported: float | None
    firing: float | None
    in_alertmanager: float | None
    rolled_back: float
    restored: float


def _exported(stack: AlertStack) -> bool:
    text = httpx.get(stack.guard.url + "/metrics", timeout=5).text
    return 'rollguard_guard_state{state="degraded"} 1.0' in text


def _firing(stack: AlertStack) -> bool:
    alerts = httpx.get(stack.prometheus.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return any(a["labels"]["alertname"] == TRIGGER and a["state"] == "firing" for a in alerts)


def _in_alertmanager(stack: AlertStack) -> bool:
    alerts = httpx.get(stack.alertmanager.url + "/api/v2/alerts", timeout=5).json()
    return any(a["labels"]["alertname"] == TRIGGER for a in alerts)


def measure_rollback(stack: AlertStack, timeout: float = 180.0) -> RollbackTiming:
    """Inject the degradation and wait for the API to serve v1 again, noting when each stage was
    first observed (every stage polled about every 50 ms)."""
    assert stack.serving_version() == stack.v2
    stages: dict[str, float] = {}
    probes = {"exported": _exported, "firing": _firing, "in_alertmanager": _in_alertmanager}
    t0 = time.monotonic()
    injected = stack.inject_degradation()

    def restored() -> bool:
        for name, probe in probes.items():
            if name not in stages:
                try:
                    if probe(stack):
                        stages[name] = time.monotonic() - t0
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
        return stack.serving_version() == stack.v1

    wait_until(restored, timeout, "API serving the previous version", period=0.02)
    restored_after = time.monotonic() - t0
    rows = [r for r in stack.rollbacks() if r.outcome == "moved"]
    moved_at = rows[0].moved_at if rows[0].moved_at.tzinfo else rows[0].moved_at.replace(tzinfo=UTC)
    return RollbackTiming(
        stages.get("exported"),
        stages.get("firing"),
        stages.get("in_alertmanager"),
        (moved_at - injected).total_seconds(),
        restored_after,
    )
