"""A broken model promoted under live traffic is rolled back by the model server's live signal;
a healthy one is not (issue 19). Real binaries on loopback: MLflow, the model server, the guard,
Prometheus and Alertmanager (configs from the shipped ones, 1 s intervals), the ``rollguard``
CLI for ``promote --force``, and steady traffic of real CDNOW customer rows of the current week.

One stack for the module (starting it and gating two real versions is the slow part): the healthy
promotion runs first, then each broken kind, each forced over the healthy version and rolled back
to it (cooldown 0 s here, so the second rollback is not refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from registry_guard import registry
from rollguard.db.models import GuardCheckRow
from tests.support.alert_stack import (
    TEST_INTERVALS,
    AlertStack,
    missing_binaries,
    start_stack,
    targets_up,
    wait_until,
)
from tests.support.live_rollback import (
    BROKEN_KINDS,
    BROKEN_SEEDS,
    LIVE_TRIGGER,
    Traffic,
    first_answer,
    force_and_wait_restored,
    live_series,
    promote_force,
    register,
    register_gated,
    rollback_rows,
    train,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("live-rollback")
    stack = start_stack(
        root, mlflow_server, TEST_INTERVALS, cooldown_seconds=0.0, register=register_gated,
        triggers=(LIVE_TRIGGER,),
    )  # fmt: skip
    traffic = Traffic(stack.api.url).start()
    try:
        wait_until(lambda: targets_up(stack), 60, "Prometheus scraping API and guard")
        yield {"stack": stack, "traffic": traffic, "healthy": None}
    finally:
        traffic.stop()
        stack.stop()
        print(stack.logs())


def _firing(stack: AlertStack) -> list[dict]:
    alerts = httpx.get(stack.prometheus.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == LIVE_TRIGGER]


def test_healthy_forced_promotion_under_traffic_is_not_rolled_back(live: dict) -> None:
    stack, traffic = live["stack"], live["traffic"]
    name = stack.settings.model_name
    healthy = register(train("healthy", seed=3), name, stack.settings.tracking_uri)
    t0 = promote_force(stack, healthy, "test: a person forces a healthy retrain")
    wait_until(lambda: first_answer(traffic, healthy, t0), 60, "API serving the healthy version")
    # The window fills, Prometheus scrapes the PSI, and the rule is evaluated many times over
    # (1 s intervals, for: 1 s): watch 15 evaluations after the PSI is first scraped.
    wait_until(
        lambda: "rollguard_live_score_psi" in live_series(stack, healthy),
        90,
        "live score PSI of the healthy version exported",
    )
    query = f'rollguard_live_score_psi{{version="{healthy}"}}'
    wait_until(
        lambda: httpx.get(stack.prometheus.url + "/api/v1/query", params={"query": query}).json()[
            "data"
        ]["result"],
        30,
        "Prometheus holding the healthy version's PSI",
    )
    answered = len(traffic.answers)
    wait_until(lambda: len(traffic.answers) > answered + 300, 120, "300 more requests")
    figures = live_series(stack, healthy)
    assert figures["rollguard_live_score_psi"] < 1.0, figures
    assert figures["rollguard_live_window_rows"] >= 300
    assert not [a for a in _firing(stack) if a["state"] == "firing"]
    assert rollback_rows(stack.engine, name) == []
    assert registry.read_pointer(stack.engine, name) == healthy
    metrics = httpx.get(stack.api.url + "/metrics", timeout=5).text
    assert (
        f'rollguard_live_reference_info{{reference_version="{stack.v2}",source="replaced",'
        f'version="{healthy}"}} 1.0' in metrics
    )
    assert traffic.failed() == []
    live["healthy"] = healthy


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_forced_promotion_under_traffic_is_rolled_back(live: dict, kind: str) -> None:
    stack, traffic, healthy = live["stack"], live["traffic"], live["healthy"]
    assert healthy is not None, "the healthy promotion test runs first"
    name = stack.settings.model_name
    broken = register(train(kind, seed=BROKEN_SEEDS[kind]), name, stack.settings.tracking_uri)  # type: ignore[arg-type]

    timing = force_and_wait_restored(stack, traffic, broken, healthy, kind)
    print(
        f"\n{kind}: promote --force -> served {timing.serving:.1f} s, rollback audit "
        f"{timing.rolled_back:.1f} s, previous version serving again {timing.restored:.1f} s "
        "(test intervals: scrape/evaluation/for/group_wait 1 s, API poll 0.5 s)"
    )
    assert registry.read_pointer(stack.engine, name) == healthy
    row = rollback_rows(stack.engine, name)[-1]
    assert (row.actor, row.from_version, row.to_version) == ("alert", broken, healthy)
    evidence = json.loads(row.evidence)
    assert evidence["alert"]["labels"]["alertname"] == LIVE_TRIGGER
    check = evidence["guard"]["checks"][0]
    assert check["name"] == "live_score_shift" and check["verdict"] == "degraded"
    assert check["value"] > 1.0 and check["n_rows"] >= 300
    with stack.engine.connect() as conn:
        state = conn.execute(
            select(GuardCheckRow.state, GuardCheckRow.rolled_back_to)
            .where(GuardCheckRow.model_name == name, GuardCheckRow.champion_version == broken)
        ).all()  # fmt: skip
    assert ("degraded", healthy) in [tuple(r) for r in state]
    assert traffic.failed() == [], traffic.failed()[:5]


def test_no_request_failed_during_the_promotions_and_rollbacks(live: dict) -> None:
    traffic = live["traffic"]
    assert len(traffic.answers) > 500
    assert traffic.failed() == []
    assert {status for _, status, _ in traffic.answers} == {200}
