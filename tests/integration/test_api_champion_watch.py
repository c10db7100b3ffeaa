"""The model server watches its champion alias (issue 20): a real uvicorn process, a real MLflow
tracking server on loopback, the embedded monitoring store the server reads its audit from.

One module-scoped stack (registry model, store, server); the tests run in file order and each
leaves the champion on an audited, served version:

* alias deleted, then restored: readiness/model report ``alias_missing``, gauge, one log line each;
* the serving version deleted: ``version_missing``;
* a replica started without an alias: 503 naming ``alias_missing``, then ``load refused`` and why;
* an alias move with a raw ``MlflowClient.set_registered_model_alias`` (no audit row): gauge
  ``rollguard_champion_unaudited_move`` 1, ``/v1/model`` names the version; the next move through
  ``registry_guard.registry.move_champion`` (compare-and-set, audit row) sets it back to 0;
* a replica whose store is down: audit ``unknown``, never flagged, still serving.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from registry_guard.registry import move_champion
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.support.api_models import EXAMPLE_ROW, log_registered_version, train_booster
from tests.support.api_servers import start_api, wait_for
from tests.support.servers import ServerProcess, free_port
from usecases.cdnow.features import FEATURE_COLUMNS

TOKEN = "integration-admin-token-0123456789"


@dataclass
class Stack:
    url: str  # the model server
    name: str  # registered model
    versions: list[str]
    engine: Engine  # the server's monitoring store
    client: Any  # MlflowClient on the registry
    server: ServerProcess

    def ready(self) -> httpx.Response:
        return httpx.get(self.url + "/readyz", timeout=10)

    def model(self) -> dict[str, Any]:
        return httpx.get(self.url + "/v1/model", timeout=10).json()

    def gauge(self, metric: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in {"model": self.name, **labels}.items())
        prefix = f"{metric}{{{wanted}}} "
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no series {prefix!r}")

    def log_count(self, text: str) -> int:
        return self.server.log_path.read_text(errors="replace").count(text)

    def line_count(self, level: str, logger: str, prefix: str) -> int:
        """JSON log lines (docs/logs.md) of ``level`` from ``logger`` whose message starts with
        ``prefix``."""
        lines = self.server.log_path.read_text(errors="replace").splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return sum(
            r["level"] == level and r["logger"] == logger and r["event"].startswith(prefix)
            for r in records
        )

    def move(self, to: str, expected: str | None) -> None:
        """Move the champion the way the gate and the guard do (compare-and-set + audit row)."""
        move_champion(
            self.name,
            to,
            expected=expected,
            actor="human",
            reason="integration test",
            client=self.client,
            engine=self.engine,
        )

    def wait_state(self, state: str, version: str | None = None) -> dict[str, Any]:
        def reached() -> bool:
            body = self.ready().json()
            return body["champion"]["state"] == state and (
                version is None or body["model_version"] == version
            )

        wait_for(reached, timeout=60, what=f"champion state {state} (version {version})")
        return self.ready().json()


@pytest.fixture(scope="module")
def stack(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("champion-watch")
    name = f"watch-{uuid.uuid4().hex[:8]}"
    versions = [
        log_registered_version(train_booster(seed=s, rounds=4 + s), name, mlflow_server)
        for s in (1, 2, 3)
    ]
    settings = Settings(  # type: ignore[call-arg]
        home=root / "home", env="test", _env_file=None, mlflow_tracking_uri=mlflow_server
    )
    engine = open_store(settings)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    move_champion(
        name,
        versions[0],
        expected=None,
        actor="human",
        reason="bootstrap",
        client=client,
        engine=engine,
    )
    server = start_api(root / "home", mlflow_server, name, root / "logs", token=TOKEN)
    stack = Stack(server.url, name, versions, engine, client, server)
    try:
        yield stack
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()
        engine.dispose()


def test_an_audited_champion_serves_with_a_clean_watch(stack: Stack) -> None:
    body = stack.wait_state("ok", stack.versions[0])
    assert stack.ready().status_code == 200
    assert body["champion"]["alias_version"] == stack.versions[0]
    wait_for(lambda: stack.model()["champion"]["audit"] == "audited", what="audited")
    for reason in ("alias_missing", "version_missing", "registry_unreachable"):
        assert stack.gauge("rollguard_champion_missing", reason=reason) == 0.0
    assert stack.gauge("rollguard_champion_unaudited_move") == 0.0


def test_a_deleted_alias_is_reported_while_the_old_version_keeps_serving(stack: Stack) -> None:
    v1 = stack.versions[0]
    stack.client.delete_registered_model_alias(stack.name, "champion")
    body = stack.wait_state("alias_missing")
    resp = stack.ready()
    assert resp.status_code == 200 and body["ready"] is True and body["model_version"] == v1
    assert "alias 'champion'" in body["champion"]["reason"] and body["champion"]["since"]
    assert body["registry"]["reachable"] is True
    model = stack.model()
    assert model["model_version"] == v1 and model["champion"]["state"] == "alias_missing"
    assert stack.gauge("rollguard_champion_missing", reason="alias_missing") == 1.0
    assert stack.gauge("rollguard_champion_missing", reason="version_missing") == 0.0
    pred = httpx.post(stack.url + "/v1/predict", json={"rows": [EXAMPLE_ROW]}, timeout=10)
    assert pred.status_code == 200 and pred.json()["model_version"] == v1
    # One WARNING when it starts, not one per poll (the server polls every 0.5 s).
    wait_for(lambda: stack.log_count("is missing (alias_missing)") >= 1, what="warning line")
    time.sleep(2.0)
    assert stack.line_count("warning", "rollguard.api", "champion of") == 1

    # Restored (to the audited version): cleared, one INFO line.
    stack.client.set_registered_model_alias(stack.name, "champion", v1)
    stack.wait_state("ok", v1)
    assert stack.gauge("rollguard_champion_missing", reason="alias_missing") == 0.0
    wait_for(
        lambda: stack.line_count("info", "rollguard.api", "champion of") == 1, what="info line"
    )
    assert stack.model()["champion"]["audit"] == "audited"


def test_a_deleted_serving_version_is_version_missing(stack: Stack) -> None:
    v1, v2, v3 = stack.versions
    stack.move(v3, expected=v1)
    stack.wait_state("ok", v3)
    stack.client.delete_model_version(stack.name, v3)
    body = stack.wait_state("version_missing")
    assert stack.ready().status_code == 200 and body["model_version"] == v3
    assert f"version {v3}" in body["champion"]["reason"]
    assert stack.gauge("rollguard_champion_missing", reason="version_missing") == 1.0
    assert stack.gauge("rollguard_champion_missing", reason="alias_missing") == 0.0
    assert stack.log_count("is missing (version_missing)") == 1

    stack.move(v2, expected=v3)
    stack.wait_state("ok", v2)
    assert stack.gauge("rollguard_champion_missing", reason="version_missing") == 0.0


def test_a_replica_without_a_champion_says_why_in_its_503(
    stack: Stack, tmp_path: Path, mlflow_server: str
) -> None:
    name = f"watch-none-{uuid.uuid4().hex[:8]}"
    server = start_api(
        tmp_path / "home",
        mlflow_server,
        name,
        tmp_path / "logs",
        token=TOKEN,
        ready_path="/healthz",
    )
    try:
        url = server.url

        def state() -> str:
            return httpx.get(url + "/readyz", timeout=10).json()["champion"]["state"]

        wait_for(lambda: state() == "alias_missing", what="alias_missing at start")
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["reason"].startswith("alias_missing: alias 'champion' of " + name)
        for path in ("/v1/predict", "/v1/model"):
            resp = (
                httpx.post(url + path, json={"rows": [EXAMPLE_ROW]}, timeout=10)
                if path == "/v1/predict"
                else httpx.get(url + path, timeout=10)
            )
            assert resp.status_code == 503, path
            assert resp.json()["error"] == "not_ready"
            assert "alias_missing: alias 'champion'" in resp.json()["message"], resp.json()
            assert "rollguard train" in resp.json()["message"]
        text = httpx.get(url + "/metrics", timeout=10).text
        assert f'rollguard_champion_missing{{model="{name}",reason="alias_missing"}} 1.0' in text

        # The alias now names a version the server refuses (features other than the use case's).
        renamed = tuple(f"x_{c}" for c in FEATURE_COLUMNS)
        bad = log_registered_version(
            train_booster(seed=7, rounds=2, feature_names=renamed), name, mlflow_server
        )
        stack.client.set_registered_model_alias(name, "champion", bad)
        wait_for(lambda: state() == "load_refused", what="load_refused")
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith(f"load refused: version {bad}: ")
        assert "feature names" in ready.json()["reason"]
        pred = httpx.post(url + "/v1/predict", json={"rows": [EXAMPLE_ROW]}, timeout=10)
        assert pred.status_code == 503 and f"load refused: version {bad}" in pred.json()["message"]
        assert f'rollguard_champion_missing{{model="{name}",reason="alias_missing"}} 0.0' in (
            httpx.get(url + "/metrics", timeout=10).text
        )
    finally:
        server.stop()


def test_an_alias_move_outside_rollguard_is_flagged_and_still_served(stack: Stack) -> None:
    v1, v2, _ = stack.versions
    stack.wait_state("ok", v2)
    # v1 had an audit row once, but the newest audited move is to v2: this move is not audited.
    stack.client.set_registered_model_alias(stack.name, "champion", v1)
    stack.wait_state("ok", v1)
    wait_for(
        lambda: stack.model()["champion"]["audit"] == "unaudited",
        timeout=30,
        what="unaudited after the grace period",
    )
    model = stack.model()
    assert model["model_version"] == v1 and model["champion"]["unaudited_version"] == v1
    assert model["champion"]["unaudited_since"]
    assert stack.gauge("rollguard_champion_unaudited_move") == 1.0
    assert stack.log_count(f"was moved to version {v1} outside Rollguard") == 1
    pred = httpx.post(stack.url + "/v1/predict", json={"rows": [EXAMPLE_ROW]}, timeout=10)
    assert pred.status_code == 200 and pred.json()["model_version"] == v1

    # The next move through the compare-and-set (which first resets the alias to the store's
    # pointer, v2, then moves it with an audit row) clears it.
    stack.move(v1, expected=v2)

    def audited_v1() -> bool:
        model = stack.model()
        champion = model["champion"]
        return (
            model["model_version"] == v1
            and champion["alias_version"] == v1
            and champion["audit"] == "audited"
        )

    # (the server may see the reset to v2 first: audited too, but not the end state)
    wait_for(audited_v1, what="v1 audited again")
    model = stack.model()
    assert model["champion"]["unaudited_version"] is None
    assert stack.gauge("rollguard_champion_unaudited_move") == 0.0


def test_a_store_that_is_down_never_flags_a_move_nor_stops_serving(
    stack: Stack, tmp_path: Path
) -> None:
    """A replica whose monitoring store is down (nothing listens on its port): the audit is
    ``unknown``, nothing is flagged, a new version is loaded and served, one log line says why."""
    v1, v2, _ = stack.versions
    stack.wait_state("ok", v1)
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    server = start_api(
        tmp_path / "home",
        stack.client.tracking_uri,
        stack.name,
        tmp_path / "logs",
        token=TOKEN,
        ROLLGUARD_DATABASE_URL=down,
    )
    try:

        def champion() -> dict[str, Any]:
            return httpx.get(server.url + "/v1/model", timeout=10).json()["champion"]

        wait_for(lambda: "cannot check the audit" in server.log_tail(200), what="audit log line")
        assert champion()["audit"] == "unknown"
        stack.client.set_registered_model_alias(stack.name, "champion", v2)
        wait_for(
            lambda: httpx.get(server.url + "/v1/model", timeout=10).json()["model_version"] == v2,
            what="v2 served with the store down",
        )
        time.sleep(6.0)  # beyond the audit grace period
        assert champion()["audit"] == "unknown" and champion()["unaudited_version"] is None
        text = httpx.get(server.url + "/metrics", timeout=10).text
        assert f'rollguard_champion_unaudited_move{{model="{stack.name}"}} 0.0' in text
        log = server.log_path.read_text(errors="replace")
        assert "outside Rollguard" not in log
        assert log.count("cannot check the audit") == 1  # once per outage, not per poll
        pred = httpx.post(server.url + "/v1/predict", json={"rows": [EXAMPLE_ROW]}, timeout=10)
        assert pred.status_code == 200 and pred.json()["model_version"] == v2
    finally:
        server.stop()
