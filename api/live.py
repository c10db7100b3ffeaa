"""Live signals of the model server, per serving version (docs/design.md, "Live signals";
docs/api.md, "Live signals").

Every row a version scores on ``POST /v1/predict`` and on the entity route is observed: its score
goes into a cumulative histogram (``rollguard_live_score``), and its score bin and feature bins go
into a count window of the version's last ``window_rows`` rows. At scrape time the window gives the
score PSI against the version's score reference, and per feature the PSI against its training
profile, the missing share and the out-of-range share (tags ``rollguard.live.score_reference`` and
``rollguard.live.training_profile``, :mod:`domain.live_profile`). No figure is exported before the
window holds ``min_rows`` rows. At most :data:`MAX_VERSIONS` versions are kept (the ones that
scored most recently); an older one is dropped with its series.

Per request the work is one copy of the request's matrix and scores into the version's ring
buffers under one lock (a slice assignment, whatever the number of rows). Binning (one
``searchsorted`` per feature over the whole window), shares and PSI are computed when Prometheus
scrapes; the histogram counts the window's scores in batches, before the ring would overwrite rows
it has not counted, or at a scrape. ``benchmarks/bench_api.py --live-only`` measures the cost
against the route without live signals. Observation never fails a request: an error is logged
(once per version and kind) and counted in ``rollguard_live_errors_total``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.model import Row, ServingModel, Unseen
from domain.live_profile import (
    SCORE_REFERENCE_TAG,
    TRAINING_PROFILE_TAG,
    FeatureProfile,
    LiveProfileError,
    ScoreReference,
    TrainingProfile,
)
from domain.metrics import psi_from_shares
from rollguard.usecase import UseCase

log = logging.getLogger("rollguard.api")

#: Versions kept at once (the ones that scored most recently).
MAX_VERSIONS = 3
#: Regression: equal-width histogram buckets over the label's declared range.
REGRESSION_BUCKETS = 20
#: Classification: histogram bucket width on [0, 1].
CLASSIFICATION_BUCKET_WIDTH = 0.05

_SCORE_HELP = (
    "Scores of the rows this version scored (probability, or the prediction in the label's "
    "unit), cumulative since the process started."
)
_HELP = {
    "window_rows": "Rows in the version's live window (the last N rows it scored).",
    "score_psi": "PSI of the live window's scores against the version's score reference "
    "(decile bins of the reference); only when the window holds the minimum rows.",
    "reference_info": "1: the score reference the version's live PSI compares with; source is "
    "'gated' (its own gate-time scores) or 'replaced' (it reached champion without the gate: "
    "the reference of the champion it replaced, reference_version).",
    "feature_psi": "PSI of the live window's feature values against the version's training "
    "profile (training decile bins plus a missing bin; categorical: training levels plus unseen "
    "and missing bins).",
    "feature_missing_share": "Share of the live window's rows where the feature is missing.",
    "feature_out_of_range_share": "Share of the live window's rows where the feature is outside "
    "the training [min, max] (numeric) or a level the model does not know (categorical).",
}


# --- what a version's tags give ---------------------------------------------------------------------
@dataclass(frozen=True)
class LiveReferences:
    """The score reference and training profile read from a version's tags.

    Attributes:
        reference: the parsed score reference, or None (no tag, or a malformed one).
        profile: the parsed training profile, or None.
        notes: one sentence per part that is missing or malformed (what is not exported, why).
    """

    reference: ScoreReference | None
    profile: TrainingProfile | None
    notes: tuple[str, ...]


def read_references(tags: Mapping[str, str]) -> LiveReferences:
    """Parse the live tags of a version; never raises (a bad tag becomes a note)."""
    notes: list[str] = []
    reference: ScoreReference | None = None
    profile: TrainingProfile | None = None
    text = tags.get(SCORE_REFERENCE_TAG)
    if text is None:
        notes.append(f"no {SCORE_REFERENCE_TAG} tag: no live score PSI for this version")
    else:
        try:
            reference = ScoreReference.from_json(text)
        except LiveProfileError as exc:
            notes.append(f"malformed score reference, no live score PSI: {exc}")
    text = tags.get(TRAINING_PROFILE_TAG)
    if text is None:
        notes.append(f"no {TRAINING_PROFILE_TAG} tag: no live feature figures for this version")
    else:
        try:
            profile = TrainingProfile.from_json(text)
        except LiveProfileError as exc:
            notes.append(f"malformed training profile, no live feature figures: {exc}")
    return LiveReferences(reference, profile, tuple(notes))


def score_buckets(usecase: UseCase, reference: ScoreReference | None) -> tuple[float, ...]:
    """Upper bounds of the ``rollguard_live_score`` buckets (``+Inf`` not included).

    Classification: 0.05, 0.10, ..., 1.0. Regression: the label's declared minimum, then
    :data:`REGRESSION_BUCKETS` equal-width buckets up to its maximum (so a prediction below the
    minimum has a bucket of its own, one above the maximum falls in ``+Inf``). A regression label
    without both bounds: the same over the reference's outer deciles widened by half their
    distance on each side; without a usable reference either, no bound (count and sum only).
    """
    if usecase.is_classification:
        n = round(1.0 / CLASSIFICATION_BUCKET_WIDTH)
        return tuple(round(k * CLASSIFICATION_BUCKET_WIDTH, 10) for k in range(1, n + 1))
    low, high = usecase.label.minimum, usecase.label.maximum
    if low is None or high is None:
        if reference is None or len(reference.edges) < 2:
            return ()
        span = reference.edges[-1] - reference.edges[0]
        low, high = reference.edges[0] - span / 2, reference.edges[-1] + span / 2
    return tuple(float(v) for v in np.linspace(low, high, REGRESSION_BUCKETS + 1))


# --- how one version's rows are binned --------------------------------------------------------------
#: Stored in a window's categorical column for a level the model does not know (the request matrix
#: holds NaN there, as for a missing value; model codes are >= 0).
UNSEEN_CODE = -1.0


@dataclass(frozen=True)
class _Categorical:
    column: int
    lookup: np.ndarray  # model code -> profile bin; the last entry is the missing bin
    unseen_bin: int


@dataclass(frozen=True)
class _Plan:
    """How one version's window is binned (built once per version and model object): the bins of
    :meth:`domain.live_profile.FeatureProfile.bin_codes` and ``level_bins``, with edges and bounds
    in float32, the precision the model scores."""

    reference: ScoreReference | None
    reference_edges: np.ndarray
    features: tuple[tuple[int, FeatureProfile], ...]  # (matrix column, profile) with figures
    n_features: int
    numeric: tuple[tuple[int, np.ndarray], ...]  # (matrix column, float32 inner edges)
    missing_bins: np.ndarray
    minimum: np.ndarray  # NaN: never out of range
    maximum: np.ndarray
    categorical: tuple[_Categorical, ...]
    column_of: Mapping[str, int]
    buckets: np.ndarray

    @classmethod
    def build(
        cls, model: ServingModel, refs: LiveReferences, usecase: UseCase
    ) -> tuple[_Plan, list[str]]:
        """The plan of ``model`` and notes on profiled features it cannot use."""
        names = model.feature_names
        n = len(names)
        profile = refs.profile
        notes: list[str] = []
        # float32, as the request matrix: a value equal to an edge or bound in the training
        # frame (float64) stays equal to it, so it lands in the training bin, and a value equal
        # to the training maximum is not out of range.
        numeric: list[tuple[int, np.ndarray]] = []
        missing = np.zeros(n, dtype=np.intp)
        low = np.full(n, np.nan, dtype=np.float32)
        high = np.full(n, np.nan, dtype=np.float32)
        features: list[tuple[int, FeatureProfile]] = []
        categorical: list[_Categorical] = []
        model_levels: Mapping[str, tuple[str, ...]] = model.categories or {}
        for j, name in enumerate(names):
            fp = profile.feature(name) if profile else None
            if fp is None:
                if profile is not None:
                    notes.append(f"feature {name!r} has no training profile")
                continue
            if (fp.kind == "categorical") != (name in model_levels):
                notes.append(f"feature {name!r} is {fp.kind} in the profile, not in the model")
                continue
            features.append((j, fp))
            missing[j] = fp.missing_bin
            if fp.kind == "categorical":
                lookup = fp.level_bins(model_levels[name])
                categorical.append(_Categorical(j, lookup, len(fp.levels)))
            else:
                numeric.append((j, np.asarray(fp.edges, dtype=np.float32)))
                if fp.minimum is not None and fp.maximum is not None:
                    low[j], high[j] = fp.minimum, fp.maximum
        reference = refs.reference
        plan = cls(
            reference=reference,
            reference_edges=np.asarray(reference.edges if reference else (), dtype=np.float64),
            features=tuple(features),
            n_features=n,
            numeric=tuple(numeric),
            missing_bins=missing,
            minimum=low,
            maximum=high,
            categorical=tuple(categorical),
            column_of={name: j for j, name in enumerate(names)},
            buckets=np.asarray(score_buckets(usecase, reference), dtype=np.float64),
        )
        return plan, notes

    def bin_window(
        self, matrix: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bins of a window: one ``searchsorted`` per numeric feature, one lookup per
        categorical feature (no loop over rows).

        Args:
            matrix: ``(n, n_features)`` float32 rows as :meth:`api.model.ServingModel.encode`
                made them (categorical columns hold model codes, NaN = missing), except that a
                level the model does not know holds :data:`UNSEEN_CODE`.
            scores: ``(n,)`` their scores.

        Returns:
            ``(score_codes (n,), feature_codes (n_features, n), out_of_range (n_features, n))``
            (feature-major: one row per feature).
        """
        columns = np.ascontiguousarray(matrix.T)
        nan = np.isnan(columns)
        codes = np.zeros(columns.shape, dtype=np.intp)
        for j, edges in self.numeric:
            codes[j] = np.searchsorted(edges, columns[j], side="right")
        codes = np.where(nan, self.missing_bins[:, None], codes)
        out = (columns < self.minimum[:, None]) | (columns > self.maximum[:, None])  # NaN: False
        for cat in self.categorical:
            column = columns[cat.column]
            unseen = column == UNSEEN_CODE
            index = np.where(nan[cat.column] | unseen, len(cat.lookup) - 1, column)
            codes[cat.column] = np.where(unseen, cat.unseen_bin, cat.lookup[index.astype(np.intp)])
            out[cat.column] = unseen
        return np.searchsorted(self.reference_edges, scores, side="right"), codes, out

    def bucket_counts(self, scores: np.ndarray) -> np.ndarray:
        """Histogram bucket counts of ``scores`` (not cumulative; ``+Inf`` last)."""
        bucket = np.searchsorted(self.buckets, scores, side="left")
        return np.bincount(bucket, minlength=len(self.buckets) + 1)


