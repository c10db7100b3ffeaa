"""``rollguard``: the single command-line entry point, assembled on top of every part.

Each part registers its own commands (``register(app)`` of :mod:`pipeline.train_cli`,
:mod:`registry_guard.cli`, :mod:`api.cli`, :mod:`monitoring.cli`); shared helpers live in
:mod:`rollguard.commands`. Command bodies import heavy libraries (Airflow, MLflow) lazily so that
``rollguard --help`` is fast. Every command that reports something takes ``--json``; errors are
printed as one clear line (and as ``{"error": ...}`` with ``--json``), exit code 2, never a stack
trace.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from api.cli import register as register_api
from api.cli import serve_app
from domain import snapshots
from domain.warehouse import ingested_weeks
from monitoring.alerting_cli import register as register_alerting
from monitoring.cli import register as register_monitoring
from monitoring.weekly import parse_week
from pipeline import demo as job
from pipeline import feed, ingest, live_feed
from pipeline.backfill_cli import register as register_backfill
from pipeline.steps import (
    features_step,
    live_quality_rule,
    model_loader,
    score_step,
    scoring_cutoff,
)
from pipeline.train_cli import register as register_train
from pipeline.usecase_check import check_usecase, format_check
from registry_guard.cli import register as register_registry_guard
from registry_guard.registry import RegistryError
from rollguard import apikeys, backup, db
from rollguard.commands import (
    CLI_MLFLOW_HTTP_DEFAULTS,
    JsonFlag,
    emit,
    reports_errors,
    settings,
)
from rollguard.errors import ConfigurationError, RollguardError, describe_validation_error
from rollguard.logs import configure_logging
from rollguard.settings import Settings, get_settings
from rollguard.stack_cli import register as register_stack
from rollguard.stack_cli import stack_app
from rollguard.store import open_store
from rollguard.usecase import available_usecases, default_usecase_name, load_usecase
from rollguard.weeks import iso_week_label
from ui.cli import register as register_ui

app = typer.Typer(
    name="rollguard",
    help="Rollguard: retrain, gate, serve, monitor and roll back an XGBoost model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _cli_defaults() -> None:
    """Rollguard: retrain, gate, serve, monitor and roll back an XGBoost model."""

    for key, value in CLI_MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        s = get_settings()
    except (ValidationError, RollguardError):
        return  # the command reports the malformed setting itself, in one line
    # A command prints its result; its log shows warnings unless ROLLGUARD_LOG_LEVEL asks for
    # more (the servers, ``serve ...``, set themselves up again at their own level).
    quiet = "log_level" not in s.model_fields_set and s.log_level in ("DEBUG", "INFO")
    configure_logging(s, service="cli", level="WARNING" if quiet else None)


db_app = typer.Typer(help="Monitoring store schema (alembic migrations).", no_args_is_help=True)
data_app = typer.Typer(
    help="The use case's record history, the weekly feed and ingestion.", no_args_is_help=True
)
features_app = typer.Typer(help="Point-in-time features and labels.", no_args_is_help=True)
usecase_app = typer.Typer(
    help="Use cases: list the registered ones, check one against its contract.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
apikey_app = typer.Typer(
    help="API keys of the model server's clients (stored hashed; see docs/api.md).",
    no_args_is_help=True,
)
app.add_typer(usecase_app, name="usecase")
app.add_typer(apikey_app, name="apikey")


# --- db ------------------------------------------------------------------------------------------
@db_app.command("upgrade")
@reports_errors
def db_upgrade(revision: str = "head", as_json: JsonFlag = False) -> None:
    """Migrate the monitoring store to REVISION (default: the newest)."""

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
    typer.Option(
        "--path", help="A file of the use case's source shape instead of its packaged copy."
    ),
]


@data_app.command("info")
@reports_errors
def data_info(path: PathOption = None, as_json: JsonFlag = False) -> None:
    """Verify (checksum) and summarise the use case's record history."""
    s = settings()
    history = s.usecase_spec.load_history(path or s.dataset_path, s.dataset_sha256)
    emit(
        {
            "usecase": s.usecase,
            "path": str(history.path),
            "sha256": history.sha256,
            "source": history.source,
            **history.summary,
        },
        as_json,
    )


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
    """Write the history as one CSV per ISO week into the landing zone, like a production feed."""
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
    if until is not None:
        raise ValueError("--live delivers week by week: use --weeks N (or nothing), not --until")
    seconds = live_feed.parse_interval(every)
    stop = threading.Event()
    ended: list[str | None] = []
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
            on_end=lambda r: ended.append(r.note),
        )  # fmt: skip
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {
        "delivered": [r.newest_week for r in results],
        "stopped_by_signal": stop.is_set(),
        "landing_dir": str(s.landing_dir),
    }
    if ended and ended[0]:
        summary["stopped_because"] = ended[0]
    emit(summary, as_json)


