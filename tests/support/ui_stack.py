"""A real stack for the UI tests: a warehouse built by the real replay, ingestion and snapshot
steps; two real XGBoost versions registered on a real MLflow server; champion moves made by the
real registry functions (bootstrap and promotion with real gate decisions, then a guard
rollback); the real API process serving it; the real UI process; a slow HTTP server; and the
system Chromium driven by Selenium."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.servers import ServerProcess, free_port

CUTOFF = date(1997, 3, 31)
CHROMIUM = Path(os.environ.get("ROLLGUARD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ROLLGUARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))


@dataclass(frozen=True)
class Stack:
    """What the tests need to know about the prepared home."""

    home: Path
    tracking_uri: str
    model_name: str
    champion: str  # serving version after the rollback
    rolled_back: str  # version the guard rolled back from
    known_customer: int


def build_home(home: Path, tracking_uri: str, model_name: str) -> Stack:
    """Prepare ``home``: 13 weeks of CDNOW replayed and ingested, the snapshot at 1997-03-31,
    versions v1 (bootstrap, real gate decision) and v2 (promoted through the real gate when it
    passes, else by a human), then a guard rollback to v1 with its reason."""
    from mlflow import MlflowClient

    from domain import snapshots
    from pipeline import feed, ingest
    from registry_guard.gate import ModelEvidence, evaluate_gate
    from registry_guard.policy import load_policy
    from registry_guard.registry import move_champion, rollback
    from rollguard.settings import Settings
    from rollguard.store import open_store
    from rollguard.usecase import TaskType
    from tests.support.api_models import cdnow_features, log_registered_version, train_booster
    from usecases.cdnow.features import FEATURE_COLUMNS, LABEL, REVENUE

    settings = Settings(home=home, env="test", model_name=model_name, _env_file=None)  # type: ignore[call-arg]
    feed.replay(settings, until=CUTOFF - timedelta(days=1))
    ingest.ingest_landing(settings)
    snapshots.build_snapshot(settings, CUTOFF)

    boosters = [train_booster(seed=1, rounds=12), train_booster(seed=2, rounds=25)]
    versions = [log_registered_version(b, model_name, tracking_uri) for b in boosters]
    frame = cdnow_features()
    evaluation = frame[frame["cutoff"] == frame["cutoff"].max()]
    x = evaluation[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    policy = load_policy(None)
    labels = evaluation[LABEL].astype(int).to_numpy()
    values = evaluation[REVENUE].to_numpy()
    slices = {"customer_type": np.where(evaluation["frequency"] >= 2, "returning", "new")}
    task = TaskType.BINARY_CLASSIFICATION
    evidence = [
        ModelEvidence(
            scores=b.inplace_predict(x).astype(np.float64),
            version=v,
            feature_names=tuple(FEATURE_COLUMNS),
        )
        for b, v in zip(boosters, versions, strict=True)
    ]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    engine = open_store(settings)
    first = evaluate_gate(
        evidence[0],
        None,
        labels,
        values,
        slices,
        policy,
        task=task,
        expected_features=FEATURE_COLUMNS,
    )
    move_champion(
        model_name,
        versions[0],
        expected=None,
        actor="pipeline",
        reason=f"gate {first.outcome}: {first.reasons[0]}",
        evidence={"gate": first.to_dict()},
        client=client,
        engine=engine,
    )
    client.set_model_version_tag(model_name, versions[0], "rollguard.gate_decision", first.outcome)
    second = evaluate_gate(
        evidence[1],
        evidence[0],
        labels,
        values,
        slices,
        policy,
        task=task,
        expected_features=FEATURE_COLUMNS,
    )
    move_champion(
        model_name,
        versions[1],
        expected=versions[0],
        actor="pipeline" if second.passed else "human",
        reason=(
            f"gate {second.outcome}: {second.reasons[0]}"
            if second.passed
            else "promoted by hand for the UI test"
        ),
        evidence={"gate": second.to_dict()},
        client=client,
        engine=engine,
    )
    rollback(
        "live average precision below the gate expectation",
        "guard",
        model_name=model_name,
        cooldown_seconds=0,
        client=client,
        engine=engine,
    )
    engine.dispose()
    snapshot = snapshots.snapshot_path(settings, CUTOFF)
    import pandas as pd

    known = int(pd.read_parquet(snapshot, columns=["customer_id"])["customer_id"].iloc[0])
    return Stack(home, tracking_uri, model_name, versions[0], versions[1], known)


def start_ui(api_url: str, log_dir: Path, *, timeout_seconds: float, **env: str) -> ServerProcess:
    """The UI (``python -m ui``, i.e. ``rollguard serve ui``) on a free port, pointed at ``api_url``."""
    port = free_port()
    return ServerProcess(
        "ui",
        [sys.executable, "-m", "ui", "--host", "127.0.0.1", "--port", str(port)],
        port=port,
        ready_path="/",
        log_dir=log_dir,
        env={
            "ROLLGUARD_ENV": "test",
            "ROLLGUARD_UI_API_URL": api_url,
            "ROLLGUARD_UI_TIMEOUT_SECONDS": str(timeout_seconds),
            "ROLLGUARD_HOME": str(log_dir / "ui-home"),
            **env,
        },
        cwd=Path(__file__).resolve().parents[2],
    ).start(timeout=240)


class SlowServer:
    """A real HTTP server on a free loopback port that waits ``delay`` seconds before answering
    every request (an overloaded API); :meth:`stop` ends the waits at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.requests = 0
        stopping = threading.Event()
        self._stopping = stopping
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _slow(self) -> None:
                outer.requests += 1
                stopping.wait(outer.delay)
                body = json.dumps({"status": "late"}).encode()
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = do_POST = _slow  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SlowServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists() or not os.access(path, os.X_OK):
            return f"{path} not found (Debian packages chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (dev dependency group)"
    return None


def make_driver(width: int = 1400, height: int = 2000, extra_args: tuple[str, ...] = ()) -> Any:
    """Headless system Chromium through the system chromedriver. Selenium Manager is never
    asked for a driver or browser (both paths are given, and SE_OFFLINE is set). ``extra_args``
    are more Chromium switches (e.g. ``--host-resolver-rules`` to cut off outside hosts)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        *extra_args,
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def artifacts_dir() -> Path:
    """Where screenshots go: ``ROLLGUARD_TEST_ARTIFACTS`` or ``tests/artifacts/`` (git-ignored)."""
    path = Path(
        os.environ.get(
            "ROLLGUARD_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"
        )
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_until(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - the page is still rendering
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")
