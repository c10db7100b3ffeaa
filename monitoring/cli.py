"""``rollguard monitor --week W``: recompute one week's monitoring figures and print them.

Monitoring sits below ``registry_guard``, so the CLI assembly (``rollguard/cli.py``) hands this
module what it may not import: the live-quality rule of the configured policies and a model loader.
The shared command helpers are core (:mod:`rollguard.commands`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from monitoring.compute import LiveQualityRule
from monitoring.weekly import ModelLoader, monitor_week, open_inputs, parse_week
from rollguard.commands import emit, reports_errors, settings
from rollguard.settings import Settings


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
        emit(monitor_week(current, cutoff, inputs=inputs), as_json, human)


def human(result: dict[str, Any]) -> str:
    """The readable form of :func:`monitoring.weekly.monitor_week`'s result."""
    lines = [f"week {result['week']}  model {result['model_name']} v{result.get('model_version')}"]
    lines += [f"  warning: {w}" for w in result.get("warnings", [])]
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
