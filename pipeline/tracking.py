"""MLflow tracking of a training run: params, metrics, the model (XGBoost UBJSON with a signature),
SHAP explanations, lineage tags, and registration as the ``challenger`` version.

One run per training. Registration is idempotent: each version carries the tag
``rollguard.training_key`` (hash of data, parameters and code version) and :func:`find_version` looks
it up before anything is trained, under the store lock on (model name, key) that
:func:`pipeline.retrain.retrain` holds until the version is registered (docs/pipeline.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from domain.live_profile import TRAINING_PROFILE_TAG, training_profile
from rollguard.errors import RollguardError
from rollguard.mlflow_client import ensure_experiment as mlflow_ensure_experiment
from rollguard.mlflow_client import mlflow_client
from rollguard.usecase import UseCase

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from rollguard.settings import Settings

TRAINING_KEY_TAG = "rollguard.training_key"
STATUS_TAG = "rollguard.status"
CHALLENGER = "challenger"
EXPERIMENT_NAME = "rollguard-training"
#: Largest |sum of contributions + base value - margin| accepted as additive (margin units: log-odds
#: for binary classification, the label's unit for regression).
ADDITIVITY_TOLERANCE = 1e-3


class TrackingError(RollguardError):
    """MLflow lost something a registered version must have (e.g. its signature)."""

    kind = "tracking"


@dataclass(frozen=True)
class Explanation:
    """Per-feature contributions to the margin (log-odds, or the label's unit for regression) for a
    sample of rows.

    ``values`` has shape ``(n_rows, n_features)``; ``values.sum(1) + base_value`` equals the model's
    margin within :data:`ADDITIVITY_TOLERANCE` (``max_additivity_error`` is the observed maximum).
    """

    values: np.ndarray
    base_value: float
    features: pd.DataFrame
    method: str  # "shap.TreeExplainer" or "xgboost.pred_contribs"
    max_additivity_error: float
    fallback_reason: str | None

    def mean_abs(self) -> pd.Series:
        """Mean |contribution| per feature (log-odds), largest first."""
        return pd.Series(np.abs(self.values).mean(axis=0), index=self.features.columns).sort_values(
            ascending=False
        )


# --- keys and versions -----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the working tree when available, else ``rollguard==<package version>``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, fixed argv, reads the commit id only
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"rollguard=={version('rollguard')}"
    except PackageNotFoundError:
        return "rollguard==unknown"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def training_key(data: Mapping[str, Any], params: Mapping[str, Any], code: str) -> str:
    """SHA-256 (hex) over the data identity (batch hashes, cutoffs, dataset checksum), the full
    training parameters and the code version: equal keys mean the same model would be trained."""
    payload = canonical_json({"data": data, "params": params, "code": code})
    return hashlib.sha256(payload.encode()).hexdigest()


def find_version(model_name: str, key: str, *, client: MlflowClient) -> ModelVersion | None:
    """The registered version of ``model_name`` tagged with ``key``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{model_name}' and tags.`{TRAINING_KEY_TAG}` = '{key}'"
        )
    except MlflowException:
        return None
    found = [v for v in found if v.tags.get(TRAINING_KEY_TAG) == key]
    return min(found, key=lambda v: int(v.version)) if found else None


def ensure_experiment(
    client: MlflowClient, *, tracking_uri: str, artifact_root: Path, name: str = EXPERIMENT_NAME
) -> str:
    """Experiment id of ``name`` (default the training experiment), created when missing: the one
    :func:`rollguard.mlflow_client.ensure_experiment`, which puts its artifacts under
    ``artifact_root`` (a tracking server chooses its own location)."""
    return mlflow_ensure_experiment(
        client, name, artifact_root=artifact_root, tracking_uri=tracking_uri
    )


