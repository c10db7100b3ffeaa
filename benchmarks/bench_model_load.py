"""Load-time cost of the API's fast-path check and of reading the booster's categories from JSON.

:func:`api.model.load_model_dir` now (1) reads a booster's categorical levels from its JSON model
(:func:`api.model.model_categories`, no pyarrow) and (2) scores a probe batch through the C-API
fast path and through ``Booster.inplace_predict`` and compares them
(:func:`api.model.with_checked_fast_path`). This times both against the whole load of the same
model folder (baseline: ``load_model_dir``, median of ``--repeat`` loads), for the CDNOW test
model (numeric features) at two sizes and the categorical test use case.

Rerun: uv run python benchmarks/bench_model_load.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    from api.model import load_model_dir, model_categories, probe_matrix, with_checked_fast_path
    from tests.support.api_models import (
        CDNOW,
        RATES,
        save_mlflow_model,
        save_rates_model,
        train_booster,
        train_rates_booster,
    )

    cases = [
        ("cdnow, 100 trees", CDNOW, lambda p: save_mlflow_model(train_booster(1, 100), p)),
        ("cdnow, 500 trees", CDNOW, lambda p: save_mlflow_model(train_booster(1, 500), p)),
        ("rates (categorical), 30 trees", RATES, lambda p: save_rates_model(train_rates_booster(), p)),
    ]  # fmt: skip
    print("Load-time cost of the fast-path check and of the JSON category read (median ms)")
    print(
        f"{'model':<30} {'load ms':>8} {'check ms':>9} {'x load':>7} {'cats ms':>8} {'x load':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="rollguard-load-") as tmp:
        for i, (label, usecase, save) in enumerate(cases):
            folder = save(Path(tmp) / f"m{i}")
            model = load_model_dir(folder, name=usecase.model_name, version="1", usecase=usecase)
            rows = list(model.input_example)
            load = _median_ms(
                lambda f=folder, u=usecase: load_model_dir(f, name="m", version="1", usecase=u),
                args.repeat,
            )
            check = _median_ms(
                lambda m=model, r=rows: with_checked_fast_path(m, probe_matrix(m, r)),
                args.repeat,
            )
            cats = _median_ms(lambda m=model: model_categories(m.booster), args.repeat)
            print(
                f"{label:<30} {load:>8.1f} {check:>9.2f} {check / load:>7.3f} "
                f"{cats:>8.2f} {cats / load:>7.3f}"
            )
    print("\nrerun: uv run python benchmarks/bench_model_load.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
