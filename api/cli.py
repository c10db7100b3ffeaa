"""``rollguard serve api``: run the model server (one uvicorn worker; see :mod:`api.metrics`).
``rollguard serve guard``: run the guard service (see :mod:`registry_guard.service`)."""

from __future__ import annotations

from typing import Annotated

import typer

from rollguard.asgi import port_problem
from rollguard.commands import settings
from rollguard.errors import RollguardError
from rollguard.logs import configure_logging

serve_app = typer.Typer(help="Run a Rollguard service.", no_args_is_help=True)


@serve_app.command("api")
def serve_api(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: ROLLGUARD_API_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: ROLLGUARD_API_PORT).")
    ] = None,
) -> None:
    """Serve the champion model over HTTP: predict, explain, model info, health, metrics."""
    import sys

    import uvicorn

    # The model server's stack (FastAPI, uvicorn, XGBoost) loads only when a server starts.
    from api.app import create_app

    s = settings()
    problem = port_problem(host or s.api_host, port or s.api_port, "--port or ROLLGUARD_API_PORT")
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=2)
    # The prediction-log and model-watch threads share the GIL with request handling; a 1 ms
    # switch interval (CPython's default is 5 ms) bounds how long a request waits for them.
    sys.setswitchinterval(0.001)
    configure_logging(s, service="api")
    try:
        app = create_app(s)
    except RollguardError as exc:  # e.g. the use case is not registered, a malformed key rate
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    uvicorn.run(
        app,
        host=host or s.api_host,
        port=port or s.api_port,
        workers=1,
        access_log=False,  # rollguard.asgi writes the access lines (docs/logs.md)
        log_config=None,  # uvicorn's loggers go through configure_logging's handler
        log_level=s.log_level.lower(),
        timeout_graceful_shutdown=30,
    )


@serve_app.command("guard")
def serve_guard(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: ROLLGUARD_GUARD_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: ROLLGUARD_GUARD_PORT).")
    ] = None,
) -> None:
    """Serve the guard: Alertmanager webhook (rollback on degraded quality) and store metrics."""
    import uvicorn

    from api.lifecycle import configure_mlflow_http

    s = settings()
    problem = port_problem(
        host or s.guard_host, port or s.guard_port, "--port or ROLLGUARD_GUARD_PORT"
    )
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=2)
    configure_mlflow_http()
    configure_logging(s, service="guard")
    try:
        from registry_guard.service import create_guard_app

        app = create_guard_app(s)
    except RollguardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    uvicorn.run(
        app,
        host=host or s.guard_host,
        port=port or s.guard_port,
        workers=1,
        access_log=False,  # rollguard.asgi writes the access lines (docs/logs.md)
        log_config=None,  # uvicorn's loggers go through configure_logging's handler
        log_level=s.log_level.lower(),
    )


def register(app: typer.Typer) -> None:
    """Add the ``serve`` sub-command group (with ``serve api``) to the ``rollguard`` CLI."""
    app.add_typer(serve_app, name="serve")
