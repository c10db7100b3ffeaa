"""Scoring a dense float32 matrix through XGBoost's C API with little per-call overhead.

Why this exists: for one row, ``Booster.inplace_predict`` of xgboost 3.2 costs 270-415
microseconds per call on the reference machine (2 cores; ``benchmarks/bench_api.py`` prints it),
of which the C call itself is about 50. The rest is the Python wrapper: it passes no proxy DMatrix, so the C library creates one per call, and its new
context reads the cgroup CPU quota (``/sys/fs/cgroup/cpu.max`` or ``cpu.cfs_quota_us`` and
``cpu.cfs_period_us``: three ``stat`` and two ``open``/``read`` system calls per prediction); and
it builds a class per call to wrap the output (``xgboost._data_utils.from_array_interface``).

:class:`DensePredictor` makes the same C call the wrapper makes, ``XGBoosterPredictFromDense``
(documented in xgboost's ``include/xgboost/c_api.h``), with a proxy DMatrix created once per
thread (so the quota is read once per thread), a constant JSON config, and a plain copy of the
output buffer. The scores are bit-identical to ``inplace_predict`` (a unit test checks this on
real feature rows). When the library lacks a symbol, :func:`dense_predictor` returns None and the
caller uses ``inplace_predict``.

Thread safety: XGBoost's prediction is thread-safe for a booster that is not being trained; its
output buffer is thread-local in the library, and it is copied before this call returns. Each
thread gets its own proxy DMatrix (a ``threading.local``), freed when the thread ends.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from typing import Any

import numpy as np
import xgboost as xgb

log = logging.getLogger("rollguard.api.model")

# Arguments of XGBoosterPredictFromDense (c_api.h): type 0 = probability ("value"), no training,
# all trees, missing = NaN (the API refuses NaN input, so it never applies), cache_id 0 = none.
_CONFIG = json.dumps(
    {
        "type": 0,
        "training": False,
        "iteration_begin": 0,
        "iteration_end": 0,
        "missing": float("nan"),
        "strict_shape": False,
        "cache_id": 0,
    }
).encode()


class _Proxy:
    """One proxy DMatrix handle (``XGProxyDMatrixCreate``), freed with ``XGDMatrixFree``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self.handle = ctypes.c_void_p()
        if lib.XGProxyDMatrixCreate(ctypes.byref(self.handle)) != 0:
            raise RuntimeError(lib.XGBGetLastError().decode())

    def __del__(self) -> None:
        if self.handle:
            self._lib.XGDMatrixFree(self.handle)
            self.handle = ctypes.c_void_p()


class DensePredictor:
    """Probabilities of a booster for C-contiguous float32 matrices.

    Args:
        booster: a loaded booster; it must not be trained or reconfigured while this scores.
        lib: the XGBoost shared library (``xgboost.core._LIB``).

    Raises:
        AttributeError: the library lacks ``XGBoosterPredictFromDense`` or the proxy functions.
    """

    def __init__(self, booster: xgb.Booster, lib: ctypes.CDLL) -> None:
        self._booster = booster  # keeps the handle alive
        self._handle = booster.handle
        self._lib = lib
        self._call = lib.XGBoosterPredictFromDense
        self._call.restype = ctypes.c_int
        for name in ("XGProxyDMatrixCreate", "XGDMatrixFree", "XGBGetLastError"):
            getattr(lib, name)
        lib.XGBGetLastError.restype = ctypes.c_char_p
        self._local = threading.local()

    def _proxy(self) -> ctypes.c_void_p:
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            proxy = self._local.proxy = _Proxy(self._lib)
        return proxy.handle

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of ``matrix`` (shape (n_rows, n_features), any dtype/layout; converted to
        C-contiguous float32 when needed), shape (n_rows,), float64.

        Raises:
            xgboost.core.XGBoostError: the library refused the call (wrong feature count, ...).
        """
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"expected a 2-d matrix, got shape {x.shape}")
        n_rows, n_cols = x.shape
        if n_rows == 0:
            return np.zeros(0, dtype=np.float64)
        interface = (
            f'{{"data":[{x.ctypes.data},true],"shape":[{n_rows},{n_cols}],'
            f'"strides":null,"typestr":"<f4","version":3}}'
        ).encode()
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        out = ctypes.POINTER(ctypes.c_float)()
        rc = self._call(
            self._handle,
            interface,
            _CONFIG,
            self._proxy(),
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(out),
        )
        if rc != 0:
            raise xgb.core.XGBoostError(self._lib.XGBGetLastError().decode())
        size = 1
        for i in range(dims.value):
            size *= int(shape[i])
        if size != n_rows:
            raise xgb.core.XGBoostError(
                f"expected {n_rows} scores, the library returned {size} (multi-output model?)"
            )
        # The buffer belongs to the library (thread-local, reused by the next call): copy it.
        return np.ctypeslib.as_array(out, shape=(size,)).astype(np.float64)


def dense_predictor(booster: xgb.Booster) -> DensePredictor | None:
    """A :class:`DensePredictor` for ``booster``, or None when this XGBoost build lacks the C
    functions it needs (the caller then uses ``Booster.inplace_predict``)."""
    lib: Any = getattr(xgb.core, "_LIB", None)
    if lib is None:
        return None
    try:
        return DensePredictor(booster, lib)
    except AttributeError as exc:  # pragma: no cover - depends on the installed xgboost
        log.warning("fast scoring unavailable, using Booster.inplace_predict: %s", exc)
        return None
