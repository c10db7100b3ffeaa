"""``rollguard monitor --week W``: recompute one week's monitoring figures and print them."""

from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``monitor`` command to the ``rollguard`` CLI."""
    from rollguard.commands import emit, reports_errors, settings

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
        until its 28-day label matured); store the rows, HTML reports and the MLflow run."""
        from monitoring.weekly import monitor_week, parse_week

        cutoff = parse_week(week)
        result = monitor_week(settings(), cutoff)
        emit(result, as_json, _human)


def _human(result: dict[str, Any]) -> str:
    lines = [f"week {result['week']}  model {result['model_name']} v{result.get('model_version')}"]
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