# --- one version's window and histogram -------------------------------------------------------------
@dataclass
class _Series:
    """The live state of one version: its plan, the window (rows and scores, rings) and the
    histogram. A request only copies its rows into the rings; binning waits for a scrape, and
    the histogram takes rows in batches (before the ring overwrites rows it has not counted, or
    at a scrape). Every method is called under the monitor's lock."""

    version: str
    plan: _Plan
    refs: LiveReferences
    model_id: int
    window: int
    matrix: np.ndarray = field(init=False)
    scores: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    score_sum: float = 0.0
    rows: int = 0  # rows in the window
    position: int = 0  # next ring slot
    pending: int = 0  # rows before ``position`` not yet in the histogram

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.window, self.plan.n_features), dtype=np.float32)
        self.scores = np.zeros(self.window, dtype=np.float64)
        self.counts = np.zeros(len(self.plan.buckets) + 1, dtype=np.int64)

    def _count(self, scores: np.ndarray) -> None:
        if len(scores):
            self.counts += self.plan.bucket_counts(scores)
            self.score_sum += float(scores.sum())

    def fold(self) -> None:
        """Put the pending rows into the histogram."""
        start = self.position - self.pending
        if start >= 0:
            self._count(self.scores[start : self.position])
        else:
            self._count(self.scores[start:])
            self._count(self.scores[: self.position])
        self.pending = 0

    def record(self, matrix: np.ndarray, scores: np.ndarray) -> int:
        """Copy one request's rows into the window; returns the ring slot of its row 0 (rows
        before the last ``window`` ones are counted in the histogram and not kept: -1)."""
        n, w = len(scores), self.window
        if n >= w:
            self.fold()
            self._count(scores[: n - w])
            self.matrix[:], self.scores[:] = matrix[n - w :], scores[n - w :]
            self.position, self.rows, self.pending = 0, w, w
            return -(n - w)
        if self.pending + n > w:
            self.fold()
        start, end = self.position, self.position + n
        if end <= w:
            self.matrix[start:end], self.scores[start:end] = matrix, scores
        else:
            k = w - start
            self.matrix[start:], self.matrix[: n - k] = matrix[:k], matrix[k:]
            self.scores[start:], self.scores[: n - k] = scores[:k], scores[k:]
        self.position = end % w
        self.rows = min(self.rows + n, w)
        self.pending += n
        return start

    def mark_unseen(self, start: int, unseen: Sequence[Unseen], rows: Sequence[Row]) -> None:
        """Mark the request's values the model does not know (not the missing ones) in the
        window, from ``start`` (:meth:`record`)."""
        categorical = {c.column for c in self.plan.categorical}
        for i, name, _ in unseen:
            j = self.plan.column_of.get(name)
            if j in categorical and start + i >= 0 and rows[i].get(name) is not None:
                self.matrix[(start + i) % self.window, j] = UNSEEN_CODE

    def snapshot(self) -> _Snapshot:
        """A copy for a scrape (the histogram brought up to date first)."""
        self.fold()
        n = self.rows
        return _Snapshot(
            version=self.version,
            plan=self.plan,
            rows=n,
            matrix=self.matrix[:n].copy(),
            scores=self.scores[:n].copy(),
            bucket_counts=self.counts.copy(),
            score_sum=self.score_sum,
        )


