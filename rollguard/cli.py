"""``rollguard``: the single command-line entry point.

Each part registers its commands here; command bodies import their part lazily so that
``rollguard --help`` is fast and each service image needs only its own dependency group.
Every command that reports something takes ``--json``; errors are printed as one clear line
(and as ``{"error": ...}`` with ``--json``), exit code 2, never a stack trace.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from rollguard.errors import RollguardError
from rollguard.settings import Settings, get_settings

app = typer.Typer(
    name="rollguard",
    help="Rollguard: retrain, gate, serve, monitor and roll back an XGBoost model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
#: MLflow's HTTP client retries 7 times with exponential backoff (minutes) by default; a person at a
#: terminal needs an answer in seconds. Applied with ``setdefault``: an exported value wins.
CLI_MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # MLflow logs every SQLite schema check at INFO; a person needs warnings only.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


@app.callback()
def _cli_defaults() -> None:
    """Rollguard: retrain, gate, serve, monitor and roll back an XGBoost model."""
    import os

    for key, value in CLI_MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


db_app = typer.Typer(help="Monitoring store schema (alembic migrations).", no_args_is_help=True)
data_app = typer.Typer(
    help="The transaction log, the weekly feed and ingestion.", no_args_is_help=True
)
features_app = typer.Typer(help="Point-in-time features and labels.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
F = TypeVar("F", bound=Callable[..., Any])


def to_jsonable(obj: Any) -> Any:
    """Turn dataclasses, pydantic models, paths, dates and enums into JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Enum):
        return obj.value
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def emit(result: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """Print ``result`` as JSON or as readable text."""
    if as_json:
        typer.echo(json.dumps(to_jsonable(result), indent=2, sort_keys=False))
    elif human is not None:
        typer.echo(human(result))
    else:
        data = to_jsonable(result)
        if isinstance(data, dict):
            width = max((len(k) for k in data), default=0)
            for key, value in data.items():
                typer.echo(f"{key.ljust(width)}  {value}")
        else:
            typer.echo(str(data))


#: Stable ``kind`` values of ``--json`` errors (scripts branch on these, not on class names).
ERROR_KINDS = (
    "invalid_input",
    "dataset",
    "configuration",
    "training_data",
    "tracking",
    "registry",
    "no_evaluation_data",
    "store_unavailable",
    "registry_unavailable",
    "filesystem",
)


def _redact_url(text: str) -> str:
    """Hide passwords in URLs (``scheme://user:secret@host`` → ``scheme://user:***@host``)."""
    import re

    return re.sub(r"(\w+://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def classify_error(exc: BaseException) -> tuple[str, str] | None:
    """Map an exception to ``(kind, one-line message)``, or ``None`` when it is a programming error
    that must keep its traceback. ``kind`` is one of :data:`ERROR_KINDS`."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, RollguardError):
        return exc.kind, str(exc)
    try:
        from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy is a core dependency
        pass
    else:
        if isinstance(exc, ArgumentError):
            return "configuration", _redact_url(f"invalid ROLLGUARD_DATABASE_URL: {first_line}")
        if isinstance(exc, OperationalError | DBAPIError):
            orig = getattr(exc, "orig", None)
            detail = (str(orig).strip().splitlines() or [first_line])[0] if orig else first_line
            return "store_unavailable", _redact_url(
                f"the monitoring store cannot be used: {detail} "
                "(check ROLLGUARD_DATABASE_URL and that the server is up)"
            )
    if type(exc).__name__ == "MlflowException" or type(exc).__module__.startswith("mlflow"):
        code = getattr(exc, "error_code", "")
        kind = (
            "registry_unavailable"
            if "TEMPORARILY_UNAVAILABLE" in str(code) or "Max retries" in str(exc)
            else "registry"
        )
        return kind, _redact_url(f"MLflow: {first_line}")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return "filesystem", f"{exc.strerror or first_line}{where}"
    if isinstance(exc, ValueError):
        return "invalid_input", first_line
    return None


def reports_errors(func: F) -> F:
    """Turn expected failures (bad input, unreachable store or registry, file problems) into one
    clear line on stderr (or ``{"error", "kind"}`` on stdout with ``--json``) and exit code 2;
    programming errors keep their traceback. See :func:`classify_error`."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as exc:
            classified = classify_error(exc)
            if classified is None:
                raise
            kind, message = classified
            if as_json:
                typer.echo(json.dumps({"error": message, "kind": kind}))
            else:
                typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    """The process settings; a malformed environment is reported as a clear error."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"ROLLGUARD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        typer.echo(f"error: invalid settings: {problems}", err=True)
        raise typer.Exit(code=2) from None


# --- db ------------------------------------------------------------------------------------------
@db_app.command("upgrade")
@reports_errors
def db_upgrade(revision: str = "head", as_json: JsonFlag = False) -> None:
    """Migrate the monitoring store to REVISION (default: the newest)."""
    from rollguard import db

    s = settings()
    if s.database_url is None:
        s.ensure_dirs()
    db.upgrade(s.monitoring_db_url, revision)
    emit(
        {
            "database": _safe_url(s.monitoring_db_url),
            "revision": db.current_revision(s.monitoring_db_url),
        },
        as_json,
    )


@db_app.command("current")
@reports_errors
def db_current(as_json: JsonFlag = False) -> None:
    """Show the store's revision and the newest one this code ships."""
    from rollguard import db

    s = settings()
    current = db.current_revision(s.monitoring_db_url)
    head = db.head_revision()
    emit(
        {
            "database": _safe_url(s.monitoring_db_url),
            "current": current,
            "head": head,
            "up_to_date": current == head,
        },
        as_json,
    )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- data ----------------------------------------------------------------------------------------
PathOption = Annotated[
    Path | None,
    typer.Option("--path", help="A CDNOW-shaped log instead of the copy in Lifetimes 0.11.3."),
]


@data_app.command("info")
@reports_errors
def data_info(path: PathOption = None, as_json: JsonFlag = False) -> None:
    """Verify and summarise the transaction log."""
    from pipeline import cdnow

    s = settings()
    use = path or s.dataset_path
    frame, resolved, digest = cdnow.load_dataset(use, s.dataset_sha256)
    source = "user file" if use else f"{cdnow.DISTRIBUTION} {cdnow.DISTRIBUTION_VERSION}"
    emit(cdnow.describe(frame, resolved, digest, source), as_json)


@data_app.command("replay")
@reports_errors
def data_replay(
    until: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Write every week up to the one holding this day."),
    ] = None,
    weeks: Annotated[
        int | None,
        typer.Option(min=1, help="Write the next N weeks after those already delivered."),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Deliver one week per --every interval until stopped.")
    ] = False,
    every: Annotated[
        str, typer.Option(help="With --live: time between deliveries (60s, 2m, 500ms).")
    ] = "60s",
    path: PathOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Write the log as one CSV per ISO week into the landing zone, like a production feed."""
    from pipeline import feed

    s = settings()
    if live:
        _replay_live(s, until, weeks, every, path, as_json)
        return
    if (until is None) == (weeks is None):
        raise ValueError("give exactly one of --until YYYY-MM-DD or --weeks N")
    result = feed.replay(s, until=until.date() if until else None, weeks=weeks, path=path)
    emit(result, as_json, feed.format_replay)


def _replay_live(
    s: Settings, until: datetime | None, weeks: int | None, every: str, path: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """``data replay --live``: deliveries until --weeks, the log's end, Ctrl-C or SIGTERM."""
    import signal
    import threading

    from pipeline import live_feed

    if until is not None:
        raise ValueError("--live delivers week by week: use --weeks N (or nothing), not --until")
    seconds = live_feed.parse_interval(every)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        results = live_feed.replay_live(
            s, every_seconds=seconds, stop=stop, weeks=weeks, path=path,
            on_delivery=lambda r: typer.echo(
                f"delivered {r.newest_week} ({', '.join(r.written) or 'already there'})",
                err=as_json,
            ),
        )  # fmt: skip
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {
        "delivered": [r.newest_week for r in results],
        "stopped_by_signal": stop.is_set(),
        "landing_dir": str(s.landing_dir),
    }
    emit(summary, as_json)


@data_app.command("ingest")
@reports_errors
def data_ingest(as_json: JsonFlag = False) -> None:
    """Validate new landing files: accept into the warehouse or quarantine with a reason."""
    from pipeline import ingest

    s = settings()
    result = ingest.ingest_landing(s)
    emit(result, as_json, ingest.format_report)


# --- features ------------------------------------------------------------------------------------
@features_app.command("build")
@reports_errors
def features_build(
    cutoff: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="A Monday.")],
    as_json: JsonFlag = False,
) -> None:
    """Build the feature and label snapshot at CUTOFF from the ingested warehouse."""
    from pipeline import snapshots

    s = settings()
    result = snapshots.build_snapshot(s, cutoff.date())
    emit(result, as_json)


