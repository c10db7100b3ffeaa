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

import dataclasses
import json
import logging
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

log = logging.getLogger("rollguard.api.model")

#: One request row: feature name to a number (numeric) or a level (categorical).
Row = dict[str, Any]
#: An unseen category of a request: (row index, feature, value).
Unseen = tuple[int, str, str]

#: Largest absolute difference between the fast path's and ``Booster.inplace_predict``'s scores
#: on the load-time probe (:func:`check_fast_path`). Both run the same C function on the same
#: float32 rows, so they are bit-identical when the C API is used as documented; the tolerance
#: only absorbs the float32 -> float64 copy, and anything above it means the call is wrong.
FAST_PATH_TOLERANCE = 1e-6


def default_usecase() -> UseCase:
    """The use case of ``ROLLGUARD_USECASE`` (the settings' default when unset), for callers that
    name none."""
    return load_usecase(os.environ.get("ROLLGUARD_USECASE") or default_usecase_name())


def model_categories(booster: xgb.Booster) -> dict[str, tuple[str, ...]]:
    """Levels of each categorical feature as stored in the booster (xgboost >= 3.1 keeps the
    categories of its training frame), in code order; {} when it stores none.

    Read from the model's JSON (``learner.gradient_booster...model.cats.enc``: per feature, a
    string array as Arrow lays it out, UTF-8 ``values`` cut at ``offsets``, or numbers in
    ``values``), which is what ``Booster.get_categories(export_to_arrow=True)`` exports, without
    the pyarrow that export needs and the API image does not hold. Levels are ``str`` of each
    value, as before. A unit test checks the two readings agree (tests/unit/test_api_usecases.py);
    XGBoost is pinned (pyproject.toml, ``[tool.uv]``), so the layout cannot change under it.
    """
    if "c" not in (booster.feature_types or []):
        return {}  # no categorical feature: skip serializing the model (23 ms at 500 trees)
    names = booster.feature_names or [str(i) for i in range(booster.num_features())]
    out: dict[str, tuple[str, ...]] = {}
    try:
        learner = json.loads(booster.save_raw("json"))["learner"]
        gbm = learner["gradient_booster"]
        encodings = (gbm.get("model") or gbm.get("gbtree", {}).get("model", {}))["cats"]["enc"]
        for name, enc in zip(names, encodings, strict=False):
            levels = _levels(enc)
            if levels is not None:
                out[str(name)] = levels
    except (KeyError, TypeError, ValueError, xgb.core.XGBoostError):
        # ValueError includes UnicodeDecodeError: XGBoost 3.2 cuts non-ASCII levels at character
        # offsets of UTF-8 bytes, which its Arrow export refuses too; the use case's declared
        # levels then apply (serving_categories).
        return {}
    return out


def _levels(enc: dict[str, Any]) -> tuple[str, ...] | None:
    """One feature's stored levels (see :func:`model_categories`), None when it has none."""
    values = enc.get("values") or []
    if "offsets" not in enc:  # numeric categories
        return tuple(str(v) for v in values) if values else None
    offsets = enc["offsets"]
    if not offsets:
        return None
    raw = bytes(v & 0xFF for v in values)  # the JSON stores the bytes as signed chars
    return tuple(raw[a:b].decode() for a, b in zip(offsets, offsets[1:], strict=False))


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
        fast_path: score through :class:`api.xgb_dense.DensePredictor` when the library has it
            (False: ``Booster.inplace_predict``; :func:`load_model_dir` sets it False when the
            two disagree on the load-time probe).
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
    fast_path: bool = True
    _dense: DensePredictor | None = field(default=None, init=False, repr=False)
    _getter: Any = field(default=None, init=False, repr=False)
    _codes: tuple[tuple[int, str, dict[str, float]], ...] = field(
        default=(), init=False, repr=False
    )

    def __post_init__(self) -> None:
        dense = dense_predictor(self.booster) if self.fast_path else None
        object.__setattr__(self, "_dense", dense)
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


@dataclass(frozen=True)
class FastPathCheck:
    """The load-time comparison of the fast path with ``Booster.inplace_predict``.

    Attributes:
        rows: rows of the probe batch.
        max_difference: largest absolute score difference (NaN when either side gave NaN where
            the other did not).
        agrees: ``max_difference`` within :data:`FAST_PATH_TOLERANCE`.
    """

    rows: int
    max_difference: float
    agrees: bool