@dataclass(frozen=True)
class _Snapshot:
    version: str
    plan: _Plan
    rows: int
    matrix: np.ndarray
    scores: np.ndarray
    bucket_counts: np.ndarray
    score_sum: float


@dataclass(frozen=True)
class FeatureFigures:
    """One feature's live figures over a version's window."""

    psi: float
    missing_share: float
    out_of_range_share: float


@dataclass(frozen=True)
class VersionFigures:
    """What a scrape exports for one version.

    Attributes:
        window_rows: rows in the window.
        score_psi: PSI against the score reference (None: no reference, or too few rows).
        features: feature name -> figures (empty: no profile, or too few rows).
        buckets: ``(upper bound, cumulative count)`` pairs, ``+inf`` last.
        score_sum: sum of every score observed.
    """

    window_rows: int
    score_psi: float | None
    features: dict[str, FeatureFigures]
    buckets: list[tuple[float, int]]
    score_sum: float


def figures(snapshot: _Snapshot, min_rows: int, feature_names: Sequence[str]) -> VersionFigures:
    """The exported figures of one version's snapshot (shares and PSI of the window)."""
    plan = snapshot.plan
    cumulative = np.cumsum(snapshot.bucket_counts)
    bounds = [*plan.buckets.tolist(), math.inf]
    buckets = list(zip(bounds, cumulative.tolist(), strict=True))
    n = snapshot.rows
    score_psi = None
    per_feature: dict[str, FeatureFigures] = {}
    if n >= min_rows:
        score_codes, codes, out = plan.bin_window(snapshot.matrix, snapshot.scores)
        if plan.reference is not None:
            shares = np.bincount(score_codes, minlength=len(plan.reference.shares)) / n
            score_psi = psi_from_shares(np.asarray(plan.reference.shares), shares)
        out_shares = out.sum(axis=1) / n
        for j, fp in plan.features:
            counts = np.bincount(codes[j], minlength=len(fp.shares))
            per_feature[feature_names[j]] = FeatureFigures(
                psi=psi_from_shares(np.asarray(fp.shares), counts / n),
                missing_share=float(counts[fp.missing_bin]) / n,
                out_of_range_share=float(out_shares[j]),
            )
    return VersionFigures(n, score_psi, per_feature, buckets, snapshot.score_sum)


