"""A broken model promoted under live traffic, rolled back by the model server's live signal: the
end-to-end path of issue 19 with real binaries, for tests/integration/test_live_rollback.py and
benchmarks/bench_alert_rollback.py (``--path live``).

Setup (on top of :mod:`tests.support.alert_stack`): two real XGBoost versions trained on real CDNOW
features; v1 becomes champion through the real gate (bootstrap), v2 through the real gate
(promote), so each carries the score reference the gate keeps and the training profile. Traffic:
a thread posts the real customer rows of the current week (CDNOW at :data:`CURRENT_WEEK`, after the
training cutoffs) to ``POST /v1/predict`` and records every answer.

A person then forces a version in with ``rollguard promote VERSION --force`` (the CLI, as a
separate process): a healthy retrain, a model trained on shuffled labels, or one with a
feature-order bug (trained on the columns in reversed order under the declared names). The model
server's live score PSI against the approved gate-time scores fires ``RollguardLiveScoreShift``,
Alertmanager calls the guard, the guard confirms with Prometheus and rolls back, the API swaps back.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select

from registry_guard import registry
from registry_guard.policy import GatePolicy
from rollguard.db.models import AliasAudit
from tests.support.alert_stack import ROOT, AlertStack, wait_until
from tests.support.api_models import CDNOW, CUTOFFS, cdnow_features, log_registered_version
from tests.support.servers import venv_bin
from usecases.cdnow.features import FEATURE_COLUMNS, LABEL, build_features

#: The rollback trigger this path exercises.
LIVE_TRIGGER = "RollguardLiveScoreShift"
#: The "current week" whose customers the traffic scores (after both training cutoffs).
CURRENT_WEEK = date(1997, 6, 30)
Kind = Literal["healthy", "shuffled_labels", "feature_order"]
BROKEN_KINDS: tuple[Kind, ...] = ("shuffled_labels", "feature_order")
#: The training seed of each broken kind in the test and the benchmark: models whose live score PSI
#: is well above the threshold (benchmarks/bench_live_separation.py measures every kind and seed;
#: a reversed-order model with seed 5 measures about 0.95 and is NOT caught by the live signal).
BROKEN_SEEDS: dict[str, int] = {"shuffled_labels": 5, "feature_order": 7}


@lru_cache(maxsize=1)
def current_week_rows() -> tuple[dict[str, float], ...]:
    """The feature rows of every CDNOW customer at :data:`CURRENT_WEEK` (about 23,000)."""
    from usecases.cdnow.source import load_dataset

    transactions, _, _ = load_dataset()
    frame = build_features(transactions, CURRENT_WEEK, label_available=False)
    return tuple(frame[list(FEATURE_COLUMNS)].astype(float).to_dict("records"))


def train(kind: Kind, seed: int, rounds: int = 30) -> xgb.Booster:
    """A booster of ``kind`` on the training rows of :func:`cdnow_features` (depth 3):
    ``healthy``; ``shuffled_labels`` (labels permuted with ``seed``); ``feature_order`` (trained on
    the columns in reversed order, saved under the declared names: every feature reads another's
    values at serving)."""
    frame = cdnow_features()
    x = frame[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    y = frame[LABEL].astype("int8").to_numpy()
    if kind == "shuffled_labels":
        y = np.random.default_rng(seed).permutation(y)
    elif kind == "feature_order":
        x = x[:, ::-1].copy()
    dm = xgb.DMatrix(x, label=y, feature_names=list(FEATURE_COLUMNS))
    params = {
        "objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "subsample": 0.8,
        "seed": seed, "nthread": 1,
    }  # fmt: skip
    return xgb.train(params, dm, num_boost_round=rounds)


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register(booster: xgb.Booster, model_name: str, tracking_uri: str) -> str:
    """Log ``booster`` as a new version with its training profile tag; the version."""
    from pipeline.tracking import training_profile_tags

    version = log_registered_version(booster, model_name, tracking_uri)
    client = _client(tracking_uri)
    rows = cdnow_features()
    for key, value in training_profile_tags(CDNOW, (rows,)).items():
        client.set_model_version_tag(model_name, version, key, value)
    return version


def gate_rows() -> pd.DataFrame:
    """The gate's evaluation rows: CDNOW at the newer training cutoff, labels matured."""
    rows = cdnow_features()
    return rows[rows["cutoff"] == pd.Timestamp(CUTOFFS[1])].reset_index(drop=True)


