"""Every query of the committed Grafana dashboards, and every alert rule expression, executed for
real.

A short real replay (CDNOW weeks ingested, a model trained (with the training-profile tag the
pipeline sets), gated and scored, a rejected challenger, the monitor step, a live-guard check, a
forced promotion rolled back by a person, the DAG's report step) fills the monitoring store on
SQLite. Then:

- the model server (uvicorn, serving the champion from a real MLflow server) takes some traffic
  (among it 600 real customer rows of the replay's current week, enough to fill the live signals'
  minimum window of 300 rows), the guard service (``rollguard serve guard``) exports the store at ``/metrics``, and a real
  Prometheus (``/usr/bin/prometheus``, scrape and rule interval 1 s, the shipped alert rules) scrapes
  both. Each PromQL query of the dashboards must parse and return data; each alert expression must
  parse, and the ``bool`` form of each of its ``or`` operands (see
  :func:`tests.support.grafana_queries.with_bool`) must return data, i.e. every series it reads
  exists.
- each SQL query (panels, template variables, annotations) runs on that SQLite store and on a
  migrated PostgreSQL store holding the same rows, and must return rows.

The queries and rules that read the model server's live signals of issue 19 (``rollguard_live_score``
... see :data:`tests.support.grafana_queries.LIVE_SERIES`, and the ``$version`` variable) are run
by tests of their own (``test_live_*``), so that the others do not depend on them.

Grafana's variables are replaced as :mod:`tests.support.grafana_queries` documents:
``$__rate_interval`` = 30s, ``$__interval`` = 5s, ``$__range`` = 5m; ``$route``, ``$model`` and
``$feature`` take every value their own variable query returns (the "All" selection).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine, insert, select

from grafana.dashboards_src import DEFAULT_OUT, PER_USECASE, SHARED
from grafana.dashboards_src.inventory import Query, load, queries
from rollguard.settings import Settings
from rollguard.usecase import default_usecase_name
from tests.support.grafana_queries import (
    expand_promql,
    expand_sql,
    or_operands,
    reads_live_series,
    variable_kinds,
    with_bool,
)
from tests.support.servers import ServerProcess, free_port, venv_bin

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
RULES = ROOT / "monitoring" / "prometheus" / "rules"
TOKEN = "grafana-test-token-0123456789abcdef"
#: Tables the dashboards read (copied to PostgreSQL).
READ_TABLES = ("monitoring_results", "alias_audit", "gate_decisions", "guard_checks")

#: PromQL queries that may legitimately return nothing, with the reason. Everything else must
#: return data.
MAY_BE_EMPTY = {
    'ALERTS{alertstate=~"firing|pending"}': "no alert is pending or firing when nothing is wrong",
}

#: SQL result columns that may be NULL in every row of this replay, with the reason.
MAY_BE_NULL = {
    "Rolled back to": "the replay's guard check finds a healthy champion and rolls nothing back",
}

#: The replay runs the default use case: the shared dashboards and that use case's.
DEFAULT_USECASE = default_usecase_name()
DOCS = {name: load(DEFAULT_OUT / name) for name in SHARED} | {
    name: load(DEFAULT_OUT / DEFAULT_USECASE / name) for name in PER_USECASE
}
ALL = [q for doc in DOCS.values() for q in queries(doc)]
PROMQL = [q for q in ALL if q.language == "promql"]
SQL = [q for q in ALL if q.language == "sql"]
#: The dashboards' PromQL queries that read the model server's live signals (issue 19).
LIVE_PROMQL = [q for q in PROMQL if reads_live_series(q.text)]
#: Real customer rows of the replay's current week sent to /v1/predict, in 6 rounds: more than the
#: live window's default minimum (300 rows) before a PSI or share is exported.
LIVE_ROWS = 600


def _missing_pieces() -> str | None:
    try:
        import monitoring.exporter  # noqa: F401
        import monitoring.weekly  # noqa: F401
    except ImportError as exc:
        return f"the monitor step or the store exporter is not on this branch yet ({exc})"
    return None


@dataclass
class Replay:
    settings: Settings
    engine: Engine
    versions: dict[str, str]
    #: The first :data:`LIVE_ROWS` feature rows of the current week (the rows the replay scored
    #: last), as JSON records (missing values as null).
    week_rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Iterator[Replay]:
    """The store after a short real replay (see the module docstring); SQLite."""
    reason = _missing_pieces()
    if reason:
        pytest.skip(reason)
    from domain.evaluation import stack_rows
    from domain.scoring import score_batch
    from domain.warehouse import load_records
    from pipeline.steps import monitor_step, report_step, scoring_cutoff
    from pipeline.tracking import training_profile_tags
    from registry_guard import registry
    from registry_guard.guard import check_champion
    from rollguard.mlflow_client import mlflow_client
    from rollguard.store import open_store
    from tests.integration.test_guard_rollback import (
        evaluation_cutoff,
        gate,
        ingest,
        train_version,
    )

    extra = {"monitor_sample_rows": 5000} if "monitor_sample_rows" in Settings.model_fields else {}
    settings = Settings(  # type: ignore[call-arg]
        home=tmp_path_factory.mktemp("grafana") / "home",
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=f"grafana-{uuid.uuid4().hex[:10]}",
        **extra,
    )
    engine = open_store(settings)
    client = mlflow_client(settings)
    name = settings.model_name
    started = datetime.now(UTC)
    week: list[dict[str, Any]] = []

    def score(version: str) -> Any:
        cutoff = scoring_cutoff(settings)
        features = settings.usecase_spec.build_rows(
            load_records(settings, engine=engine), cutoff, label_available=False
        )
        rows = features[list(settings.usecase_spec.feature_names)].head(LIVE_ROWS)
        week[:] = json.loads(rows.to_json(orient="records"))
        model = registry.load_version(client, name, version)
        score_batch(
            settings, cutoff, model_version=version, predict=model.predict, features=features
        )
        return cutoff

    ingest(settings, engine, 20)
    good = train_version(settings, engine, client)
    evaluation = evaluation_cutoff(settings, engine)
    fit = [evaluation - timedelta(weeks=4 + k) for k in range(4)]
    client.set_model_version_tag(
        name, good, "rollguard.cutoff.fit", ",".join(c.isoformat() for c in fit)
    )
    # The training profile the pipeline tags a version with (the model server's live feature
    # figures compare with it): train_version fits on the same four cutoffs.
    fit_rows = stack_rows(settings.usecase_spec, load_records(settings, engine=engine), fit)
    for key, value in training_profile_tags(settings.usecase_spec, (fit_rows,)).items():
        client.set_model_version_tag(name, good, key, value)
    good_run = client.get_model_version(name, good).run_id
    client.log_metric(good_run, "eval_average_precision", 0.55)
    client.log_metric(good_run, "eval_roc_auc", 0.70)  # the expectation the degraded figure needs
    assert gate(settings, engine, client, good).decision.outcome == "bootstrap"
    broken = train_version(settings, engine, client, shuffle=True)
    assert gate(settings, engine, client, broken).decision.outcome == "reject"
    score(good)
    ingest(settings, engine, 4)  # the first scored week's label matures
    second = score(good)
    monitor_step(settings, {"cutoff": second.isoformat()})
    check_champion(settings, client=client, engine=engine)
    registry.move_champion(
        name, broken, expected=good, actor="human", reason="forced past the gate (test)",
        client=client, engine=engine,
    )  # fmt: skip
    registry.rollback(
        "the forced version is the rejected one (test)", "human", model_name=name,
        cooldown_seconds=0, client=client, engine=engine,
    )  # fmt: skip
    report_step(
        settings, "grafana-test", {}, dag_id="rollguard_retrain",
        run_id=f"grafana-test-{name}", started_at=started,
    )  # fmt: skip
    assert registry.read_pointer(engine, name) == good
    assert len(week) == LIVE_ROWS, f"the current week has only {len(week)} rows"
    yield Replay(settings, engine, {"good": good, "broken": broken}, week)
    engine.dispose()


# ---------------------------------------------------------------------------- Prometheus


def _write_prometheus(root: Path, api_port: int, guard_port: int) -> Path:
    """Config scraping the API and the guard every second (the stack's job names), with the
    shipped rule files evaluated every second."""
    rule_files = []
    for src in sorted(RULES.glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
        dst = root / src.name
        dst.write_text(yaml.safe_dump(doc, sort_keys=False))
        rule_files.append(str(dst))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": rule_files,
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
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Stack:
    prometheus: ServerProcess
    servers: list[ServerProcess]
    champion: str
    #: Rows the champion scored through /v1/predict (the traffic of :func:`_traffic`).
    rows_scored: int = 0

    def query(self, expr: str, *, instant: bool) -> list[Any]:
        """Result of ``expr`` (instant at now, or a range over the last 60 s with 2 s steps).

        Raises:
            AssertionError: Prometheus rejected the expression (with its error).
        """
        if instant:
            resp = httpx.get(self.prometheus.url + "/api/v1/query", params={"query": expr})
        else:
            now = time.time()
            resp = httpx.get(
                self.prometheus.url + "/api/v1/query_range",
                params={"query": expr, "start": now - 60, "end": now, "step": 2},
            )
        body = resp.json()
        assert body["status"] == "success", f"{expr!r}: {body.get('error')}"
        return list(body["data"]["result"])


def _refused_reload(api_url: str, settings: Settings, wrong: str, good: str) -> None:
    """Point the ``champion`` alias at a version with the wrong feature names and ask the API to
    reload: it refuses and keeps serving ``good``; then the alias goes back to ``good``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client.set_registered_model_alias(settings.model_name, "champion", wrong)
    try:
        resp = httpx.post(api_url + "/v1/admin/reload", headers=auth, timeout=120).json()
        assert resp["outcome"] == "refused" and resp["model_version"] == good, resp
    finally:
        client.set_registered_model_alias(settings.model_name, "champion", good)


def _traffic(api_url: str, rows: list[dict[str, Any]], week: list[dict[str, Any]]) -> int:
    """Requests of every kind the dashboards count (predictions, bad input, model info, health),
    in rounds spread over several scrapes: a counter series that appears and never moves again
    within one scrape interval has no rate. Each round also scores a sixth of ``week`` (the live
    signals' window). The number of rows scored."""
    rounds, scored = 6, 0
    size = -(-len(week) // rounds)
    with httpx.Client(base_url=api_url, timeout=30) as http:
        for k in range(rounds):
            for _ in range(5):
                assert http.post("/v1/predict", json={"rows": rows}).status_code == 200
                assert http.post("/v1/predict", json={"rows": [{"nope": 1}]}).status_code == 422
                http.get("/v1/model")
                http.get("/healthz")
            batch = week[k * size : (k + 1) * size]
            resp = http.post("/v1/predict", json={"rows": batch})
            assert resp.status_code == 200, resp.text
            scored += 5 * len(rows) + len(batch)
            time.sleep(1.5)  # > the 1 s scrape interval
    return scored


@pytest.fixture(scope="module")
def stack(replay: Replay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + guard + Prometheus on loopback after some traffic, all scraped at least twice."""
    if not PROMETHEUS_BIN.exists():
        pytest.skip(f"{PROMETHEUS_BIN} not found (Debian package prometheus)")
    from tests.support.api_models import example_frame, log_registered_version, train_booster
    from tests.support.api_servers import start_api
    from usecases.cdnow.features import FEATURE_COLUMNS

    s = replay.settings
    root = tmp_path_factory.mktemp("grafana-stack")
    logs = root / "logs"
    token_file = root / "guard_token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    servers: list[ServerProcess] = []
    renamed = tuple(f"x_{c}" for c in FEATURE_COLUMNS)
    wrong = log_registered_version(
        train_booster(seed=4, rounds=3, feature_names=renamed), s.model_name, s.tracking_uri
    )
    good = replay.versions["good"]
    try:
        api = start_api(s.home, s.tracking_uri, s.model_name, logs, token=TOKEN)
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
                "ROLLGUARD_HOME": str(s.home),
                "ROLLGUARD_ENV": "test",
                "MLFLOW_TRACKING_URI": s.tracking_uri,
                "ROLLGUARD_MODEL_NAME": s.model_name,
                "ROLLGUARD_GUARD_TOKEN_FILE": str(token_file),
                "PYTHONPATH": str(ROOT),
            },
            cwd=ROOT,
        ).start(timeout=120)
        servers.append(guard)
        prom_port = free_port()
        prometheus = ServerProcess(
            "prometheus",
            [
                str(PROMETHEUS_BIN),
                f"--config.file={_write_prometheus(root, api.port, guard.port)}",
                f"--storage.tsdb.path={root / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            port=prom_port,
            ready_path="/-/ready",
            log_dir=logs,
        ).start(timeout=60)
        servers.append(prometheus)
        stack = Stack(prometheus, servers, good)
        _wait(lambda: _targets_up(stack), "both targets scraped")
        _refused_reload(api.url, s, wrong, good)
        rows = example_frame(5).to_dict("records")
        stack.rows_scored = _traffic(api.url, rows, replay.week_rows)
        time.sleep(3)  # a few scrapes after the traffic, so rates have two samples
        yield stack
    finally:
        for server in reversed(servers):
            server.stop()
        for server in servers:
            print(f"--- {server.name}\n{server.log_tail(30)}")


def _targets_up(stack: Stack) -> bool:
    data = httpx.get(stack.prometheus.url + "/api/v1/targets", timeout=5).json()
    health = {t["labels"]["job"]: t["health"] for t in data["data"]["activeTargets"]}
    return health.get("rollguard-api") == "up" and health.get("rollguard-guard") == "up"


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.5)


def _prom_values(stack: Stack, *, live: bool = False) -> dict[str, list[str]]:
    """Values of the dashboards' Prometheus variables, from their own queries (label_values):
    those built from the live series when ``live``, the others otherwise."""
    values = {}
    for doc in DOCS.values():
        for var in doc.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("uid") != "prometheus":
                continue
            if reads_live_series(var["query"]) != live:
                continue
            metric, label = var["query"].removeprefix("label_values(").removesuffix(")").split(", ")
            resp = httpx.get(
                stack.prometheus.url + f"/api/v1/label/{label}/values",
                params={"match[]": metric},
            ).json()
            assert resp["status"] == "success" and resp["data"], (var["name"], resp)
            values[var["name"]] = resp["data"]
    return values


def test_prometheus_variables_return_values(stack: Stack) -> None:
    values = _prom_values(stack)
    assert "/v1/predict" in values["route"]


def test_every_dashboard_promql_returns_data(stack: Stack) -> None:
    """Every PromQL query except the live-signal ones (``test_live_queries_return_data``)."""
    values = _prom_values(stack)
    expanded = []
    for q in PROMQL:
        if q.where.startswith("variable"):
            continue  # label_values() is Grafana's, not PromQL: run by the test above
        if q in LIVE_PROMQL:
            continue
        multi = variable_kinds(DOCS[_file(q)])
        expanded.append((q, expand_promql(q.text, values, multi)))

    def empties() -> list[tuple[Query, str]]:
        return [
            (q, e) for q, e in expanded
            if q.text not in MAY_BE_EMPTY and not stack.query(e, instant=q.instant)
        ]  # fmt: skip

    deadline = time.monotonic() + 120
    while (missing := empties()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not missing, "queries without data:\n" + "\n".join(f"{q.id}: {e}" for q, e in missing)
    for q, e in expanded:  # the allowed-empty ones must at least parse
        stack.query(e, instant=q.instant)

    # Spot checks: the figures say what happened (served, rejected input, refused reload).
    def values(title: str, ref: str = "A") -> list[float]:
        q, e = next((q, e) for q, e in expanded if q.where == f"panel {title!r} target {ref}")
        points = []
        for series in stack.query(e, instant=q.instant):
            points += [series["value"]] if q.instant else series["values"]
        return [float(v) for _, v in points if v != "NaN"]

    assert values("Model ready") == [1.0]
    assert values("Champion version (registry)") == [float(stack.champion)]
    assert values("Failed reloads in range")[0] >= 1.0  # the refused reload
    assert max(values("Error ratio", "B")) > 0  # the 422 answers
    assert max(values("Error ratio", "A")) == 0  # no 5xx
    assert max(values("Request rate by route")) > 0
    print(f"{len(expanded)} dashboard PromQL queries returned data (allowed empty: {MAY_BE_EMPTY})")


def test_feature_states_panel_lists_every_feature_once(stack: Stack, replay: Replay) -> None:
    """The Feature states table, run as committed: one row per feature the use case declares,
    each in exactly one state; on this healthy replay every feature was compared."""
    (q,) = [q for q in PROMQL if q.where == "panel 'Feature states' target A"]
    features = set(replay.settings.usecase_spec.feature_names)

    def rows() -> list[dict[str, str]]:
        return [r["metric"] for r in stack.query(q.text, instant=q.instant)]

    _wait(lambda: {r["feature"] for r in rows()} == features, "a state for every feature")
    got = rows()
    assert len(got) == len(features)  # exactly one state each
    assert {r["state"] for r in got} <= {"ok", "drifted"}
    varies = stack.query("max by (feature) (rollguard_feature_varies_weekly)", instant=True)
    assert {r["metric"]["feature"] for r in varies} == features
    # The alert reads both series and does not fire on a healthy week.
    unusable = (
        'rollguard_feature_state{state=~"skipped_constant|skipped_missing|schema_mismatch"} == 1'
    )
    assert stack.query(unusable, instant=True) == []


def _file(q: Query) -> str:
    return next(name for name, doc in DOCS.items() if doc["uid"] == q.dashboard)


def _rules(*, live: bool) -> list[dict[str, Any]]:
    """The shipped rules that read the live series (``live``) or those that do not."""
    return [
        r
        for path in sorted(RULES.glob("*.yml"))
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
        if reads_live_series(r["expr"]) == live
    ]


def _rules_read_existing_series(stack: Stack, rules: list[dict[str, Any]], timeout: float) -> None:
    """Each rule's expression parses, and the ``bool`` form of each of its ``or`` operands returns
    data within ``timeout`` seconds."""

    def missing() -> list[str]:
        out = []
        for rule in rules:
            name = rule.get("alert") or rule.get("record")
            stack.query(rule["expr"], instant=True)  # parses (AssertionError otherwise)
            for operand in or_operands(rule["expr"]):
                if not stack.query(with_bool(operand), instant=True):
                    out.append(f"{name}: {with_bool(operand)}")
        return out

    deadline = time.monotonic() + timeout
    while (absent := missing()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not absent, "alert expressions reading series that do not exist:\n" + "\n".join(absent)


def test_every_alert_expression_parses_and_reads_existing_series(stack: Stack) -> None:
    """Every rule except the live-signal ones (``test_live_alert_expressions_read_...``)."""
    rules = _rules(live=False)
    if not rules:
        pytest.skip(f"no alert rules under {RULES.relative_to(ROOT)} on this branch yet")
    _rules_read_existing_series(stack, rules, 120)
    # A person rolled the champion back a moment ago: that alert (for: 0m) must fire.
    _wait(
        lambda: any(
            r["metric"].get("alertname") == "RollguardRollbackHappened"
            for r in stack.query('ALERTS{alertstate="firing"}', instant=True)
        ),
        "RollguardRollbackHappened firing",
    )


def _wait_for_live_series(stack: Stack) -> None:
    """Until Prometheus holds the model server's live score histogram (issue 19, api/)."""
    _wait(
        lambda: stack.query("rollguard_live_score_count", instant=True),
        "the model server's rollguard_live_* series (issue 19) in Prometheus",
        timeout=30,
    )


def _instant(stack: Stack, expr: str) -> dict[str, float]:
    """``{version: value}`` of an instant query whose series carry a ``version`` label."""
    return {r["metric"]["version"]: float(r["value"][1]) for r in stack.query(expr, instant=True)}


def test_live_queries_return_data(stack: Stack, replay: Replay) -> None:
    """The live-signal panels of issue 19, run as committed on the fixture's traffic: the
    ``$version`` variable lists the serving version, every query returns data, and the figures
    hold together (the histogram counted every row scored, the window holds them up to its
    default 2000, the serving version has a score reference and a PSI, and a feature PSI per
    declared feature)."""
    assert LIVE_PROMQL, "no dashboard query reads the live series"
    _wait_for_live_series(stack)
    values = _prom_values(stack, live=True)
    version = stack.champion
    assert version in values["version"], values
    expanded = [
        (q, expand_promql(q.text, values, variable_kinds(DOCS[_file(q)])))
        for q in LIVE_PROMQL
        if not q.where.startswith("variable")
    ]

    def empties() -> list[tuple[Query, str]]:
        return [(q, e) for q, e in expanded if not stack.query(e, instant=q.instant)]

    deadline = time.monotonic() + 30
    while (missing := empties()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not missing, "live queries without data:\n" + "\n".join(
        f"{q.id}: {e}" for q, e in missing
    )

    count = _instant(stack, "max by (version) (rollguard_live_score_count)")[version]
    assert count >= stack.rows_scored
    assert _instant(stack, "max by (version) (rollguard_live_window_rows)")[version] == min(
        count, 2000
    )
    assert _instant(stack, "max by (version) (rollguard_live_score_psi)")[version] >= 0
    refs = stack.query(f'rollguard_live_reference_info{{version="{version}"}} == 1', instant=True)
    assert len(refs) == 1 and refs[0]["metric"]["source"] in {"gated", "replaced"}, refs
    features = {
        r["metric"]["feature"]
        for r in stack.query(f'rollguard_live_feature_psi{{version="{version}"}}', instant=True)
    }
    assert features == set(replay.settings.usecase_spec.feature_names)


def test_live_alert_expressions_read_existing_series(stack: Stack) -> None:
    """The live rules (RollguardLiveScoreShift, RollguardLiveFeatureShift) read series the model
    server exports after the fixture's traffic."""
    rules = _rules(live=True)
    assert {r["alert"] for r in rules} == {"RollguardLiveScoreShift", "RollguardLiveFeatureShift"}
    _wait_for_live_series(stack)
    _rules_read_existing_series(stack, rules, 30)


# ---------------------------------------------------------------------------- SQL


def _sql_rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(sql).fetchall())


def _sql_result(engine: Engine, sql: str) -> tuple[list[str], list[Any]]:
    with engine.connect() as conn:
        result = conn.exec_driver_sql(sql)
        return list(result.keys()), list(result.fetchall())


def _sql_values(engine: Engine) -> dict[str, list[str]]:
    """Values of the SQL variables from their own queries, in dependency order ($model first)."""
    values: dict[str, list[str]] = {}
    for doc in DOCS.values():
        multi = variable_kinds(doc)
        for var in doc.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("uid") != "rollguard-store":
                continue
            rows = _sql_rows(engine, expand_sql(var["query"], values, multi))
            assert rows, f"variable ${var['name']} returned no rows"
            values.setdefault(var["name"], [str(r[0]) for r in rows])
    return values


def _check_sql(engine: Engine, model_name: str) -> None:
    values = _sql_values(engine)
    assert model_name in values["model"]
    values["model"] = [model_name]
    assert "recency_days" in values["feature"]
    empty, blank = [], []
    for q in SQL:
        sql = expand_sql(q.text, values, variable_kinds(DOCS[_file(q)]))
        columns, rows = _sql_result(engine, sql)
        if not rows:
            empty.append(f"{q.id}: {sql}")
        # A misspelt metric in a pivot gives a column of NULLs, not an error: catch that too.
        blank += [
            f"{q.id}: column {c!r}"
            for i, c in enumerate(columns)
            if c not in MAY_BE_NULL and rows and all(r[i] is None for r in rows)
        ]
    assert not empty, "SQL queries without rows:\n" + "\n".join(empty)
    assert not blank, "SQL columns without a single value:\n" + "\n".join(blank)


def test_every_sql_query_returns_rows_on_sqlite(replay: Replay) -> None:
    _check_sql(replay.engine, replay.settings.model_name)


@pytest.mark.postgres
def test_every_sql_query_returns_rows_on_postgresql(replay: Replay, postgres_url: str) -> None:
    from rollguard import db
    from rollguard.db.models import Base

    if db.current_revision(postgres_url) != db.head_revision():
        db.upgrade(postgres_url)  # the real alembic migrations
    pg = db.make_engine(postgres_url)
    try:
        name = replay.settings.model_name
        with replay.engine.connect() as src, pg.begin() as dst:
            for table_name in READ_TABLES:
                table = Base.metadata.tables[table_name]
                rows = [
                    dict(r._mapping)
                    for r in src.execute(select(table).where(table.c.model_name == name))
                ]
                assert rows, f"the replay wrote no {table_name} rows"
                dst.execute(
                    insert(table), [{k: v for k, v in r.items() if k != "id"} for r in rows]
                )
        _check_sql(pg, name)
    finally:
        pg.dispose()


def test_guard_panels_show_each_checks_verdict_and_evidence(stack: Stack) -> None:
    """The Guard checks and Guard evidence panels, run as committed: one verdict per check of the
    replay's guard check, and each check's threshold among its evidence."""
    (verdicts,) = [q for q in PROMQL if q.where == "panel 'Guard checks' target A"]
    (evidence,) = [q for q in PROMQL if q.where == "panel 'Guard evidence' target A"]

    def rows(q: Query) -> list[dict[str, str]]:
        return [r["metric"] for r in stack.query(q.text, instant=q.instant)]

    checks = {"score_shift", "realized_quality"}
    _wait(lambda: {r["check"] for r in rows(verdicts)} == checks, "a verdict for every check")
    got = rows(verdicts)
    assert len(got) == len(checks)  # exactly one verdict each
    assert {r["verdict"] for r in got} <= {"ok", "degraded", "inconclusive", "skip"}
    figures = {(r["check"], r["figure"]) for r in rows(evidence)}
    assert {(c, "threshold") for c in checks} <= figures