@data_app.command("ingest")
@reports_errors
def data_ingest(as_json: JsonFlag = False) -> None:
    """Validate new landing files: accept into the warehouse or quarantine with a reason."""

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

    s = settings()
    result = snapshots.build_snapshot(s, cutoff.date())
    emit(result, as_json)


# --- scoring ---------------------------------------------------------------------------------------
@app.command("score")
@reports_errors
def score(
    week: Annotated[
        str | None,
        typer.Option(
            "--week",
            help="The week to score: ISO week YYYY-Www or its cutoff YYYY-MM-DD (a Monday). "
            "Default: the scoring cutoff, the Monday after the newest ingested week.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score one week by hand, as the weekly DAG does: snapshot its features, the champion
    scores them.

    Builds the feature snapshot at the week's cutoff and has the champion score every row
    (warehouse/predictions/cutoff=YYYY-MM-DD/version=N.parquet); idempotent per cutoff and
    version. Score drift, live quality and KPIs (rollguard monitor) read the predictions; the
    API's entity route reads the snapshot."""
    s = settings()
    cutoff = parse_week(week) if week is not None else scoring_cutoff(s)
    if cutoff is None:
        raise ConfigurationError(
            "nothing is ingested yet, so there is no week to score: run `rollguard data replay "
            "--weeks N` and `rollguard data ingest` first"
        )
    label = iso_week_label(cutoff)
    weeks = ingested_weeks(s)
    previous = iso_week_label(cutoff - timedelta(days=7))
    if previous not in weeks:
        raise ConfigurationError(
            f"week {label} (cutoff {cutoff}) cannot be scored: its features need week {previous} "
            f"ingested (newest ingested: {weeks[-1] if weeks else 'none'}); run `rollguard data "
            "replay` and `rollguard data ingest` first"
        )
    features = features_step(s, cutoff)
    scored = score_step(s, features)
    if not scored.get("scored"):
        raise RegistryError(
            f"no champion of {s.model_name} to score week {label} (cutoff {cutoff}; the snapshot "
            f"is built: {features['path']}): train and gate a first champion (`rollguard train`, "
            f"then `rollguard gate`, or the weekly DAG), then run `rollguard score --week {label}`"
        )
    emit(
        {
            "week": label,
            "cutoff": cutoff.isoformat(),
            "model_name": s.model_name,
            "model_version": scored["model_version"],
            "n_rows": scored["n_rows"],
            "n_targeted": scored["n_targeted"],
            "predictions": scored["path"],
            "created": scored["created"],
            "snapshot": features["path"],
            "missing_weeks": features["missing_weeks"],
            "next": f"rollguard monitor --week {label}",
        },
        as_json,
        _format_score,
    )


def _format_score(result: dict[str, Any]) -> str:
    kept = "written" if result["created"] else "already there (same cutoff and version), kept"
    lines = [
        f"scored week {result['week']} (cutoff {result['cutoff']}) with {result['model_name']} "
        f"v{result['model_version']}: {result['n_rows']:,} rows, {result['n_targeted']:,} targeted",
        f"  snapshot:    {result['snapshot']}",
        f"  predictions: {result['predictions']} ({kept})",
    ]
    if result["missing_weeks"]:
        lines.append(f"  weeks missing before the cutoff: {', '.join(result['missing_weeks'])}")
    lines.append(
        f"  next: `{result['next']}` (score drift now; live quality and KPIs once the label "
        "has matured)"
    )
    return "\n".join(lines)


# --- the main job --------------------------------------------------------------------------------
@app.command("demo")
@reports_errors
def demo(
    weeks: Annotated[
        int | None,
        typer.Option(min=1, help="Weekly DAG runs after the initial load [default: 16]."),
    ] = None,
    all_weeks: Annotated[
        bool, typer.Option("--all", help="Run every remaining week of the history.")
    ] = False,
    faults: Annotated[
        bool, typer.Option(help="Inject the malformed file and the broken model.")
    ] = True,
    usecase: Annotated[
        str | None,
        typer.Option(
            "--usecase",
            help="Run this registered use case (sets ROLLGUARD_USECASE; its state goes under "
            "./.rollguard-NAME unless ROLLGUARD_HOME is set) [default: ROLLGUARD_USECASE, else the "
            "default use case].",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay a use case's history (the default one unless --usecase) week by week through the
    real Airflow DAG:
    retrain, gate, promote, roll back."""
    if all_weeks and weeks is not None:
        raise typer.BadParameter("give either --weeks N or --all, not both", param_hint="--weeks")
    if usecase is not None:
        load_usecase(usecase)  # refuse an unknown or broken use case before anything runs
        os.environ["ROLLGUARD_USECASE"] = usecase
        if usecase != default_usecase_name():
            os.environ.setdefault("ROLLGUARD_HOME", f".rollguard-{usecase}")

    def stop(signum: int, _frame: object) -> None:
        # A service manager's SIGTERM stops the demo like Ctrl-C: the DAG run in progress ends,
        # and `rollguard demo` again resumes (ingestion and registration are idempotent).
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    # The demo keeps Optuna's budget small so that it ends in minutes; a person's own setting wins.
    os.environ.setdefault("ROLLGUARD_TUNING_TRIALS", "12")
    os.environ.setdefault("ROLLGUARD_TUNING_TIMEOUT_SECONDS", "120")
    # Weeks pass in seconds here: the rollback cooldown (wall-clock, 900 s by default, against a
    # registry that flaps within hours) would span dozens of replayed weeks. One DAG run's worth
    # keeps its meaning (no second automatic rollback within the same run).
    os.environ.setdefault("ROLLGUARD_ROLLBACK_COOLDOWN_SECONDS", "30")
    get_settings.cache_clear()

    s = settings()
    options = job.DemoOptions(weeks=None if all_weeks else (weeks or 16), faults=faults)
    header = job.table_header(s)

    def progress(line: str) -> None:
        typer.echo(line, err=as_json)

    progress(f"Rollguard main job: {s.usecase_spec.title}, home {s.home}")
    progress(header)
    result = job.run_demo(s, options, progress=progress)
    if as_json:
        emit(job.to_json(result), True)
        return
    typer.echo("")
    typer.echo(header)
    for row in result.rows:
        typer.echo(job.format_row(row))
    for event in result.events:
        typer.echo(_event_line(event))
    typer.echo("")
    typer.echo(job.format_summary(job.summarize(result)))
    typer.echo(job.where_to_look(s))


def _event_line(event: Any) -> str:
    if not isinstance(event, dict):
        return f"event: {event}"
    rest = {k: v for k, v in event.items() if k != "event"}
    details = "; ".join(
        f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in rest.items()
    )
    return f"event: {event.get('event', '?')}" + (f" ({details})" if details else "")


# --- backup and restore ---------------------------------------------------------------------------
@app.command("backup")
@reports_errors
def backup_cmd(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Archive to write (.tar.gz) [default: ./rollguard-backup-USECASE-TIME.tar.gz].",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write one archive of the home's whole state: stores (consistent snapshots), MLflow
    backend and artifacts, Optuna, warehouse, ledger, quarantine, with a manifest of versions,
    checksums and the schema revision (docs/operations.md, "Backup and restore")."""
    result = backup.create_backup(settings(), output)
    emit(
        {
            "archive": result.archive,
            "size_bytes": result.size_bytes,
            "files": result.files,
            "seconds": result.seconds,
            "schema_revision": result.manifest["schema_revision"],
            "databases": {r: e["engine"] for r, e in result.manifest["databases"].items()},
            "home": result.manifest["home"],
        },
        as_json,
    )


@app.command("restore")
@reports_errors
def restore_cmd(
    archive: Annotated[Path, typer.Argument(help="An archive written by `rollguard backup`.")],
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Empty or new folder to restore into [default: ROLLGUARD_HOME]. PostgreSQL "
            "stores go into the (empty) databases the settings name.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore an archive into an empty home (and empty PostgreSQL stores): checksums and the
    schema revision are verified first, then the original home's paths are rewritten to the new
    one (docs/operations.md, "Backup and restore")."""
    s = settings()
    target = s.model_copy(update={"home": home.expanduser().absolute()}) if home else s
    result = backup.restore_backup(archive, target)
    emit(result, as_json)


# --- use cases -------------------------------------------------------------------------------------
@usecase_app.command("list")
@reports_errors
def usecase_list(as_json: JsonFlag = False) -> None:
    """The use cases registered under the entry-point group rollguard.usecases."""
    found = available_usecases()
    emit({name: ep.value for name, ep in sorted(found.items())}, as_json)


@usecase_app.command("check")
@reports_errors
def usecase_check(
    name: Annotated[str, typer.Argument(help="A registered use case.")],
    weeks: Annotated[
        int, typer.Option(min=1, help="Weekly files of the history to validate and build.")
    ] = 8,
    path: PathOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the use-case contract's checks on a sample of its data: the declaration, the history's
    checksum, WEEKS weekly files through the record schema, rows at their cutoffs against the
    declared features, dtypes, bounds, label and slices. A broken contract is one line, exit 2."""
    s = settings()
    emit(check_usecase(load_usecase(name), s, weeks=weeks, path=path), as_json, format_check)


# --- apikey --------------------------------------------------------------------------------------
def _key_row(info: apikeys.ApiKeyInfo) -> dict[str, Any]:
    return {
        "key_id": info.key_id,
        "name": info.name,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


@apikey_app.command("create")
@reports_errors
def apikey_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key (e.g. ui, crm-batch).")],
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Register the key held in this file (format rg_<8 hex>_<32 chars>) instead of "
            "generating one; running it again with the same key changes nothing.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key named NAME and print it once (only its salted hash is stored)."""
    given = None
    if from_file is not None:
        try:
            given = from_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise apikeys.ApiKeyError(f"{from_file}: cannot read the key file: {exc}") from None
    created = apikeys.create_key(open_store(settings()), name, key=given)
    result = _key_row(created.info)
    result["created"] = created.created
    if given is None:
        result["key"] = created.key

    def human(r: dict[str, Any]) -> str:
        if "key" in r:
            return (
                f"key id  {r['key_id']}\nname    {r['name']}\nkey     {r['key']}\n"
                "Store the key now: it is shown only this once (send it as X-API-Key)."
            )
        state = "registered" if r["created"] else "already registered, unchanged"
        return f"key {r['key_id']} ({r['name']}) from {from_file}: {state}"

    emit(result, as_json, human)


@apikey_app.command("list")
@reports_errors
def apikey_list(as_json: JsonFlag = False) -> None:
    """List the keys: id, name, created and revoked times (never a key or its hash)."""
    rows = [_key_row(k) for k in apikeys.list_keys(open_store(settings()))]

    def human(items: list[dict[str, Any]]) -> str:
        if not items:
            return "no API keys: create one with `rollguard apikey create NAME`"
        lines = [f"{'key id':<9} {'name':<24} {'created':<32} revoked"]
        for r in items:
            lines.append(
                f"{r['key_id']:<9} {r['name'][:24]:<24} {r['created_at']:<32} "
                f"{r['revoked_at'] or '-'}"
            )
        return "\n".join(lines)

    emit(rows, as_json, human)


@apikey_app.command("revoke")
@reports_errors
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (8 hex characters) to revoke.")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key; model servers refuse it (403) within 30 seconds (their cache TTL)."""
    emit(_key_row(apikeys.revoke_key(open_store(settings()), key_id)), as_json)


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
    except (RollguardError, ValidationError) as exc:
        # The safety net of every command (a refused start above all): one line, exit code 2.
        if isinstance(exc, ValidationError):
            message, kind = (
                f"invalid settings: {describe_validation_error(exc, 'ROLLGUARD_')}",
                "configuration",
            )
        else:
            message, kind = " ".join(str(exc).split()), exc.kind
        if "--json" in args:
            typer.echo(json.dumps({"error": message, "kind": kind}))
        else:
            typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("stopped; run the same command again to resume where it stopped", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


def _register_parts() -> None:
    """Each part adds its own commands; their modules import nothing heavy at import time."""
    register_train(app)
    register_backfill(app)
    register_registry_guard(app)
    register_api(app)
    register_ui(serve_app)
    register_monitoring(app, rule=live_quality_rule, load_model=model_loader)
    register_alerting(stack_app)
    register_stack(app)


_register_parts()