# --- SHAP --------------------------------------------------------------------------------------------
def explain(usecase: UseCase, booster: xgb.Booster, features: pd.DataFrame) -> Explanation:
    """SHAP values of ``booster`` for the model inputs of ``features`` (rows of the use case).

    Tries ``shap.TreeExplainer`` (Lundberg et al., "From local explanations to global understanding
    with explainable AI for trees", Nature MI 2020) and checks additivity against XGBoost's own
    margin; when SHAP raises or is not additive (XGBoost >= 3.1 stores ``base_score`` differently,
    which broke some SHAP releases) it falls back to XGBoost's exact TreeSHAP
    (``predict(pred_contribs=True)``) and says why in ``fallback_reason``. SHAP's TreeExplainer
    does not read XGBoost's native categorical splits, so models with categorical features take the
    fallback (XGBoost's TreeSHAP handles them; additivity is checked the same way).

    Raises:
        ValueError: neither method is additive (the explanation would be wrong).
    """
    import xgboost as xgb

    x = usecase.feature_frame(features)
    matrix = xgb.DMatrix(x, enable_categorical=True)
    margin = booster.predict(matrix, output_margin=True).astype("float64")
    fallback_reason: str | None = None
    try:
        import shap

        explainer = shap.TreeExplainer(booster)
        values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype="float64")
        base = float(np.ravel(explainer.expected_value)[0])
        error = float(np.max(np.abs(values.sum(axis=1) + base - margin)))
        if error <= ADDITIVITY_TOLERANCE:
            return Explanation(values, base, x, "shap.TreeExplainer", error, None)
        fallback_reason = f"shap.TreeExplainer not additive: max error {error:.3g} log-odds"
    except Exception as exc:  # noqa: BLE001 - any SHAP failure leads to the documented fallback
        fallback_reason = f"shap.TreeExplainer failed: {type(exc).__name__}: {exc}"[:500]
    contribs = booster.predict(matrix, pred_contribs=True).astype("float64")
    values, base_col = contribs[:, :-1], contribs[:, -1]
    error = float(np.max(np.abs(contribs.sum(axis=1) - margin)))
    if error > ADDITIVITY_TOLERANCE:
        raise ValueError(f"no additive explanation: pred_contribs max error {error:.3g}")
    return Explanation(
        values, float(base_col[0]), x, "xgboost.pred_contribs", error, fallback_reason
    )


def log_explanation(
    expl: Explanation, *, run_id: str, client: MlflowClient, n_local: int = 50
) -> None:
    """Log the SHAP summary plot (PNG), mean |SHAP| per feature (CSV and ``shap_mean_abs_*``
    metrics) and ``n_local`` local explanations (JSON) to ``run_id``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    mean_abs = expl.mean_abs()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # The plot colours by feature value: categorical levels are shown by their codes.
        plotted = expl.features.apply(
            lambda c: c.cat.codes if isinstance(c.dtype, pd.CategoricalDtype) else c
        )
        shap.summary_plot(expl.values, plotted, show=False, max_display=len(mean_abs))
        fig = plt.gcf()
        fig.savefig(folder / "shap_summary.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        mean_abs.rename("mean_abs_shap").rename_axis("feature").to_csv(folder / "shap_mean_abs.csv")
        local = [
            {
                "row": int(i),
                "base_value": expl.base_value,
                "features": {c: _jsonable(expl.features.iloc[i][c]) for c in expl.features.columns},
                "contributions": dict(
                    zip(expl.features.columns, map(float, expl.values[i]), strict=True)
                ),
            }
            for i in range(min(n_local, len(expl.values)))
        ]
        (folder / "shap_local.json").write_text(json.dumps(local, indent=1))
        client.log_artifacts(run_id, str(folder), artifact_path="shap")
    client.log_batch(
        run_id,
        metrics=[_metric(f"shap_mean_abs_{k}", float(v)) for k, v in mean_abs.items()],
    )


def _jsonable(value: Any) -> Any:
    """A feature value for JSON: a float, a category's text, or None when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value if isinstance(value, str) else float(value)


def _metric(key: str, value: float) -> Any:
    import time

    from mlflow.entities import Metric

    return Metric(key=key, value=value, timestamp=int(time.time() * 1000), step=0)


