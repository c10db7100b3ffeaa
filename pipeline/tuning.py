"""Tune or reuse: one function decides (:func:`decide_tuning`); Optuna tunes; MLflow keeps the params.

The rule, in order (the first that applies wins):

1. a caller forces it (``--tune`` / ``--reuse``);
2. no stored parameters (no champion and no registered version) -> tune;
3. the live guard reported degradation -> tune;
4. the stored parameters are older than the maximum age -> tune. Age is in *data time*: days from
   the evaluation cutoff at which they were found to the current evaluation cutoff, so a replay of
   history ages parameters like production would;
5. the share of drifted features between the features at the cutoff where the parameters were found
   and the features at the current evaluation cutoff is above the threshold -> tune. Drift is
   Evidently 0.7's ``DataDriftPreset`` (per-column tests chosen by Evidently: Wasserstein distance
   for numerical columns with more than 1,000 rows; ``DriftedColumnsCount`` gives the share);
6. otherwise reuse the stored parameters.

Tuning uses Optuna's TPE sampler (seeded), prunes bad trials with
``optuna_integration.XGBoostPruningCallback`` on the task's validation metric (``aucpr`` maximised for
binary classification, ``mae`` minimised for regression), keeps its study in RDB storage
(``Settings.optuna_url``) so a crashed study resumes where it stopped, and stops at a budget of trials
(``MaxTrialsCallback``, counted over every worker of the study) and of seconds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from domain.evaluation import TrainingSet
from monitoring.compute import ColumnMapping, drift_share
from pipeline.training import (
    DEFAULT_TUNABLE,
    TUNABLE_PARAMS,
    VALIDATION_METRIC,
    TrainingConfig,
    dmatrix,
    train_model,
)
from rollguard.errors import ConfigurationError
from rollguard.usecase import UseCase

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

Action = Literal["tune", "reuse"]
Mode = Literal["auto", "tune", "reuse"]

#: Run tag holding the evaluation cutoff at which a run's parameters were found by tuning.
PARAMS_FOUND_CUTOFF_TAG = "rollguard.params_found_cutoff"
#: Prefix of the MLflow run params that hold XGBoost parameters.
PARAM_PREFIX = "xgb."


@dataclass(frozen=True)
class StoredParams:
    """Tuned parameters kept in MLflow, and where they come from."""

    params: Mapping[str, Any]  # the tunable XGBoost parameters (keys of TUNABLE_PARAMS)
    found_cutoff: date  # evaluation cutoff of the run that tuned them
    model_version: str
    run_id: str
    source: Literal["champion", "latest_version"]


@dataclass(frozen=True)
class DriftSummary:
    """Share of features whose distribution drifted between two feature frames."""

    share: float  # in [0, 1]
    n_drifted: int
    n_features: int
    drifted: tuple[str, ...]
    method: str


@dataclass(frozen=True)
class TuneDecision:
    """The outcome of :func:`decide_tuning`, with its evidence."""

    action: Action
    reason: str  # a short code: requested_tune, requested_reuse, no_stored_params, ...
    detail: str  # a sentence for people
    stored: StoredParams | None
    drift_share: float | None
    drift_threshold: float
    params_age_days: int | None
    max_age_days: int
    guard_degraded: bool

    def as_tags(self) -> dict[str, str]:
        return {
            "rollguard.tuning.action": self.action,
            "rollguard.tuning.reason": self.reason,
            "rollguard.tuning.detail": self.detail[:4000],
            "rollguard.tuning.drift_share": ""
            if self.drift_share is None
            else f"{self.drift_share:.4f}",
            "rollguard.tuning.params_age_days": ""
            if self.params_age_days is None
            else str(self.params_age_days),
            "rollguard.tuning.params_source_version": self.stored.model_version
            if self.stored
            else "",
        }


@dataclass(frozen=True)
class TuningResult:
    """The best trial of a study after :func:`tune`."""

    params: Mapping[str, Any]  # tunable parameters of the best trial
    study_name: str
    best_trial: int  # trial number
    best_value: float  # the task's validation metric (aucpr or mae) of the best trial
    n_complete: int
    n_pruned: int
    n_run_now: int  # trials this call ran (0 when the study already met its budget)


def decide_tuning(
    stored: StoredParams | None,
    *,
    evaluation_cutoff: date,
    drift_share: float | None,
    drift_threshold: float,
    guard_degraded: bool,
    max_age_days: int,
    mode: Mode = "auto",
) -> TuneDecision:
    """Decide whether to tune with Optuna or reuse the stored parameters (rule in the module doc).

    Args:
        stored: parameters behind the champion (or the newest version), None when there are none.
        evaluation_cutoff: the current evaluation cutoff (ages the parameters).
        drift_share: share of drifted features since the parameters were found, in [0, 1];
            None when not computed (then drift cannot trigger tuning).
        drift_threshold: tune when ``drift_share > drift_threshold``.
        guard_degraded: the live guard reported a degraded champion.
        max_age_days: tune when the parameters are older than this (data time, days).
        mode: ``auto`` applies the rule; ``tune`` / ``reuse`` force the action.

    Raises:
        ConfigurationError: ``mode='reuse'`` without stored parameters.
    """
    age = (evaluation_cutoff - stored.found_cutoff).days if stored else None

    def made(action: Action, reason: str, detail: str) -> TuneDecision:
        return TuneDecision(
            action=action,
            reason=reason,
            detail=detail,
            stored=stored,
            drift_share=drift_share,
            drift_threshold=drift_threshold,
            params_age_days=age,
            max_age_days=max_age_days,
            guard_degraded=guard_degraded,
        )

    if mode == "tune":
        return made("tune", "requested_tune", "tuning was requested (--tune)")
    if mode == "reuse":
        if stored is None:
            raise ConfigurationError(
                "--reuse needs stored parameters, but the registry has no champion and no version; "
                "run without --reuse to tune first"
            )
        return made(
            "reuse",
            "requested_reuse",
            f"reuse was requested (--reuse); parameters of version {stored.model_version}",
        )
    if stored is None:
        return made("tune", "no_stored_params", "no champion and no registered version to reuse")
    if guard_degraded:
        return made("tune", "guard_degraded", "the live guard reported a degraded champion")
    if age is not None and age > max_age_days:
        return made(
            "tune",
            "params_too_old",
            f"parameters found at {stored.found_cutoff.isoformat()} are {age} days old "
            f"(max {max_age_days})",
        )
    if drift_share is not None and drift_share > drift_threshold:
        return made(
            "tune",
            "data_drift",
            f"{drift_share:.0%} of features drifted since {stored.found_cutoff.isoformat()} "
            f"(threshold {drift_threshold:.0%})",
        )
    return made(
        "reuse",
        "params_current",
        f"parameters of version {stored.model_version} ({stored.source}) are {age} days old "
        f"and feature drift is {0.0 if drift_share is None else drift_share:.0%} "
        f"(threshold {drift_threshold:.0%})",
    )


# --- drift ---------------------------------------------------------------------------------------
def feature_drift(
    usecase: UseCase,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    threshold: float,
    sample_rows: int,
    seed: int,
) -> DriftSummary:
    """Share of the use case's features that drifted from ``reference`` to ``current``: the one
    drift computation of Rollguard (:func:`monitoring.compute.drift_share`, Evidently 0.7 with the
    use case's column mapping and seeded samples), summarised for the tuning rule.

    Args:
        usecase: decides the features and their kinds.
        reference, current: row frames of the use case.
        threshold: the tuning rule's threshold (reported; :func:`decide_tuning` applies it).
        sample_rows, seed: the monitoring sample (``Settings.monitor_sample_rows`` and
            ``monitor_sample_seed``).

    Raises:
        RuntimeError: nothing could be compared (no rows or no comparable feature).
    """
    found = drift_share(
        reference,
        current,
        ColumnMapping.from_usecase(usecase),
        threshold=threshold,
        sample_rows=sample_rows,
        seed=seed,
    )
    if found.share is None:
        raise RuntimeError(f"feature drift not measured: {found.detail}")
    return DriftSummary(
        share=found.share,
        n_drifted=len(found.drifted),
        n_features=found.n_features,
        drifted=found.drifted,
        method="monitoring.compute.drift_share (Evidently DataDriftPreset)",
    )


# --- stored parameters (MLflow) --------------------------------------------------------------------
def load_stored_params(model_name: str, *, client: MlflowClient) -> StoredParams | None:
    """Tunable parameters of the run behind alias ``champion`` of ``model_name``; when there is no
    champion, of the newest registered version; None when there is neither, or the run lacks them.
    """
    from mlflow.exceptions import MlflowException

    source: Literal["champion", "latest_version"] = "champion"
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        source = "latest_version"
        try:
            versions = client.search_model_versions(f"name = '{model_name}'")
        except MlflowException:
            versions = []
        if not versions:
            return None
        version = max(versions, key=lambda v: int(v.version))
    if not version.run_id:
        return None
    run = client.get_run(version.run_id)
    params = {
        k[len(PARAM_PREFIX) :]: _parse_param(v)
        for k, v in run.data.params.items()
        if k.startswith(PARAM_PREFIX) and k[len(PARAM_PREFIX) :] in TUNABLE_PARAMS
    }
    found = run.data.tags.get(PARAMS_FOUND_CUTOFF_TAG)
    if set(params) != set(TUNABLE_PARAMS) or not found:
        return None
    return StoredParams(
        params=params,
        found_cutoff=date.fromisoformat(found),
        model_version=str(version.version),
        run_id=version.run_id,
        source=source,
    )


def _parse_param(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- Optuna ------------------------------------------------------------------------------------------
def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna RDB storage at ``url``; safe for several workers on one SQLite file.

    SQLite: a 60 s busy timeout (``sqlite3.connect(timeout=60)``) so writers wait for the lock
    instead of failing with "database is locked"; creating the schema is retried (tenacity) because
    two workers may race to create the tables of a new file (seen as ``OperationalError`` or an
    ``IntegrityError`` on ``alembic_version``; the second attempt finds the schema in place).
    """
    import optuna
    from sqlalchemy.exc import DBAPIError

    # One INFO line per trial drowns the main job's table; the study's outcome is logged to MLflow.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}

    @retry(
        retry=retry_if_exception_type(DBAPIError),
        stop=stop_after_attempt(8),
        wait=wait_random_exponential(multiplier=0.2, max=5),
        reraise=True,
    )
    def make() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)

    return make()


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """Tunable XGBoost parameters for one trial (ranges from XGBoost's parameter documentation)."""
    return {
        "eta": trial.suggest_float("eta", 0.02, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "lambda": trial.suggest_float("lambda", 1e-3, 10.0, log=True),
        "alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True),
        "gamma": trial.suggest_float("gamma", 1e-3, 5.0, log=True),
    }


def tune(
    usecase: UseCase,
    training: TrainingSet,
    config: TrainingConfig,
    *,
    storage_url: str,
    study_name: str,
    n_trials: int,
    timeout_seconds: float | None,
    seed: int,
    callbacks: Sequence[Any] = (),
) -> TuningResult:
    """Run (or resume) the Optuna study ``study_name`` until it holds ``n_trials`` finished trials.

    Finished means complete or pruned, counted over every worker sharing the study; a resumed study
    only runs the trials still missing. Each trial trains with :func:`pipeline.training.train_model`
    and reports the task's validation metric (:data:`pipeline.training.VALIDATION_METRIC`) to the
    pruner.

    Args:
        usecase: the task type (objective, metric and direction) and the model inputs.
        training: the fit and validation rows (evaluation rows are never looked at).
        config: seed, threads, rounds; its ``tunable`` is replaced by each trial's parameters.
        storage_url: SQLAlchemy URL of the Optuna storage (``Settings.optuna_url``).
        study_name: one study per training data (e.g. derived from the dataset checksum).
        n_trials: budget in finished trials for the whole study.
        timeout_seconds: budget in seconds for this call; None for no limit.
        seed: seed of the TPE sampler.
        callbacks: extra ``study.optimize`` callbacks.

    Returns:
        The best trial's parameters and the study's counts.

    Raises:
        RuntimeError: the study has no complete trial after the budget (e.g. all pruned or failed).
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from optuna_integration import XGBoostPruningCallback

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    metric, larger_is_better = VALIDATION_METRIC[usecase.task]
    study = optuna.create_study(
        storage=open_storage(storage_url),
        study_name=study_name,
        direction="maximize" if larger_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
        load_if_exists=True,
    )
    dtrain = dmatrix(usecase, training.fit, nthread=config.nthread)
    dvalid = dmatrix(usecase, training.validation, nthread=config.nthread)

    def objective(trial: optuna.Trial) -> float:
        cfg = dataclasses.replace(config, tunable={**DEFAULT_TUNABLE, **search_space(trial)})
        pruning = XGBoostPruningCallback(trial, f"validation-{metric}")
        model = train_model(
            usecase, training, cfg, callbacks=[pruning], dtrain=dtrain, dvalid=dvalid
        )
        trial.set_user_attr("n_rounds", model.n_rounds)
        return model.validation_score

    done_before = len(study.get_trials(deepcopy=False, states=finished))
    ran_here: list[int] = []  # trials finished by this call (other workers add their own)
    if done_before < n_trials:
        study.optimize(
            objective,
            n_trials=n_trials - done_before,
            timeout=timeout_seconds,
            callbacks=[
                lambda _study, trial: ran_here.append(trial.number),
                MaxTrialsCallback(n_trials, states=finished),
                *callbacks,
            ],
            gc_after_trial=False,
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"Optuna study {study_name!r} has no complete trial")
    best = study.best_trial
    return TuningResult(
        params={**DEFAULT_TUNABLE, **best.params},
        study_name=study_name,
        best_trial=best.number,
        best_value=float(best.value),  # type: ignore[arg-type]
        n_complete=len(complete),
        n_pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        n_run_now=len(ran_here),
    )
