"""The serving model: an immutable XGBoost booster plus where it came from, and how one is loaded
from the MLflow registry, checked and warmed up.

Models are read in XGBoost's own format (``model.ubj``/``model.json`` of the ``xgboost`` flavor
written by ``mlflow.xgboost.log_model``), not through a pyfunc wrapper, and scored through
XGBoost's C API (:mod:`api.xgb_dense`): one row in about 50 microseconds.

Categorical features (the booster's ``feature_types`` say ``c``) are fed to XGBoost as their
category codes in the **model's own** levels (stored in the booster since xgboost 3.1, read with
``Booster.get_categories``; the use case's declared levels when the booster stores none), exactly
what XGBoost does when it re-codes a pandas ``category`` column; a value the model does not know
becomes NaN (missing), as ``UseCase.feature_frame`` does in training, and is reported back.
"""

from __future__ import annotations

import json
import math
import operator
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import xgboost as xgb
import yaml

from api.schemas import example_row
from api.xgb_dense import DensePredictor, dense_predictor
from rollguard.usecase import UseCase, default_usecase_name, load_usecase

#: One request row: feature name to a number (numeric) or a level (categorical).
Row = dict[str, Any]
#: An unseen category of a request: (row index, feature, value).
Unseen = tuple[int, str, str]


def default_usecase() -> UseCase:
    """The use case of ``ROLLGUARD_USECASE`` (the settings' default when unset), for callers that
    name none."""
    return load_usecase(os.environ.get("ROLLGUARD_USECASE") or default_usecase_name())


