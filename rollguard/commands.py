"""Shared helpers of Rollguard's command line: the ``--json`` flag, result printing, and one-line
errors with exit code 2. Every part's ``cli`` module imports these; the assembly of the one
``rollguard`` entry point (:mod:`rollguard.cli`) sits on top of all parts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from rollguard.errors import RollguardError, describe_validation_error
from rollguard.settings import Settings, get_settings

#: MLflow's HTTP client retries 7 times with exponential backoff (minutes) by default; a person at a
#: terminal needs an answer in seconds. Applied with ``setdefault``: an exported value wins.
CLI_MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # MLflow logs every SQLite schema check at INFO; a person needs warnings only.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


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
    "usecase",
    "lock_timeout",
    "backup",
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
        problems = describe_validation_error(exc, "ROLLGUARD_")
        typer.echo(f"error: invalid settings: {problems}", err=True)
        raise typer.Exit(code=2) from None