# --- the main job --------------------------------------------------------------------------------
@app.command("demo")
@reports_errors
def demo(
    weeks: Annotated[
        int | None,
        typer.Option(min=1, help="Weekly DAG runs after the initial load [default: 16]."),
    ] = None,
    all_weeks: Annotated[
        bool, typer.Option("--all", help="Run every remaining week of the log (78 in all).")
    ] = False,
    faults: Annotated[
        bool, typer.Option(help="Inject the malformed file and the broken model.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Replay CDNOW week by week through the real Airflow DAG: retrain, gate, promote, roll back."""
    import os
    import signal

    if all_weeks and weeks is not None:
        raise typer.BadParameter("give either --weeks N or --all, not both", param_hint="--weeks")

    def stop(signum: int, _frame: object) -> None:
        # A service manager's SIGTERM stops the demo like Ctrl-C: the DAG run in progress ends,
        # and `rollguard demo` again resumes (ingestion and registration are idempotent).
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    # The demo keeps Optuna's budget small so that it ends in minutes; a person's own setting wins.
    os.environ.setdefault("ROLLGUARD_TUNING_TRIALS", "12")
    os.environ.setdefault("ROLLGUARD_TUNING_TIMEOUT_SECONDS", "120")
    get_settings.cache_clear()
    from pipeline import demo as job

    s = settings()
    options = job.DemoOptions(weeks=None if all_weeks else (weeks or 16), faults=faults)

    def progress(line: str) -> None:
        typer.echo(line, err=as_json)

    progress(f"Rollguard main job: home {s.home}")
    progress(job.TABLE_HEADER)
    result = job.run_demo(s, options, progress=progress)
    if as_json:
        emit(job.to_json(result), True)
        return
    typer.echo("")
    typer.echo(job.TABLE_HEADER)
    for row in result.rows:
        typer.echo(job.format_row(row))
    for event in result.events:
        if isinstance(event, dict):
            rest = {k: v for k, v in event.items() if k != "event"}
            details = "; ".join(
                f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in rest.items()
            )
            typer.echo(f"event: {event.get('event', '?')}" + (f" ({details})" if details else ""))
        else:
            typer.echo(f"event: {event}")
    summary = job.summarize(result)

    def n(count: int, word: str) -> str:
        return f"{count} {word}" + ("" if count == 1 else "s")

    typer.echo("")
    typer.echo(
        f"{n(summary['runs'], 'DAG run')} in {summary['seconds']:.0f}s: "
        f"{n(summary['promotions'], 'promotion')}, "
        f"{n(summary['gate_rejections'], 'gate rejection')}, "
        f"{n(summary['files_quarantined'], 'quarantined file')}, "
        f"{n(summary['rollbacks'], 'rollback')}"
    )
    typer.echo(job.where_to_look(s))


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - console entry point
    """Console entry point (``rollguard``).

    Usage errors (unknown option, bad value) are printed as one line ``error: ...`` after the
    usage line, or as ``{"error": ..., "kind": "usage"}`` when ``--json`` is among the arguments;
    exit code 2 either way.
    """
    try:  # Typer >= 0.26 vendors click under typer._click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - older Typer uses click itself
        from click.exceptions import UsageError  # type: ignore[assignment]

    args = sys.argv[1:] if argv is None else argv
    try:
        rc = app(args=args, prog_name="rollguard", standalone_mode=False)
    except UsageError as exc:
        message = exc.format_message()
        if "--json" in args:
            typer.echo(json.dumps({"error": message, "kind": "usage"}))
        else:
            if exc.ctx is not None:
                typer.echo(exc.ctx.get_usage(), err=True)
            typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("stopped; run the same command again to resume where it stopped", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


def _register_parts() -> None:
    """Each part adds its own commands; their modules import nothing heavy at import time."""
    from api.cli import register as register_api
    from monitoring.cli import register as register_monitoring
    from pipeline.train_cli import register as register_train
    from registry_guard.cli import register as register_registry_guard
    from rollguard.stack_cli import register as register_stack

    register_train(app)
    register_registry_guard(app)
    register_api(app)
    register_monitoring(app)
    register_stack(app)


_register_parts()
