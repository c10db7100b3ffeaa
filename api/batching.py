"""Adaptive micro-batching of concurrent small predict calls (the "dynamic batching" of serving
systems such as NVIDIA Triton and Ray Serve).

One XGBoost prediction call costs about the same for 1 row as for a few dozen (50-140
microseconds here even through :mod:`api.xgb_dense`; ``benchmarks/bench_api.py`` prints it), so
concurrent single-row requests are scored together (at 8 connections, 4 requests per call on
average):
each request appends its rows and awaits a future; the first one schedules a flush on the next
event-loop iteration, which scores every pending matrix *of the same model object* in one call and
hands each request its slice. Nothing waits for a timer: with one request in flight the flush runs
right away; under load, the requests that arrived together are batched. Requests never mix
models, since each one brings the model object it read once.
"""

from __future__ import annotations

import asyncio

import numpy as np

from api.model import NonFiniteScore, ServingModel


class MicroBatcher:
    """Coalesces concurrent :meth:`predict` calls made on one event loop.

    Args:
        max_rows: requests with more rows than this are scored directly (no batching gain).
    """

    def __init__(self, max_rows: int = 64) -> None:
        self.max_rows = max_rows
        self._pending: list[tuple[ServingModel, np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._scheduled = False

    async def predict(self, model: ServingModel, matrix: np.ndarray) -> np.ndarray:
        """Scores of ``matrix`` (shape (n_rows, n_features)) by ``model``, shape (n_rows,).

        Raises:
            NonFiniteScore: a score of *this* request is NaN or infinite.
        """
        if matrix.shape[0] > self.max_rows:
            return model.predict(matrix)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((model, matrix, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, [], False
        groups: dict[int, list[tuple[ServingModel, np.ndarray, asyncio.Future[np.ndarray]]]] = {}
        for item in pending:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            model = items[0][0]
            try:
                matrix = items[0][1] if len(items) == 1 else np.vstack([m for _, m, _ in items])
                scores = model.raw_predict(matrix)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for _, m, future in items:
                part = scores[start : start + m.shape[0]]
                start += m.shape[0]
                if future.done():
                    continue
                if np.isfinite(part).all():
                    future.set_result(part)
                else:
                    future.set_exception(
                        NonFiniteScore(f"model version {model.version} returned a non-finite score")
                    )
