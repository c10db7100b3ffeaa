"""Schemathesis against the real model server with API keys required (``ROLLGUARD_API_KEYS=true``,
the stack's configuration): a uvicorn process, a real MLflow tracking server, a key made with the
real ``rollguard apikey create`` command.

With the key, no generated request gets a 5xx and the key is never refused; without it, no
generated request gets a 5xx either and no key-protected route (predict, explain, customer routes)
answers 2xx. The same run with keys off (the embedded default) is
``tests/integration/test_api_server.py::test_schemathesis_finds_no_server_error``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.support.api_models import cdnow_features, log_registered_version, train_booster
from tests.support.api_servers import start_api

TOKEN = "integration-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY_FORMAT = re.compile(r"rg_[0-9a-f]{8}_[A-Za-z0-9_-]{32}")
ENVELOPE = {"error", "message", "details", "request_id"}


def protected(path: str) -> bool:
    """The routes that take a key when keys are on (docs/security.md, "API keys")."""
    return path in ("/v1/predict", "/v1/explain") or path.startswith("/v1/customers/")


def rollguard(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rollguard ARGS`` (its console entry point, run from this checkout like ``start_api``'s
    server) on the embedded store under ``home``."""
    return subprocess.run(
        [sys.executable, "-c", "from rollguard.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test"},
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


@pytest.fixture(scope="module")
def keyed_api(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(server, key)``: the API with keys required, serving a champion, with one live key."""
    from mlflow import MlflowClient

    name = f"api-keys-st-{uuid.uuid4().hex[:8]}"
    version = log_registered_version(train_booster(seed=1, rounds=8), name, mlflow_server)
    MlflowClient(mlflow_server, mlflow_server).set_registered_model_alias(name, "champion", version)
    root = tmp_path_factory.mktemp("keyed-api")
    home = root / "home"
    features = home / "warehouse" / "features"
    features.mkdir(parents=True)
    frame = cdnow_features()
    frame[frame["cutoff"] == frame["cutoff"].max()].to_parquet(
        features / "cutoff=1997-06-02.parquet"
    )
    upgraded = rollguard(home, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    created = rollguard(home, "apikey", "create", "schemathesis", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    assert KEY_FORMAT.fullmatch(key), key
    server = start_api(
        home,
        mlflow_server,
        name,
        root / "logs",
        token=TOKEN,
        ROLLGUARD_API_KEYS="true",
        # Far above what the run sends: this checks the schema, not the limiter (test_api_keys.py).
        ROLLGUARD_API_KEY_RATE="100000/minute",
    )
    try:
        yield server, key
    finally:
        server.stop()


def run_schemathesis(
    url: str, headers: dict[str, str], examples: int
) -> dict[tuple[str, str], list]:
    """Every operation of the served OpenAPI schema, ``examples`` derandomized examples each;
    returns ``{(method, path template): [(status, body), ...]}``."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    seen: dict[tuple[str, str], list] = defaultdict(list)
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            resp = case.call(base_url=url, headers=headers)
            seen[(case.method, case.operation.path)].append((resp.status_code, resp.text[:2000]))
            assert "Traceback" not in resp.text

        check()
    return seen


def test_schemathesis_with_api_keys_on(keyed_api) -> None:  # type: ignore[no-untyped-def]
    server, key = keyed_api

    with_key = run_schemathesis(server.url, {**AUTH, "X-API-Key": key}, examples=25)
    errors = [(op, s, b) for op, answers in with_key.items() for s, b in answers if s >= 500]
    assert not errors, errors
    refused = [
        (op, s, b) for op, answers in with_key.items() for s, b in answers if s in (401, 403)
    ]
    assert not refused, refused  # the admin token and the key go with every request
    assert any(protected(path) for _, path in with_key), sorted(with_key)

    without_key = run_schemathesis(server.url, AUTH, examples=10)
    errors = [(op, s, b) for op, answers in without_key.items() for s, b in answers if s >= 500]
    assert not errors, errors
    leaked = [
        (op, s)
        for op, answers in without_key.items()
        if protected(op[1])
        for s, _ in answers
        if s < 400
    ]
    assert not leaked, leaked
    for op, answers in without_key.items():
        for status, body in answers:
            if status in (401, 403):
                assert protected(op[1]), (op, status, body)
                assert set(json.loads(body)) >= ENVELOPE, body

    known = int(cdnow_features()["customer_id"].iloc[0])
    route = f"{server.url}/v1/customers/{known}/prediction"
    assert httpx.get(route, headers={"X-API-Key": key}).status_code == 200
    assert httpx.get(route).status_code == 401