def probe_matrix(model: ServingModel, rows: list[Row], n_rows: int = 64) -> np.ndarray:
    """A probe batch for :func:`check_fast_path`, shape (len(rows) + n_rows, n_features), float32:
    ``rows`` encoded, then ``n_rows`` synthetic rows of the feature schema drawn from them with
    a fixed seed: each numeric column takes a value of ``rows`` scaled by 0, 0.5, 1, 2 or 10, each
    categorical column a random level or missing (NaN), so the probe reaches more tree branches
    than the input example alone.
    """
    base = model.to_matrix(rows)
    rng = np.random.default_rng(0)
    n_features = base.shape[1]
    picks = rng.integers(0, len(base), size=(n_rows, n_features))
    synthetic = base[picks, np.arange(n_features)]
    cats: MappingProxyType[str, tuple[str, ...]] = model.categories or MappingProxyType({})
    for j, name in enumerate(model.feature_names):
        if name in cats:
            codes = rng.integers(0, max(len(cats[name]), 1), size=n_rows).astype(np.float32)
            codes[rng.random(n_rows) < 0.125] = np.nan
            synthetic[:, j] = codes
        else:
            synthetic[:, j] *= rng.choice(np.array([0.0, 0.5, 1.0, 2.0, 10.0]), size=n_rows)
    return np.ascontiguousarray(np.vstack([base, synthetic]), dtype=np.float32)


def check_fast_path(
    booster: xgb.Booster, dense: DensePredictor, probe: np.ndarray
) -> FastPathCheck:
    """Score ``probe`` (shape (n_rows, n_features), float32) through ``dense`` and through
    ``booster.inplace_predict`` (the library's own path) and compare.

    Raises:
        xgboost.core.XGBoostError: either call failed (wrong feature count, ...).
    """
    fast = dense.predict(probe)
    reference = np.asarray(
        booster.inplace_predict(probe, validate_features=False), dtype=np.float64
    ).reshape(-1)
    if fast.shape != reference.shape:
        return FastPathCheck(len(probe), math.inf, False)
    same_nan = np.array_equal(np.isnan(fast), np.isnan(reference))
    finite = ~np.isnan(reference)
    difference = float(np.max(np.abs(fast[finite] - reference[finite]), initial=0.0))
    if not same_nan:
        difference = math.nan
    return FastPathCheck(len(probe), difference, same_nan and difference <= FAST_PATH_TOLERANCE)


def with_checked_fast_path(model: ServingModel, probe: np.ndarray) -> ServingModel:
    """``model`` when its fast path agrees with ``inplace_predict`` on ``probe`` (or it has
    none); else the same model scoring through ``inplace_predict``, with an ERROR log line that
    names the version and the difference.

    Why fall back rather than refuse the model: ``inplace_predict`` is the reference the fast
    path copies, so the model still serves correct scores, only slower; a disagreement is a fault
    of this build (XGBoost is pinned for the C call, pyproject.toml ``[tool.uv]``), not of the
    model, and refusing would stop every version from loading (docs/deploy.md, "Installed size
    of each image's dependency group").

    Raises:
        ModelRefused: either scoring path failed on the probe.
    """
    if model._dense is None:
        return model
    try:
        check = check_fast_path(model.booster, model._dense, probe)
    except (ValueError, xgb.core.XGBoostError) as exc:
        raise ModelRefused(f"fast-path check failed: {type(exc).__name__}: {exc}") from exc
    if check.agrees:
        return model
    log.error(
        "model %s version %s: the C-API fast path disagrees with Booster.inplace_predict on %d "
        "probe rows (max difference %s > %s); scoring through inplace_predict",
        model.name, model.version, check.rows, check.max_difference, FAST_PATH_TOLERANCE,
    )  # fmt: skip
    return dataclasses.replace(model, fast_path=False)


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
    try:
        probe = probe_matrix(model, list(model.input_example) or [example_row(usecase)])
    except (KeyError, ValueError) as exc:
        raise ModelRefused(f"probe rows: {type(exc).__name__}: {exc}") from exc
    model = with_checked_fast_path(model, probe)
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
