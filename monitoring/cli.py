"""``rollguard monitor --week W``: recompute one week's monitoring figures and print them.

Monitoring sits below ``registry_guard``, so the CLI assembly (``rollguard/cli.py``) hands this
module what it may not import: the live-quality rule of the configured policies and a model loader.
The shared command helpers are core (:mod:`rollguard.commands`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Annotated, Any

import typer

from domain.warehouse import ingested_weeks
from monitoring.compute import LiveQualityRule
from monitoring.weekly import (
    ModelLoader,
    monitor_week,
    open_inputs,
    parse_week,
    serving_version_at,
)
from rollguard.commands import emit, reports_errors, settings
from rollguard.settings import Settings
from rollguard.weeks import iso_week_label, parse_iso_week


def register(
    app: typer.Typer,
    *,
    rule: Callable[[Settings], LiveQualityRule],
    load_model: Callable[[Settings], ModelLoader],
) -> None:
    """Add the ``monitor`` command to the ``rollguard`` CLI.

    Args:
        app: the ``rollguard`` Typer app.
        rule: the live-quality rule of the configured gate and guard policies.
        load_model: a model loader on the configured registry.
    """

    @app.command("monitor")
    @reports_errors
    def monitor(
        week: Annotated[
            str,
            typer.Option(
                "--week",
                help="The week: its cutoff YYYY-MM-DD (a Monday) or ISO week YYYY-Www (its Monday).",
            ),
        ],
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    ) -> None:
        """Recompute one week: data and score drift, realized quality and business KPIs (pending
        until its label matured); store the rows, HTML reports and the MLflow run."""
        current = settings()
        cutoff = parse_week(week)
        inputs = open_inputs(current, rule=rule(current), load_model=load_model(current))
        result = monitor_week(current, cutoff, inputs=inputs)
        result["missing_steps"] = missing_steps(current, cutoff, result)
        emit(result, as_json, human)


def missing_steps(current: Settings, cutoff: date, result: dict[str, Any]) -> list[str]:
    """What must run before the empty parts of week ``cutoff`` can show figures, each naming the
    step: no champion (train and gate one), no batch predictions (``rollguard score``), a label
    that has not matured (ingest the weeks it needs). Empty when nothing is missing."""
    week = iso_week_label(cutoff)
    if result.get("model_version") is None:
        return [
            f"no champion of {current.model_name} and no batch predictions for cutoff "
            f"{cutoff.isoformat()}: score drift, live quality and KPIs of {week} stay empty; "
            "train and gate a champion (`rollguard train`, then `rollguard gate`, or the weekly "
            f"DAG), then run `rollguard score --week {week}` and this command again"
        ]
    if serving_version_at(current, cutoff) is None:
        return [
            f"no batch predictions for cutoff {cutoff.isoformat()}: score drift, live quality and "
            f"KPIs of {week} need them; run `rollguard score --week {week}` (or the weekly DAG), "
            f"then `rollguard monitor --week {week}` again"
        ]
    if any(f.get("state") == "pending" for f in result.get("figures", [])):
        have = set(ingested_weeks(current))
        needed = [w for w in current.usecase_spec.label_weeks(cutoff) if w not in have]
        if needed:
            span = needed[0] if len(needed) == 1 else f"{needed[0]} .. {needed[-1]}"
            return [
                f"live quality and KPIs of {week} are pending until its label matures: week(s) "
                f"{span} not ingested yet; deliver and ingest them (`rollguard data replay "
                f"--until {parse_iso_week(needed[-1]) + timedelta(days=6)}`, `rollguard data "
                f"ingest`, or the weekly DAG), then `rollguard monitor --week {week}` again"
            ]
    return []


def human(result: dict[str, Any]) -> str:
    """The readable form of :func:`monitoring.weekly.monitor_week`'s result."""
    lines = [f"week {result['week']}  model {result['model_name']} v{result.get('model_version')}"]
    lines += [f"  warning: {w}" for w in result.get("warnings", [])]
    lines += [f"  missing step: {step}" for step in result.get("missing_steps", [])]
    for f in result["figures"]:
        value = f.get("value")
        text = "-" if value is None else f"{value:.6g}"
        name = f"{f['kind']}/{f['metric']}" + (f"/{f['feature']}" if f.get("feature") else "")
        extra = (
            f"  ({f['detail']})" if f.get("state") not in ("ok", None) and f.get("detail") else ""
        )
        lines.append(f"  {name:48} {text:>12}  {f.get('state', '')}{extra}")
    for kept in result["kept"]:
        for path in kept["html"]:
            lines.append(f"  report: {path}")
    lines.append(
        f"  MLflow runs: {', '.join(sorted({k['mlflow_run_id'] for k in result['kept']}))}"
    )
    return "\n".join(lines)
