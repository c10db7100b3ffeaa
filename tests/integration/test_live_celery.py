"""Scale-out: the stack with the CeleryExecutor, the machine's Redis as broker (keys under a
prefix of this test's own, deleted afterwards) and two ``airflow celery worker`` processes. The
landing watch's event runs ``rollguard_retrain``; its tasks run on both workers (the task
instances' host names, as Airflow's REST API reports them), and the run registers exactly one
model version, which the API then serves."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.live_stack import (
    LiveStack,
    bootstrap_champion,
    start_live_stack,
    stop_live_stack,
    trained_runs,
    unavailable,
    wait_until,
)

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def celery_stack() -> Iterator[LiveStack]:
    reason = unavailable(redis=True)
    if reason:
        pytest.skip(reason)
    stack = start_live_stack(executor="CeleryExecutor")
    try:
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stop_live_stack(stack)


def test_one_run_is_executed_by_both_celery_workers_without_duplicate_registration(
    celery_stack: LiveStack,
) -> None:
    _, champion = bootstrap_champion(celery_stack)
    trained = trained_runs(celery_stack)
    assert len(trained) == 1, trained
    ran = [t for t in trained[0][1].values() if t["state"] == "success"]
    hosts = {t["hostname"] for t in ran}
    host = socket.gethostname()
    assert hosts == {f"worker1@{host}", f"worker2@{host}"}, [
        (t["task_id"], t["hostname"]) for t in ran
    ]
    versions = celery_stack.rollguard("models", "--json")["versions"]
    assert [str(v["version"]) for v in versions] == [champion], versions
    url = celery_stack.api_urls[0]
    wait_until(
        lambda: httpx.get(f"{url}/v1/model", timeout=5).json().get("model_version") == champion,
        60, f"the API serving version {champion}",
    )  # fmt: skip