# --- the model ---------------------------------------------------------------------------------------
def log_model(
    usecase: UseCase,
    booster: xgb.Booster,
    example: pd.DataFrame,
    *,
    run_id: str,
    tracking_uri: str,
) -> str:
    """Log ``booster`` in XGBoost's UBJSON format with a signature and an input example (the model
    inputs of the use case's rows ``example``; categorical features appear as strings).

    Returns:
        The logged model's URI.

    Raises:
        TrackingError: the logged model has no signature.
    """
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature

    x = usecase.feature_frame(example)
    signature = infer_signature(x, booster.predict(xgb.DMatrix(x, enable_categorical=True)))
    mlflow.set_tracking_uri(tracking_uri)
    # The fluent API refuses to resume a run of another experiment than the process's active one
    # (a long-lived process may have set one): make the run's own experiment the active one.
    experiment_id = (
        mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
        .get_run(run_id)
        .info.experiment_id
    )
    mlflow.set_experiment(experiment_id=experiment_id)
    # uv's environments have no pip, so MLflow warns on every model that conda.yaml lists pip
    # without a version; harmless (the serving image installs from pip_requirements below).
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            model_format="ubj",
            signature=signature,
            input_example=x.head(5),
            # Pinned here rather than inferred: the serving image needs only XGBoost to load it.
            pip_requirements=[
                xgboost_requirement(),
                f"mlflow-skinny=={mlflow.__version__}",
            ],
        )
    if info.signature is None:
        raise TrackingError(f"MLflow dropped the signature of {info.model_uri}")
    return info.model_uri


def xgboost_requirement() -> str:
    """The pip requirement of the XGBoost this process runs, under the name of the distribution
    that installed it: ``xgboost-cpu==3.2.0`` in Rollguard's environments (pyproject.toml,
    ``[tool.uv]``), ``xgboost==...`` where the GPU build is installed. Both build the same
    ``import xgboost`` and read the same model files; MLflow checks a loaded model's requirements
    against what is installed, so the name must be the installed one."""
    import xgboost as xgb

    dists = packages_distributions().get("xgboost") or ["xgboost"]
    name = "xgboost-cpu" if "xgboost-cpu" in dists else dists[0]
    return f"{name}=={xgb.__version__}"


def training_profile_tags(usecase: UseCase, frames: Sequence[pd.DataFrame]) -> dict[str, str]:
    """The version tag of its training profile (:data:`domain.live_profile.TRAINING_PROFILE_TAG`):
    per-feature bins of the rows the version was trained on (``frames``: the fit and validation
    row frames of ``usecase``), which the model server compares live features with.

    Raises:
        ValueError: no rows, or a declared feature is missing from the rows.
    """
    rows = pd.concat(list(frames), ignore_index=True)
    profile = training_profile(usecase.feature_frame(rows), usecase)
    return {TRAINING_PROFILE_TAG: profile.to_json()}


def register_version(
    model_uri: str,
    *,
    model_name: str,
    run_id: str,
    tags: Mapping[str, str],
    client: MlflowClient,
    tracking_uri: str,
) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``model_name`` with ``tags``, check its signature,
    and point alias ``challenger`` at it.

    Raises:
        TrackingError: the registered version has no signature (MLflow can drop it silently); the
            version is then tagged ``rollguard.status=invalid`` and the alias is not moved.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        with contextlib.suppress(MlflowException):  # created meanwhile by another worker
            client.create_registered_model(model_name)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    version = mlflow.register_model(model_uri, model_name, tags=dict(tags))
    if version.run_id != run_id:
        raise TrackingError(f"registered version {version.version} points at run {version.run_id}")
    signature = mlflow.models.get_model_info(f"models:/{model_name}/{version.version}").signature
    if signature is None:
        client.set_model_version_tag(model_name, version.version, STATUS_TAG, "invalid")
        raise TrackingError(
            f"registered version {model_name}/{version.version} has no signature; not a challenger"
        )
    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    return client.get_model_version(model_name, version.version)


def version_signature(model_name: str, version: str, *, tracking_uri: str) -> Any:
    """The signature MLflow serves for ``models:/<model_name>/<version>`` (None when missing)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.models.get_model_info(f"models:/{model_name}/{version}").signature


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows of ``frame``, a seeded random sample in the original order."""
    if len(frame) <= n:
        return frame.reset_index(drop=True)
    return frame.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)


def settings_client(settings: Settings) -> MlflowClient:
    """An MlflowClient on ``settings.tracking_uri`` (registry on the same URI)."""
    return mlflow_client(settings)
