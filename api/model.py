"""The serving model: an immutable XGBoost booster plus where it came from, and how one is loaded
from the MLflow registry, checked and warmed up.

Models are read in XGBoost's own format (``model.ubj``/``model.json`` of the ``xgboost`` flavor
written by ``mlflow.xgboost.log_model``), not through a pyfunc wrapper, and scored through
XGBoost's C API (:mod:`api.xgb_dense`): one row in about 50 microseconds.
"""

from __future__ import annotations

import json
import math
import operator
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import xgboost as xgb
import yaml

from api.schemas import EXAMPLE_ROW
from api.xgb_dense import DensePredictor, dense_predictor
from usecases.cdnow.features import FEATURE_COLUMNS


class ModelRefused(Exception):
    """A model version cannot serve: artifact missing or unreadable, wrong features, or its smoke
    test failed. The message says which."""


class NonFiniteScore(Exception):
    """The model returned NaN or infinity for at least one row."""


@dataclass(frozen=True, eq=False)
class ServingModel:
    """One loaded, checked model version. Never mutated: a hot swap replaces the whole object.

    Attributes:
        name: registered model name.
        version: registered model version (a string of digits in MLflow).
        booster: the XGBoost booster; its ``feature_names`` equal :data:`FEATURE_COLUMNS` as a set.
        feature_names: the booster's input order (column order of the arrays it is given).
        run_id: MLflow run that produced it, if known.
        tags: the version's registry tags (lineage, status, gate evidence).
        loaded_at: when this process loaded it (UTC).
    """

    name: str
    version: str
    booster: xgb.Booster
    feature_names: tuple[str, ...]
    run_id: str | None = None
    tags: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    input_example: tuple[dict[str, float], ...] = ()
    _dense: DensePredictor | None = field(default=None, init=False, repr=False)
    _getter: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_dense", dense_predictor(self.booster))
        object.__setattr__(self, "_getter", operator.itemgetter(*self.feature_names))

    def to_matrix(self, rows: list[dict[str, float]]) -> np.ndarray:
        """Rows (dicts keyed by feature name) to a float32 array of shape (n_rows, n_features) in
        the booster's order; features are matched by name, never by position."""
        getter = self._getter
        if len(self.feature_names) == 1:
            return np.array([[getter(row)] for row in rows], dtype=np.float32)
        return np.array([getter(row) for row in rows], dtype=np.float32)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities, shape (n_rows,), float64.

        Raises:
            NonFiniteScore: any score is NaN or infinite.
        """
        scores = self.raw_predict(matrix)
        if not np.isfinite(scores).all():
            raise NonFiniteScore(f"model version {self.version} returned a non-finite score")
        return scores

    def raw_predict(self, matrix: np.ndarray) -> np.ndarray:
        """Scores, shape (n_rows,), float64, unchecked (may hold NaN; see :meth:`predict`).

        Through :class:`api.xgb_dense.DensePredictor` (the C call ``inplace_predict`` makes,
        without its per-call overhead), or ``inplace_predict`` where that is unavailable."""
        if self._dense is not None:
            return self._dense.predict(matrix)
        scores = self.booster.inplace_predict(matrix, validate_features=False)
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature contributions (log-odds) and the bias, from XGBoost's ``pred_contribs``.

        Returns:
            ``(contributions, bias)``: shapes (n_rows, n_features) and (n_rows,).
        """
        dm = xgb.DMatrix(matrix, feature_names=list(self.feature_names))
        out = np.asarray(self.booster.predict(dm, pred_contribs=True), dtype=np.float64)
        if not np.isfinite(out).all():
            raise NonFiniteScore(f"model version {self.version} returned a non-finite contribution")
        return out[:, :-1], out[:, -1]


def check_features(booster: xgb.Booster) -> tuple[str, ...]:
    """The booster's feature names, checked against the API contract.

    Raises:
        ModelRefused: the booster has no feature names or not exactly :data:`FEATURE_COLUMNS`.
    """
    names = booster.feature_names
    if not names:
        raise ModelRefused(
            "the booster has no feature names; features could not be matched by name"
        )
    if set(names) != set(FEATURE_COLUMNS) or len(names) != len(FEATURE_COLUMNS):
        missing = sorted(set(FEATURE_COLUMNS) - set(names))
        extra = sorted(set(names) - set(FEATURE_COLUMNS))
        raise ModelRefused(
            f"feature names differ from the API contract: missing {missing}, unexpected {extra}"
        )
    return tuple(names)


