"""Measured error rates of the decision rules, shipped with the code and shown with every decision.

The decision-quality harness (``benchmarks/bench_decisions.py --write``, ``docs/decisions.md``)
simulates each decision rule on the real data of the built-in use cases and writes what it measured
into :data:`MEASURED_PATH` (``registry_guard/measured_error_rates.json``, package data of the
wheel). Shape::

    {"schema": 1,
     "usecases": {"<use case>": {"<section>": {
         "policy": {"confidence": 0.95, "n_resamples": 1000,
                    "classification.non_inferiority_margin": 0.01, ...},
         "command": "uv run python benchmarks/bench_decisions.py --write",
         "date": "2026-12-03T05:40:00+00:00",
         "replicas_per_week": 20, "weeks": [...],
         "sentences": ["this gate rule promotes a model worse by the margin ... in 1.7% [...] ..."],
         "rates": {"<name>": {"k": 1, "n": 60, "rate": ..., "ci_low": ..., "ci_high": ...,
                               "confidence": 0.95, "sentence": "..."}}, ...}}}}

Sections: ``gate`` (:mod:`simulation.gate`); ``guard`` and ``trigger`` are written by their own
simulations in the same shape. The figures hold only for the policy they were measured with:
:func:`measured_rates` returns them when every recorded policy field equals the loaded policy's,
and otherwise says which field differs and how to measure again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from registry_guard.policy import GatePolicy

log = logging.getLogger(__name__)

#: The committed measurements (package data).
MEASURED_PATH = Path(__file__).with_name("measured_error_rates.json")
#: Section names.
GATE_SECTION = "gate"
GUARD_SECTION = "guard"
TRIGGER_SECTION = "trigger"
#: How to measure again.
RERUN = "uv run python benchmarks/bench_decisions.py --write"
SCHEMA = 1
#: Shared gate fields the error rates depend on (latency and size checks are not simulated; the
#: bootstrap seed changes a decision only within the simulation's noise).
_SHARED_FIELDS = ("confidence", "n_resamples")


def policy_fields(policy: GatePolicy, task: str) -> dict[str, Any]:
    """The policy fields a task's error rates depend on, flattened: ``confidence``,
    ``n_resamples`` and every field of the task's section as ``<section>.<field>``."""
    section = "regression" if str(task) == "regression" else "classification"
    shared = {name: getattr(policy, name) for name in _SHARED_FIELDS}
    task_fields = policy.for_task(task).model_dump()
    return {**shared, **{f"{section}.{k}": v for k, v in task_fields.items()}}


def read_measured(path: Path | None = None) -> dict[str, Any]:
    """The whole measurement file (an empty one when the file does not exist).

    Raises:
        ValueError: the file is not JSON or has another schema.
    """
    path = MEASURED_PATH if path is None else path
    if not path.exists():
        return {"schema": SCHEMA, "usecases": {}}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a measured-error-rates file of schema {SCHEMA}")
    return data


def write_section(
    usecase: str, section: str, entry: dict[str, Any], path: Path | None = None
) -> None:
    """Store ``entry`` (it must hold ``policy``, ``command``, ``date`` and ``rates``) as the
    ``section`` of ``usecase``, keeping every other entry of the file.

    Raises:
        ValueError: ``entry`` lacks a required key.
    """
    missing = [k for k in ("policy", "command", "date", "rates") if k not in entry]
    if missing:
        raise ValueError(f"a measured entry needs {missing}")
    path = MEASURED_PATH if path is None else path
    data = read_measured(path)
    data.setdefault("usecases", {}).setdefault(usecase, {})[section] = entry
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _difference(measured: dict[str, Any], loaded: dict[str, Any]) -> str | None:
    """The first field whose value differs, in words, or None when all are equal."""
    for name in sorted(set(measured) | set(loaded)):
        if measured.get(name) != loaded.get(name):
            return f"{name} differs (measured {measured.get(name)!r}, loaded {loaded.get(name)!r})"
    return None


class _Entry(BaseModel):
    """The fields every stored section must have (others are kept as they are)."""

    model_config = ConfigDict(extra="allow")

    policy: dict[str, Any]
    command: str
    date: str
    rates: dict[str, Any]


_FILE = TypeAdapter(dict[str, dict[str, _Entry]])


def _entry(data: dict[str, Any], usecase: str, section: str) -> dict[str, Any] | None:
    """The stored ``section`` of ``usecase`` (validated), or None when there is none.

    Raises:
        pydantic.ValidationError: the file's ``usecases`` mapping has the wrong shape.
    """
    usecases = _FILE.validate_python(data.get("usecases", {}))
    entry = usecases.get(usecase, {}).get(section)
    return None if entry is None else entry.model_dump()


def measured_rates(
    usecase: str, section: str, fields: dict[str, Any], path: Path | None = None
) -> dict[str, Any]:
    """The measured error rates of ``usecase``'s ``section`` for a rule with ``fields``.

    Returns:
        ``{"status": "measured", "sentences", "rates", "command", "date", ...}`` when the recorded
        policy equals ``fields``; else ``{"status": "not_measured", "reason": "not measured for
        this policy: <field> differs (...); rerun `...`"}`` (also when nothing was measured, and
        when the file cannot be read or has the wrong shape: never an exception, since a gate
        decision must not depend on it).
    """
    try:
        entry = _entry(read_measured(path), usecase, section)
    except (OSError, ValueError, ValidationError) as exc:
        # The figures are reported, never judged: a damaged file must not stop a gate decision.
        log.warning("measured error rates unreadable: %s", exc)
        where = MEASURED_PATH if path is None else path
        return {
            "status": "not_measured",
            "reason": f"measured error rates unreadable ({where}: {type(exc).__name__}); "
            f"rerun `{RERUN}`",
        }
    if entry is None:
        return {
            "status": "not_measured",
            "reason": f"not measured for use case {usecase!r} ({section}); rerun `{RERUN}`",
        }
    differs = _difference(entry["policy"], fields)
    if differs is not None:
        return {
            "status": "not_measured",
            "reason": f"not measured for this policy: {differs}; rerun `{RERUN}`",
        }
    return {"status": "measured", **{k: v for k, v in entry.items() if k != "section"}}


def gate_error_rates(
    usecase: str, policy: GatePolicy, task: str, path: Path | None = None
) -> dict[str, Any]:
    """The gate section of :func:`measured_rates` for ``policy`` on a ``task`` use case."""
    return measured_rates(usecase, GATE_SECTION, policy_fields(policy, task), path)
