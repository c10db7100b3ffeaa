"""``rollguard stack up | status | down``: the full stack as local processes, without Docker
(see :mod:`rollguard.stack` and docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rollguard import stack_runner
from rollguard.commands import emit, reports_errors, settings

stack_app = typer.Typer(
    help="The full stack as local processes on 127.0.0.1 (no Docker).", no_args_is_help=True
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def format_status(rows: list[Any]) -> str:
    """A table: service, state, ready, PID, URL (and why a service is absent)."""
    lines = [f"{'service':<24} {'state':<8} {'ready':<6} {'pid':>7}  url"]
    for r in rows:
        ready = "" if r.ready is None else ("yes" if r.ready else "no")
        pid = "" if r.pid is None else str(r.pid)
        where = r.url or ""
        if r.reason:
            where = f"{where} ({r.reason})".strip()
        lines.append(f"{r.name:<24} {r.state:<8} {ready:<6} {pid:>7}  {where}")
    return "\n".join(lines)


@stack_app.command("up")
@reports_errors
def stack_up(as_json: JsonFlag = False) -> None:
    """Start every service (PostgreSQL by URL or SQLite, MLflow, Airflow, API, UI, guard,
    Prometheus, Alertmanager, Grafana when installed) and return when all are ready."""
    s = settings()
    rows = stack_runner.up(s, progress=lambda line: typer.echo(line, err=True))
    paths = stack_runner.StackPaths(s.home)
    emit(
        {"services": rows, "airflow_user": "admin", "airflow_password_file": paths.secrets},
        as_json,
        lambda r: (
            format_status(r["services"])
            + f"\nAirflow log-in: admin, password in {paths.secrets} (airflow_admin_password)"
            + f"\nlogs: {paths.logs}"
        ),
    )


@stack_app.command("status")
@reports_errors
def stack_status(as_json: JsonFlag = False) -> None:
    """Each service's state (running, stopped, exited, absent), readiness, PID and URL."""
    rows = stack_runner.status(settings())
    emit({"services": rows}, as_json, lambda r: format_status(r["services"]))


@stack_app.command("down")
@reports_errors
def stack_down(as_json: JsonFlag = False) -> None:
    """Stop every service (SIGTERM to its process group, SIGKILL after the stop timeout)."""
    stopped = stack_runner.down(settings())
    emit(
        {"stopped": stopped},
        as_json,
        lambda r: (
            "\n".join(
                f"stopped {x['name']} (pid {x['pid']}{', killed' if x['killed'] else ''})"
                for x in r["stopped"]
            )
            or "nothing was running"
        ),
    )


@stack_app.command("env")
@reports_errors
def stack_env(as_json: JsonFlag = False) -> None:
    """Print the variables that point other commands (``rollguard models``, ``history``,
    ``promote``...) at this stack's MLflow server and stores: ``eval "$(rollguard stack env)"``."""
    import shlex

    variables = stack_runner.client_env(settings())
    emit(
        variables,
        as_json,
        lambda v: "\n".join(f"export {k}={shlex.quote(x)}" for k, x in v.items()),
    )


@stack_app.command("mlflow-users")
@reports_errors
def stack_mlflow_users(
    secrets_dir: Annotated[
        Path,
        typer.Option(
            help="Folder of the password files: mlflow_admin_password and "
            "mlflow_{pipeline,gate,guard,reader}_password (compose mounts them at /run/secrets)."
        ),
    ] = Path("/run/secrets"),
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="The authenticated MLflow server (default: the settings' tracking URI)."),
    ] = None,
    admin_username: Annotated[str, typer.Option(help="MLflow's admin user.")] = "admin",
    as_json: JsonFlag = False,
) -> None:
    """Create or update the MLflow users pipeline, gate, guard and reader and their permissions on
    a server running ``mlflow server --app-name rollguard-auth`` (idempotent; re-run after
    changing a password to rotate it). See docs/security.md, "Registry access control"."""
    from rollguard.mlflow_auth import provision_from_files

    uri = tracking_uri or settings().tracking_uri
    rows = provision_from_files(uri, admin_username=admin_username, secrets_dir=secrets_dir)
    emit(
        {"tracking_uri": uri, "users": rows},
        as_json,
        lambda r: "\n".join(
            f"{u['user']:<9} {'created' if u['created'] else 'updated'}  "
            + ", ".join(f"{k} {v}" for k, v in u["grants"].items())
            for u in r["users"]
        ),
    )


def register(app: typer.Typer) -> None:
    """Add the ``stack`` command group to the ``rollguard`` CLI."""
    app.add_typer(stack_app, name="stack")