def register_gated(tracking_uri: str, model_name: str, engine: Engine) -> tuple[str, str]:
    """v1 (5 rounds) through the real gate (bootstrap), v2 (30 rounds, better) through the real
    gate (promote); ``(v1, v2)``.

    Raises:
        AssertionError: the gate did not promote v2 (the setup needs a gated champion).
    """
    client = _client(tracking_uri)
    kw: dict[str, Any] = dict(
        usecase=CDNOW, model_name=model_name, policy=GatePolicy(), client=client, engine=engine
    )
    v1 = register(train("healthy", seed=1, rounds=5), model_name, tracking_uri)
    first = registry.run_gate(gate_rows(), version=v1, **kw)
    assert first.move is not None, first.decision.reasons
    v2 = register(train("healthy", seed=2), model_name, tracking_uri)
    second = registry.run_gate(gate_rows(), version=v2, **kw)
    assert second.move is not None, second.decision.reasons
    return v1, v2


@dataclass
class Traffic:
    """Steady prediction traffic against one API: ``batch`` real rows per request, one request
    every ``period`` seconds, from a background thread; every answer's status and version is kept.
    """

    url: str
    batch: int = 10
    period: float = 0.05
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        """Start posting (returns self)."""
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        rows = current_week_rows()
        i = 0
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            while not self._stop.is_set():
                chunk = [rows[(i + k) % len(rows)] for k in range(self.batch)]
                i += self.batch
                try:
                    answer = http.post("/v1/predict", json={"rows": chunk})
                    version = answer.json().get("model_version") if answer.is_success else None
                    self.answers.append((time.monotonic(), answer.status_code, version))
                    if not answer.is_success:
                        self.errors.append(f"{answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(self.period)

    def stop(self) -> None:
        """Stop posting and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def failed(self) -> list[str]:
        """Every failed request so far (status and body head, or the transport error)."""
        return list(self.errors)


def promote_force(stack: AlertStack, version: str, reason: str) -> float:
    """``rollguard promote VERSION --force --reason REASON`` as a person runs it (a separate
    process); the ``time.monotonic()`` at which the command was started.

    Raises:
        AssertionError: the command failed (with its output).
    """
    env = {
        **os.environ,
        "ROLLGUARD_HOME": str(stack.settings.home),
        "ROLLGUARD_ENV": "test",
        "MLFLOW_TRACKING_URI": stack.settings.tracking_uri,
        "ROLLGUARD_MODEL_NAME": stack.settings.model_name,
        "PYTHONPATH": str(ROOT),
    }
    started = time.monotonic()
    done = subprocess.run(
        [venv_bin("rollguard"), "promote", version, "--force", "--reason", reason],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return started


def live_series(stack: AlertStack, version: str) -> dict[str, float]:
    """The API's live figures of ``version`` now (``rollguard_live_score_psi``,
    ``rollguard_live_window_rows``; absent when not exported), read from its ``/metrics``."""
    text = httpx.get(stack.api.url + "/metrics", timeout=5).text
    wanted = {"rollguard_live_score_psi", "rollguard_live_window_rows"}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted and sample.labels.get("version") == version
    }


def rollback_rows(engine: Engine, model_name: str) -> list[Any]:
    """Every ``rollback`` audit row of the model that moved the alias, oldest first."""
    with engine.connect() as conn:
        return conn.execute(
            select(AliasAudit.__table__)
            .where(
                AliasAudit.model_name == model_name,
                AliasAudit.action == "rollback",
                AliasAudit.outcome == "moved",
            )
            .order_by(AliasAudit.id)
        ).all()


@dataclass(frozen=True)
class LiveTiming:
    """Seconds from the ``promote --force`` command's start: ``serving`` — the API first answers
    with the forced version; ``rolled_back`` — the guard's rollback moved the alias (audit row
    written, polled); ``restored`` — the API first answers with the previous version again."""

    kind: str
    serving: float
    rolled_back: float
    restored: float


def force_and_wait_restored(
    stack: AlertStack, traffic: Traffic, version: str, previous: str, kind: str,
    timeout: float = 240.0,
) -> LiveTiming:  # fmt: skip
    """Force ``version`` in and wait until the traffic is answered by ``previous`` again.

    Raises:
        AssertionError: not restored within ``timeout`` seconds (with the stack's logs).
    """
    model = stack.settings.model_name
    before = len(rollback_rows(stack.engine, model))
    t0 = promote_force(stack, version, f"test: a person forces a {kind} model")
    moved: list[float] = []

    def restored() -> tuple[float, float] | None:
        if not moved and len(rollback_rows(stack.engine, model)) > before:
            moved.append(time.monotonic() - t0)
        serving = first_answer(traffic, version, t0)
        back = None if serving is None else first_answer(traffic, previous, serving)
        return None if serving is None or back is None else (serving - t0, back - t0)

    try:
        serving, back = wait_until(restored, timeout, f"{kind}: v{previous} serving again", 0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    return LiveTiming(kind, serving, moved[0] if moved else math.nan, back)


def first_answer(traffic: Traffic, version: str, since: float) -> float | None:
    """When the traffic was first answered by ``version`` after ``since`` (monotonic), or None."""
    return next((t for t, _, v in list(traffic.answers) if t > since and v == version), None)
