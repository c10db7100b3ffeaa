"""Decision quality: how often the gate, the guard and the retrain trigger decide wrongly.

Runs the harness of the ``simulation`` package on the real data of each built-in use case and
prints, per use case and part, the exact set-up, the table of measured rates (exact binomial 95%
intervals), the documented bounds each rate is held to (violations are listed), the run time and the
rerun command. The method and the figures are in ``docs/decisions.md``.

Parts:
  gate     challengers with a known true difference from the champion (A/A, degraded at 1x, 2x
           and 5x the margin, truly better), resampled real evaluation weeks -> false promotion,
           power, interval coverage, "not enough evidence" rejects (simulation/gate.py)
  guard    healthy champions over real weeks (false rollbacks per week) and broken champions of
           four kinds (weeks to detect and roll back) (simulation/guard.py)
  trigger  every retrain trigger replayed over the history: fires, retrains the gate shows
           better, false triggers (simulation/trigger.py)

Sizes: the default is the full run behind docs/decisions.md; ``--quick`` is the size the tests use.

``--write`` stores the figures where the product reads them (``registry_guard/
measured_error_rates.json``: every gate report quotes its policy's measured rates); the tables
printed are the ones ``docs/decisions.md`` holds.

A team's own policy file is measured with ``--policy PATH`` (or ROLLGUARD_GATE_POLICY_PATH); its
``--write`` records that policy's fields, so its gate decisions then quote its own rates.

Rerun: uv run python benchmarks/bench_decisions.py [--usecase cdnow|hotel] [--part gate|guard|trigger]
       [--policy PATH] [--quick] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry_guard import measured  # noqa: E402
from registry_guard.policy import load_guard_policy, load_policy  # noqa: E402
from rollguard.settings import Settings  # noqa: E402
from simulation.gate import simulate_gate  # noqa: E402
from simulation.guard import simulate_guard  # noqa: E402
from simulation.replay import Replay  # noqa: E402
from simulation.trigger import first_week, simulate_triggers  # noqa: E402

USECASES = ("cdnow", "hotel")
PARTS = ("gate", "guard", "trigger")


class Result(Protocol):
    def table(self) -> str: ...
    def record(self) -> dict[str, Any]: ...
    def check_bounds(self) -> list[str]: ...


#: Sizes of the full run behind docs/decisions.md, and of the tests (``--quick``).
FULL = {
    "gate": {"cdnow": dict(replicas=20, weeks=3), "hotel": dict(replicas=100, weeks=3)},
    "guard": {
        "cdnow": dict(promotions=5, weeks_after=5, resamples=1),
        "hotel": dict(promotions=8, weeks_after=6, resamples=4),
    },
    "trigger": {"cdnow": {}, "hotel": {}},
}
QUICK = {
    "gate": {
        "cdnow": dict(replicas=10, weeks=1, scenarios=("margin", "better")),
        "hotel": dict(replicas=20, weeks=3),
    },
    "guard": {
        "cdnow": dict(promotions=1, weeks_after=4, resamples=1),
        "hotel": dict(promotions=3, weeks_after=4, resamples=2),
    },
    "trigger": {"cdnow": {"weeks": (5, 7)}, "hotel": {"weeks": (0, 8)}},
}
GATE_SEED, GUARD_SEED, TRIGGER_SEED = 20261203, 20261203, 0


def _trigger_window(replay: Replay, offset_and_length: tuple[int, int] | None) -> dict[str, str]:
    """``start_week``/``end_week`` of the quick trigger replay (the tests' window), or {}."""
    if offset_and_length is None:
        return {}
    offset, length = offset_and_length
    first = replay.weeks.index(first_week(replay)) + offset
    return {"start_week": replay.weeks[first], "end_week": replay.weeks[first + length]}


def _runners(quick: bool, policy_path: Path | None) -> dict[str, Callable[[Replay], Result]]:
    policy, guard_policy = load_policy(policy_path), load_guard_policy(policy_path)
    sizes = QUICK if quick else FULL

    def trigger(replay: Replay) -> Result:
        window = _trigger_window(replay, sizes["trigger"][replay.usecase_name].get("weeks"))
        return simulate_triggers(replay, policy, seed=TRIGGER_SEED, **window)

    return {
        "gate": lambda replay: simulate_gate(
            replay, policy, seed=GATE_SEED, **sizes["gate"][replay.usecase_name]
        ),
        "guard": lambda replay: simulate_guard(
            replay, policy, guard_policy, seed=GUARD_SEED, **sizes["guard"][replay.usecase_name]
        ),
        "trigger": trigger,
    }


def _entry(
    part: str, result: Any, command: str, usecase: str, policy_path: Path | None
) -> dict[str, Any]:
    """The :mod:`registry_guard.measured` entry of one part's result."""
    if part == "gate":
        return result.measured_entry(command)
    fields = measured.policy_fields(load_policy(policy_path), Replay(usecase).usecase.task.value)
    if part == "guard":
        guard = load_guard_policy(policy_path).model_dump()
        fields |= {f"guard.{k}": v for k, v in guard.items()}
    return {
        "section": part,
        "policy": fields,
        "command": command,
        "date": date.today().isoformat(),
        "rates": result.record(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usecase", choices=USECASES, action="append")
    parser.add_argument("--part", choices=PARTS, action="append")
    parser.add_argument("--quick", action="store_true", help="the tests' sizes (minutes)")
    parser.add_argument(
        "--policy",
        type=Path,
        default=Settings().gate_policy_path,
        help="gate and guard policy file to measure (default: ROLLGUARD_GATE_POLICY_PATH, "
        "else the shipped one)",
    )
    parser.add_argument(
        "--write", action="store_true", help="store the figures in measured_error_rates.json"
    )
    args = parser.parse_args()
    if args.write and args.quick:
        parser.error("--write stores the figures every gate decision quotes: not at --quick sizes")
    usecases, parts = args.usecase or list(USECASES), args.part or list(PARTS)
    runners = _runners(args.quick, args.policy)
    command = "uv run python benchmarks/bench_decisions.py " + " ".join(sys.argv[1:])
    violations: list[str] = []
    timings: list[tuple[str, str, float]] = []
    started = time.perf_counter()
    for name in usecases:
        replay = Replay(name)
        for part in parts:
            t0 = time.perf_counter()
            result = runners[part](replay)
            seconds = time.perf_counter() - t0
            timings.append((name, part, seconds))
            broken = result.check_bounds()
            violations += [f"{name} {part}: {v}" for v in broken]
            print(f"\n## {name}: {part} ({seconds:,.0f} s)\n")
            print(result.table())
            print("\nbounds: " + ("all held" if not broken else "VIOLATED: " + "; ".join(broken)))
            if args.write:
                measured.write_section(name, part, _entry(part, result, command, name, args.policy))
    total = time.perf_counter() - started
    print("\nrun time")
    print(f"{'use case':<8} {'part':<8} {'seconds':>8}")
    for name, part, seconds in timings:
        print(f"{name:<8} {part:<8} {seconds:>8.0f}")
    print(f"{'total':<17} {total:>8.0f}")
    if args.write:
        print(f"wrote {measured.MEASURED_PATH.relative_to(ROOT)}")
    print(f"rerun: {command}")
    if violations:
        print("bounds violated:\n  " + "\n  ".join(violations))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
