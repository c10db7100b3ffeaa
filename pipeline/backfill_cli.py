"""``rollguard backfill``: the thin command around :func:`pipeline.backfill.backfill`."""

from typing import Annotated, Any

import typer

from monitoring.weekly import parse_week
from pipeline.backfill import backfill
from rollguard.commands import JsonFlag, emit, reports_errors, settings


def register(app: typer.Typer) -> None:
    """Add the ``backfill`` command to ``app`` (the ``rollguard`` entry point)."""

    @app.command("backfill")
    @reports_errors
    def backfill_command(
        from_week: Annotated[
            str | None,
            typer.Option(
                "--from",
                help="Recompute every stored result whose window includes this week "
                "(YYYY-Www, or its Monday YYYY-MM-DD), stale or not; default: only stale ones.",
            ),
        ] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Rebuild the snapshots, batch predictions and monitoring rows that a late or corrected
        week made stale (gate decisions and alias moves are history and stay as they are)."""
        s = settings()
        emit(
            backfill(s, from_week=None if from_week is None else parse_week(from_week, "--from")),
            as_json,
            human,
        )


def human(result: dict[str, Any]) -> str:
    """The readable form of :func:`pipeline.backfill.backfill`'s result."""
    scope = f"from {result['from_week']}" if result["from_week"] else "stale results"
    if not result["recomputed"]:
        why = f" ({result['note']})" if result.get("note") else ""
        return f"backfill ({scope}): nothing to recompute{why}"
    lines = [f"backfill ({scope}): {result['n']} result(s) recomputed"]
    for w in result["recomputed"]:
        version = f" v{w['model_version']}" if w["model_version"] else ""
        lines.append(f"  {w['cutoff']}  {w['kind']:<11}{version}  ({w['reason']})")
    return "\n".join(lines)