def model_categories(booster: xgb.Booster) -> dict[str, tuple[str, ...]]:
    """Levels of each categorical feature as stored in the booster (xgboost >= 3.1 keeps the
    categories of its training frame), in code order; {} when it stores none."""
    try:
        stored = booster.get_categories(export_to_arrow=True)
        if stored.empty():
            return {}
        pairs = stored.to_arrow()
    except (AttributeError, ValueError, ImportError, xgb.core.XGBoostError):
        return {}
    return {
        str(name): tuple(str(v) for v in array.to_pylist())
        for name, array in pairs
        if array is not None
    }


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
        booster: the XGBoost booster; its ``feature_names`` equal the use case's as a set.
        feature_names: the booster's input order (column order of the arrays it is given).
        categories: categorical feature -> its levels in code order (the model's own levels;
            default: read from the booster, see :func:`model_categories`).
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
    input_example: tuple[Row, ...] = ()
    categories: MappingProxyType[str, tuple[str, ...]] | None = None
    _dense: DensePredictor | None = field(default=None, init=False, repr=False)
    _getter: Any = field(default=None, init=False, repr=False)
    _codes: tuple[tuple[int, str, dict[str, float]], ...] = field(
        default=(), init=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_dense", dense_predictor(self.booster))
        object.__setattr__(self, "_getter", operator.itemgetter(*self.feature_names))
        if self.categories is None:
            object.__setattr__(self, "categories", MappingProxyType(model_categories(self.booster)))
        assert self.categories is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
        codes = tuple(
            (j, name, {level: float(k) for k, level in enumerate(self.categories[name])})
            for j, name in enumerate(self.feature_names)
            if name in self.categories
        )
        object.__setattr__(self, "_codes", codes)

    @property
    def feature_types(self) -> list[str]:
        """``c`` for a categorical feature, ``q`` otherwise, in booster order."""
        cats = self.categories or {}
        return ["c" if n in cats else "q" for n in self.feature_names]

    def to_matrix(self, rows: list[Row]) -> np.ndarray:
        """Rows (dicts keyed by feature name) to a float32 array of shape (n_rows, n_features) in
        the booster's order; features are matched by name, never by position; a categorical value
        becomes its code in the model's levels (NaN when unknown)."""
        return self.encode(rows)[0]

    def encode(self, rows: list[Row]) -> tuple[np.ndarray, list[Unseen]]:
        """:meth:`to_matrix` plus the unseen categories met: ``(row index, feature, value)`` in
        row order (empty for a model without categorical features)."""
        getter = self._getter
        if not self._codes:
            if len(self.feature_names) == 1:
                return np.array([[getter(row)] for row in rows], dtype=np.float32), []
            return np.array([getter(row) for row in rows], dtype=np.float32), []
        x = np.empty((len(rows), len(self.feature_names)), dtype=np.float32)
        unseen: list[Unseen] = []
        cat_columns = {j for j, _, _ in self._codes}
        for j, name in enumerate(self.feature_names):
            if j not in cat_columns:
                x[:, j] = [row[name] for row in rows]
        nan = math.nan
        for j, name, levels in self._codes:
            column = [levels.get(row[name], nan) for row in rows]
            x[:, j] = column
            unseen.extend((i, name, str(rows[i][name])) for i, c in enumerate(column) if c != c)
        if unseen:
            unseen.sort()
        return x, unseen

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
        """Per-feature contributions and the bias, from XGBoost's ``pred_contribs`` (TreeSHAP):
        log-odds for a binary classifier, the label's unit for a regression; categorical columns
        are codes of :meth:`to_matrix` (NaN = missing).

        Returns:
            ``(contributions, bias)``: shapes (n_rows, n_features) and (n_rows,); per row,
            ``bias + contributions.sum()`` is the margin.
        """
        dm = xgb.DMatrix(
            matrix,
            feature_names=list(self.feature_names),
            feature_types=self.feature_types,
            enable_categorical=bool(self._codes),
        )
        out = np.asarray(self.booster.predict(dm, pred_contribs=True), dtype=np.float64)
        if not np.isfinite(out).all():
            raise NonFiniteScore(f"model version {self.version} returned a non-finite contribution")
        return out[:, :-1], out[:, -1]


def check_features(booster: xgb.Booster, usecase: UseCase | None = None) -> tuple[str, ...]:
    """The booster's feature names, checked against the use case's declarations (names, and
    which features are categorical).

    Args:
        booster: the loaded booster.
        usecase: the declarations; default :func:`default_usecase`.

    Raises:
        ModelRefused: no feature names, names other than the declared ones, or a feature that is
            categorical in the declaration but not in the model (or the reverse).
    """
    usecase = usecase or default_usecase()
    declared = usecase.feature_names
    names = booster.feature_names
    if not names:
        raise ModelRefused(
            "the booster has no feature names; features could not be matched by name"
        )
    if set(names) != set(declared) or len(names) != len(declared):
        missing = sorted(set(declared) - set(names))
        extra = sorted(set(names) - set(declared))
        raise ModelRefused(
            f"feature names differ from the API contract: missing {missing}, unexpected {extra}"
        )
    types = booster.feature_types or ["q"] * len(names)
    for name, kind in zip(names, types, strict=True):
        if (kind == "c") != usecase.feature(name).is_categorical:
            raise ModelRefused(
                f"feature {name!r} is {'categorical' if kind == 'c' else 'numeric'} in the model "
                f"but declared {usecase.feature(name).kind} by use case {usecase.name!r}"
            )
    return tuple(names)


def serving_categories(
    booster: xgb.Booster, usecase: UseCase
) -> MappingProxyType[str, tuple[str, ...]]:
    """The levels the API encodes categorical features with: the booster's own, else the use
    case's declared levels (a booster trained on codes stores none).

    Raises:
        ModelRefused: a categorical feature without levels from either source.
    """
    stored = model_categories(booster)
    out: dict[str, tuple[str, ...]] = {}
    for spec in usecase.categorical_features:
        levels = stored.get(spec.name) or spec.categories
        if not levels:
            raise ModelRefused(f"categorical feature {spec.name!r} has no known levels")
        out[spec.name] = tuple(levels)
    return MappingProxyType(out)


def smoke_test(
    model: ServingModel, usecase: UseCase | None = None, warmup_rounds: int = 20
) -> None:
    """Warm the model up and check it scores its input example (or the use case's example row)
    into finite scores, on one row and on a 256-row batch: probabilities in [0, 1] for a binary
    classifier; any finite value for a regression (the label's declared bounds are the gate's
    sanity check, not the server's).

    Raises:
        ModelRefused: a score is missing, non-finite or (classification) outside [0, 1].
    """
    usecase = usecase or default_usecase()
    rows = list(model.input_example) or [example_row(usecase)]
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
    if scores.shape != (257,):
        raise ModelRefused(f"smoke test: {scores.shape} scores for 257 rows")
    if usecase.is_classification and (scores.min() < 0.0 or scores.max() > 1.0):
        raise ModelRefused(
            f"smoke test: scores are not probabilities (shape {scores.shape}, "
            f"range [{scores.min():.4g}, {scores.max():.4g}])"
        )


def read_input_example(model_dir: Path) -> tuple[Row, ...]:
    """Rows of the MLflow ``input_example.json`` (pandas "split" layout), or () when absent or
    not a table of finite numbers and (categorical columns) strings."""
    path = model_dir / "input_example.json"
    if not path.is_file():
        return ()
    try:
        doc = json.loads(path.read_text())
        if "dataframe_split" in doc:
            doc = doc["dataframe_split"]
        columns, data = doc["columns"], doc["data"]
        rows = tuple(
            {
                str(c): v if isinstance(v, str) else float(v)
                for c, v in zip(columns, row, strict=True)
            }
            for row in data
        )
    except (ValueError, KeyError, TypeError):
        return ()
    numbers = (v for r in rows for v in r.values() if not isinstance(v, str))
    if not all(math.isfinite(v) for v in numbers):
        return ()
    return rows


def load_model_dir(
    model_dir: Path,
    *,
    name: str,
    version: str,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    usecase: UseCase | None = None,
) -> ServingModel:
    """Load, check and warm up the MLflow model folder ``model_dir`` (``MLmodel`` file with an
    ``xgboost`` flavor) against ``usecase`` (default :func:`default_usecase`).

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
    usecase = usecase or default_usecase()
    model = ServingModel(
        name=name,
        version=str(version),
        booster=booster,
        feature_names=check_features(booster, usecase),
        run_id=run_id,
        tags=MappingProxyType(dict(tags or {})),
        input_example=read_input_example(model_dir),
        categories=serving_categories(booster, usecase),
    )
    smoke_test(model, usecase)
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
    client: Any,
    name: str,
    version: str,
    *,
    tracking_uri: str | None = None,
    usecase: UseCase | None = None,
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
            model_dir,
            name=name,
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags),
            usecase=usecase,
        )
