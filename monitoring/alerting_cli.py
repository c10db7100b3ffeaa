"""``rollguard stack alertmanager-config --out PATH``: render Alertmanager's config with the
receivers configured by ``ROLLGUARD_ALERT_*`` (see :mod:`monitoring.alerting`, docs/alerting.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitoring.alerting import (
    BASE_CONFIG,
    RenderedConfig,
    load_receiver_settings,
    write_alertmanager_config,
)
from rollguard.commands import emit, reports_errors, settings


def format_rendered(result: RenderedConfig) -> str:
    """Where the files went, which integrations each severity receiver got, and the notice."""
    lines = [f"wrote {', '.join(str(f) for f in result.files)}"]
    for name, kinds in result.receivers.items():
        lines.append(f"  {name:<20} {', '.join(kinds) or '(no integration)'}")
    if result.notice:
        lines.append(f"note: {result.notice}")
    return "\n".join(lines)


def register(stack_app: typer.Typer) -> None:
    """Add ``alertmanager-config`` to the ``rollguard stack`` command group."""

    @stack_app.command("alertmanager-config")
    @reports_errors
    def alertmanager_config(
        out: Annotated[
            Path,
            typer.Option("--out", help="Where to write alertmanager.yml (templates go beside it)."),
        ],
        base: Annotated[
            Path, typer.Option("--base", help="The base config (routes, inhibitions, the guard).")
        ] = BASE_CONFIG,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    ) -> None:
        """Render Alertmanager's config from ROLLGUARD_ALERT_* (e-mail over SMTP, a
        Slack-compatible webhook, PagerDuty routing keys). Refused, exit 2, when no receiver is
        configured outside development."""
        rendered = write_alertmanager_config(
            out, load_receiver_settings(), env=settings().env, base=base
        )
        emit(rendered, as_json, format_rendered)
