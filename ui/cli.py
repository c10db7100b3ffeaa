"""``rollguard serve ui``: run the Gradio UI (it calls the REST API only). The assembly
(:mod:`rollguard.cli`) adds it to the ``serve`` group of :mod:`api.cli`; :func:`main` is the same
command alone, the ``rollguard-ui`` script that the UI image runs (its environment holds none of
the monitoring store and pipeline that the rest of the CLI imports)."""

from __future__ import annotations

from typing import Annotated

import typer

from rollguard.commands import reports_errors, settings
from ui.server import run


def register(serve_app: typer.Typer) -> None:
    """Add ``serve ui`` to the ``serve`` sub-command group."""
    serve_app.command("ui")(serve_ui)


@reports_errors
def serve_ui(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: ROLLGUARD_UI_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: ROLLGUARD_UI_PORT).")
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="REST API base URL (default: ROLLGUARD_UI_API_URL).")
    ] = None,
) -> None:
    """Serve the Gradio UI (score a row, what if, batch, model) over the REST API."""
    s = settings()
    overrides = {"ui_host": host, "ui_port": port, "ui_api_url": api_url}
    run(s.model_copy(update={k: v for k, v in overrides.items() if v is not None}))


def main() -> None:
    """``rollguard-ui [--host H] [--port P] [--api-url URL]``: :func:`serve_ui` as a program."""
    typer.run(serve_ui)