def smoke_test(model: ServingModel, warmup_rounds: int = 20) -> None:
    """Warm the model up and check it scores its input example (or :data:`EXAMPLE_ROW`) into
    finite probabilities in [0, 1], on one row and on a 256-row batch.

    Raises:
        ModelRefused: a score is missing, non-finite or outside [0, 1].
    """
    rows = list(model.input_example) or [dict(EXAMPLE_ROW)]
    try:
        single = model.to_matrix(rows[:1])
        batch = model.to_matrix((rows * (256 // len(rows) + 1))[:256])
        for _ in range(warmup_rounds):
            model.predict(single)
        scores = np.concatenate([model.predict(single), model.predict(batch)])
        model.explain(single)
    except NonFiniteScore as exc:
        raise ModelRefused(f"smoke test: {exc}") from exc
    except (KeyError, ValueError, xgb.core.XGBoostError) as exc:
        raise ModelRefused(f"smoke test failed: {type(exc).__name__}: {exc}") from exc
    if scores.shape != (257,) or scores.min() < 0.0 or scores.max() > 1.0:
        raise ModelRefused(
            f"smoke test: scores are not probabilities (shape {scores.shape}, "
            f"range [{scores.min():.4g}, {scores.max():.4g}])"
        )


def read_input_example(model_dir: Path) -> tuple[dict[str, float], ...]:
    """Rows of the MLflow ``input_example.json`` (pandas "split" layout), or () when absent or
    not a table of finite numbers."""
    path = model_dir / "input_example.json"
    if not path.is_file():
        return ()
    try:
        doc = json.loads(path.read_text())
        if "dataframe_split" in doc:
            doc = doc["dataframe_split"]
        columns, data = doc["columns"], doc["data"]
        rows = tuple({str(c): float(v) for c, v in zip(columns, row, strict=True)} for row in data)
    except (ValueError, KeyError, TypeError):
        return ()
    if not all(all(math.isfinite(v) for v in r.values()) for r in rows):
        return ()
    return rows


def load_model_dir(
    model_dir: Path,
    *,
    name: str,
    version: str,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> ServingModel:
    """Load, check and warm up the MLflow model folder ``model_dir`` (``MLmodel`` file with an
    ``xgboost`` flavor).

    Raises:
        ModelRefused: no xgboost flavor, unreadable booster, wrong features, failed smoke test.
    """
    mlmodel = model_dir / "MLmodel"
    try:
        spec = yaml.safe_load(mlmodel.read_text())
        data = spec["flavors"]["xgboost"]["data"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelRefused(f"no readable xgboost flavor in {mlmodel.name}: {exc}") from exc
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_dir / data))
    except (xgb.core.XGBoostError, OSError) as exc:
        raise ModelRefused(f"booster file {data} does not load: {exc}") from exc
    booster.set_param({"nthread": 1})
    model = ServingModel(
        name=name,
        version=str(version),
        booster=booster,
        feature_names=check_features(booster),
        run_id=run_id,
        tags=MappingProxyType(dict(tags or {})),
        input_example=read_input_example(model_dir),
    )
    smoke_test(model)
    return model


def download_version(
    client: Any, name: str, version: str, dest: Path, *, tracking_uri: str | None = None
) -> Path:
    """Download the model folder of registered ``name`` version ``version`` into ``dest``.

    Raises:
        mlflow.exceptions.MlflowException: the registry or artifact store failed.
    """
    import mlflow.artifacts

    uri = client.get_model_version_download_uri(name, version)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(dest), tracking_uri=tracking_uri
    )
    return Path(path)


def load_version(
    client: Any, name: str, version: str, *, tracking_uri: str | None = None
) -> ServingModel:
    """Download, load, check and warm up one registered version (see :func:`load_model_dir`).

    Raises:
        ModelRefused: the version cannot serve (the message says why).
        mlflow.exceptions.MlflowException, OSError: the registry or artifact store failed.
    """
    from mlflow.exceptions import MlflowException

    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="rollguard-model-") as tmp:
        try:
            model_dir = download_version(
                client, name, version, Path(tmp), tracking_uri=tracking_uri
            )
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
                raise ModelRefused(f"artifacts of version {version} are missing: {exc}") from exc
            raise
        return load_model_dir(
            model_dir, name=name, version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags)
        )
