"""The gate's latency evidence: both models timed in alternation on the same rows."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from registry_guard.registry import LoadedModel, paired_latency


def _model(version: str, pause: float, calls: list[str]) -> LoadedModel:
    def predict(frame: pd.DataFrame) -> np.ndarray:
        calls.append(version)
        time.sleep(pause)
        return np.zeros(len(frame))

    return LoadedModel(version, None, predict, 1, ("x",))


def test_models_are_timed_in_alternation_and_scaled_to_10k_rows() -> None:
    calls: list[str] = []
    rows = pd.DataFrame({"x": np.arange(1_000.0)})
    slow, fast = _model("2", 0.02, calls), _model("1", 0.0, calls)
    chal, champ = paired_latency(slow, fast, rows, rounds=3)
    assert calls == ["2", "1"] * 3  # one round = challenger then champion, never one side's burst
    assert chal >= 0.02 * 10  # 20 ms for 1,000 rows is at least 0.2 s per 10,000 rows
    assert champ < chal
