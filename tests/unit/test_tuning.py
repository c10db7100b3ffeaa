"""The tune-or-reuse rule (every branch), drift, Optuna resume and concurrent workers on SQLite."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import optuna
import pytest

from domain.evaluation import build_training_set, plan_cutoffs
from pipeline.training import DEFAULT_TUNABLE, TrainingConfig
from pipeline.tuning import StoredParams, decide_tuning, feature_drift, tune
from rollguard.errors import ConfigurationError
from rollguard.weeks import iso_week_label
from usecases.cdnow import USECASE as CDNOW
from usecases.cdnow.features import build_features
from usecases.cdnow.source import load_dataset

EVAL = date(1998, 6, 8)
STORED = StoredParams(
    params=dict(DEFAULT_TUNABLE),
    found_cutoff=date(1998, 5, 4),
    model_version="3",
    run_id="abc",
    source="champion",
)
RULE = dict(evaluation_cutoff=EVAL, drift_threshold=0.5, max_age_days=91)
FAST = TrainingConfig(seed=3, nthread=1, num_boost_round=15, early_stopping_rounds=5)


@pytest.mark.parametrize(
    ("stored", "drift", "degraded", "mode", "action", "reason"),
    [
        (STORED, 0.1, False, "tune", "tune", "requested_tune"),
        (STORED, 0.9, True, "reuse", "reuse", "requested_reuse"),
        (None, None, False, "auto", "tune", "no_stored_params"),
        (STORED, 0.1, True, "auto", "tune", "guard_degraded"),
        (
            StoredParams({}, date(1997, 12, 1), "1", "r", "latest_version"),
            0.1,
            False,
            "auto",
            "tune",
            "params_too_old",
        ),
        (STORED, 0.6, False, "auto", "tune", "data_drift"),
        (STORED, 0.5, False, "auto", "reuse", "params_current"),  # at the threshold: not above
        (STORED, None, False, "auto", "reuse", "params_current"),
    ],
)
def test_tune_or_reuse_rule(stored, drift, degraded, mode, action, reason):
    d = decide_tuning(stored, drift_share=drift, guard_degraded=degraded, mode=mode, **RULE)
    assert (d.action, d.reason) == (action, reason)
    assert d.detail
    assert d.params_age_days == (None if stored is None else (EVAL - stored.found_cutoff).days)
    with pytest.raises(AttributeError):
        d.action = "reuse"  # frozen


def test_age_limit_is_inclusive():
    at_limit = StoredParams({}, date(1998, 3, 9), "1", "r", "champion")  # 91 days before EVAL
    d = decide_tuning(at_limit, drift_share=0.0, guard_degraded=False, **RULE)
    assert (d.action, d.params_age_days) == ("reuse", 91)


def test_reuse_without_stored_params_is_refused():
    with pytest.raises(ConfigurationError, match="--reuse"):
        decide_tuning(None, drift_share=None, guard_degraded=False, mode="reuse", **RULE)


@pytest.fixture(scope="module")
def cdnow():
    tx, _, _ = load_dataset()
    return tx, sorted({iso_week_label(d.date()) for d in tx["date"]})


@pytest.fixture(scope="module")
def tiny_set(cdnow):
    tx, weeks = cdnow
    return build_training_set(CDNOW, tx, plan_cutoffs(CDNOW, weeks, n_fit=1, n_validation=1))


def test_feature_drift_is_the_one_drift_computation_of_monitoring(cdnow):
    tx, _ = cdnow
    now = build_features(tx, EVAL, label_available=False)
    same = feature_drift(CDNOW, now, now, threshold=0.5, sample_rows=50_000, seed=1)
    assert same.share == 0.0 and same.drifted == ()
    old = build_features(tx, date(1997, 4, 7), label_available=False)
    moved = feature_drift(CDNOW, old, now, threshold=0.5, sample_rows=50_000, seed=1)
    assert moved.share > 0.3
    assert "tenure_days" in moved.drifted
    assert moved.n_features == 18


class Crash(Exception):
    pass


def test_interrupted_study_resumes_where_it_stopped(tiny_set, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def crash_after_3(study, trial):
        if trial.number == 2:
            raise Crash("worker died")

    with pytest.raises(Crash):
        tune(
            CDNOW,
            tiny_set,
            FAST,
            storage_url=url,
            study_name="s",
            n_trials=6,
            timeout_seconds=None,
            seed=1,
            callbacks=[crash_after_3],
        )
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 3
    result = tune(
        CDNOW,
        tiny_set,
        FAST,
        storage_url=url,
        study_name="s",
        n_trials=6,
        timeout_seconds=None,
        seed=1,
    )
    assert result.n_run_now == 3
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.number for t in study.trials] == list(range(6))
    assert result.n_complete + result.n_pruned == 6
    # The budget is met: a third call runs nothing and returns the same best trial.
    again = tune(
        CDNOW,
        tiny_set,
        FAST,
        storage_url=url,
        study_name="s",
        n_trials=6,
        timeout_seconds=None,
        seed=1,
    )
    assert (again.n_run_now, again.best_trial, again.params) == (
        0,
        result.best_trial,
        result.params,
    )


def _worker(url: str, worker: int) -> int:
    tx, _, _ = load_dataset()
    weeks = sorted({iso_week_label(d.date()) for d in tx["date"]})
    data = build_training_set(CDNOW, tx, plan_cutoffs(CDNOW, weeks, n_fit=1, n_validation=1))
    return tune(
        CDNOW,
        data,
        FAST,
        storage_url=url,
        study_name="shared",
        n_trials=8,
        timeout_seconds=None,
        seed=worker,
    ).n_run_now


def test_two_workers_share_one_sqlite_study(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"  # a new file: both workers race to create it
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        ran = list(pool.map(_worker, [url, url], [1, 2]))
    study = optuna.load_study(study_name="shared", storage=url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert all(t.state != optuna.trial.TrialState.FAIL for t in study.trials)
    assert sum(ran) == len(finished) >= 8
    assert all(n > 0 for n in ran), ran