# --- the monitor -------------------------------------------------------------------------------------
class LiveMonitor(Collector):
    """Per-version live windows, exported as a Prometheus collector.

    Args:
        usecase: the served use case (task type and label bounds give the histogram buckets).
        window_rows: rows per version's window (``ROLLGUARD_LIVE_WINDOW_ROWS``).
        min_rows: rows the window needs before PSI and shares are exported
            (``ROLLGUARD_LIVE_MIN_ROWS``).
        errors: counter of failed observations (``rollguard_live_errors_total``); None: not counted.
        max_versions: versions kept at once.

    Raises:
        ValueError: ``window_rows < 1``, ``min_rows < 1`` or ``min_rows > window_rows`` (no figure
            would ever be exported).
    """

    def __init__(
        self,
        usecase: UseCase,
        *,
        window_rows: int = 2000,
        min_rows: int = 300,
        errors: Counter | None = None,
        max_versions: int = MAX_VERSIONS,
    ) -> None:
        if window_rows < 1 or min_rows < 1:
            raise ValueError(f"live window ({window_rows}) and minimum ({min_rows}) must be >= 1")
        if min_rows > window_rows:
            raise ValueError(
                f"the live minimum of {min_rows} rows is larger than the live window of "
                f"{window_rows} rows: no live figure would ever be exported "
                "(ROLLGUARD_LIVE_MIN_ROWS <= ROLLGUARD_LIVE_WINDOW_ROWS)"
            )
        self.usecase = usecase
        self.window_rows = window_rows
        self.min_rows = min_rows
        self.max_versions = max_versions
        self._errors = errors
        self._lock = threading.Lock()
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._names: dict[str, tuple[str, ...]] = {}
        self._newest: str | None = None
        self._logged: set[tuple[str, str]] = set()

    # --- request path ---------------------------------------------------------------------------
    def observe(
        self,
        model: ServingModel,
        matrix: np.ndarray,
        scores: np.ndarray,
        unseen: Sequence[Unseen] = (),
        rows: Sequence[Row] = (),
    ) -> None:
        """Add the rows ``model`` just scored. Never raises: an error is logged once per
        version and kind, and counted.

        Args:
            model: the model object that scored them.
            matrix: ``(n, n_features)`` its input (:meth:`api.model.ServingModel.encode`).
            scores: ``(n,)`` its scores.
            unseen: the unseen categories ``encode`` reported.
            rows: the request rows (read only where ``unseen`` points).
        """
        try:
            series = self._series.get(model.version)
            if series is None or series.model_id != id(model):
                series = self._admit(model)
            with self._lock:
                start = series.record(matrix, scores)
                if unseen:
                    series.mark_unseen(start, unseen, rows)
                if self._newest != series.version and series.version in self._series:
                    self._series.move_to_end(series.version)
                    self._newest = series.version
        except Exception as exc:  # noqa: BLE001 - a monitor failure must never fail a request
            if self._errors is not None:
                self._errors.inc()
            self._note_once(model.version, type(exc).__name__, "live signals failed", exc)

    def _admit(self, model: ServingModel) -> _Series:
        """The series of ``model``'s version, created (or rebuilt for a reloaded model object
        with other live tags); evicts the version that scored least recently beyond the limit."""
        with self._lock:
            series = self._series.get(model.version)
            if series is not None and series.model_id == id(model):
                return series
            refs = read_references(model.tags)
            if series is not None and series.refs == refs:
                series.model_id = id(model)
                return series
            plan, notes = _Plan.build(model, refs, self.usecase)
            for note in (*refs.notes, *notes):
                self._note_once(model.version, note, note)
            series = _Series(model.version, plan, refs, id(model), self.window_rows)
            self._series[model.version] = series
            self._series.move_to_end(model.version)
            self._names[model.version] = model.feature_names
            self._newest = model.version
            while len(self._series) > self.max_versions:
                dropped, _ = self._series.popitem(last=False)
                self._names.pop(dropped, None)
                log.info("live signals: dropped version %s (older than the last %d served)",
                         dropped, self.max_versions)  # fmt: skip
            return series

    def _note_once(
        self, version: str, key: str, message: str, exc: Exception | None = None
    ) -> None:
        if (version, key) in self._logged:
            return
        if len(self._logged) > 1000:  # bounded: a long-lived process sees few versions
            self._logged.clear()
        self._logged.add((version, key))
        if exc is not None:
            log.error("version %s: %s: %s", version, message, exc, exc_info=exc)
        else:
            log.warning("live signals of version %s: %s", version, message)

    # --- what is known, for /v1/model -----------------------------------------------------------
    def versions(self) -> list[str]:
        """Versions with a live window, least recently scoring first."""
        with self._lock:
            return list(self._series)

    def rows_in_window(self, version: str) -> int:
        """Rows in ``version``'s window now (0 when it has none)."""
        series = self._series.get(version)
        return series.rows if series is not None else 0

    def version_figures(self, version: str) -> VersionFigures | None:
        """The figures a scrape would export for ``version`` now, or None when it has no window."""
        with self._lock:
            series = self._series.get(version)
            if series is None:
                return None
            snapshot, names = series.snapshot(), self._names[version]
        return figures(snapshot, self.min_rows, names)

    # --- Prometheus -------------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        """The metric families (no samples), so that the registry checks their names."""
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        """Every monitored version's series (see :class:`VersionFigures`)."""
        with self._lock:
            taken = [(s.snapshot(), s.refs, self._names[v]) for v, s in self._series.items()]
        score, rows, psi, info, f_psi, f_missing, f_out = _families()
        for snapshot, refs, names in taken:
            v = snapshot.version
            got = figures(snapshot, self.min_rows, names)
            score.add_metric([v], [(_bound(b), c) for b, c in got.buckets], sum_value=got.score_sum)
            rows.add_metric([v], got.window_rows)
            if refs.reference is not None:
                info.add_metric([v, refs.reference.version, refs.reference.source], 1)
            if got.score_psi is not None:
                psi.add_metric([v], got.score_psi)
            for name, ff in got.features.items():
                f_psi.add_metric([v, name], ff.psi)
                f_missing.add_metric([v, name], ff.missing_share)
                f_out.add_metric([v, name], ff.out_of_range_share)
        yield from (score, rows, psi, info, f_psi, f_missing, f_out)


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def _families() -> tuple[Any, ...]:
    feature = ["version", "feature"]
    return (
        HistogramMetricFamily("rollguard_live_score", _SCORE_HELP, labels=["version"]),
        GaugeMetricFamily("rollguard_live_window_rows", _HELP["window_rows"], labels=["version"]),
        GaugeMetricFamily("rollguard_live_score_psi", _HELP["score_psi"], labels=["version"]),
        GaugeMetricFamily(
            "rollguard_live_reference_info",
            _HELP["reference_info"],
            labels=["version", "reference_version", "source"],
        ),
        GaugeMetricFamily("rollguard_live_feature_psi", _HELP["feature_psi"], labels=feature),
        GaugeMetricFamily(
            "rollguard_live_feature_missing_share", _HELP["feature_missing_share"], labels=feature
        ),
        GaugeMetricFamily(
            "rollguard_live_feature_out_of_range_share",
            _HELP["feature_out_of_range_share"],
            labels=feature,
        ),
    )
