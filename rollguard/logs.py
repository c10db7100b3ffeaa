"""The one logging set-up of every Rollguard process (docs/logs.md).

Rollguard's own modules log through the standard library (``logging.getLogger(...)``), and so do
uvicorn, MLflow, SQLAlchemy and Alembic. :func:`configure_logging` gives the root logger one
handler whose :class:`structlog.stdlib.ProcessorFormatter` renders every record, whoever wrote it,
through the same processors: the fields of the context (:func:`structlog.contextvars.bind_contextvars`:
``request_id``, ``dag_run_id``, ``task``, ``model_version``), the fields of the process
(:func:`bind_process_fields`: ``service``, ``usecase``, the serving ``model_version``), the redaction of
secrets (:func:`redact_secrets`), then JSON lines or readable console columns
(:func:`resolve_format`). ``structlog.get_logger()`` goes through the same chain.

Nothing happens at import: a service calls :func:`configure_logging` once, at start. Airflow's
task processes keep Airflow's own set-up (its task logs are JSON lines already, and its structlog
chain merges the context's fields; docs/logs.md, "Airflow tasks").
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from rollguard.settings import Settings

#: What a redacted value is replaced with.
REDACTED = "[redacted]"

#: Field names whose values are secrets, whatever their case or separators: passwords, secrets,
#: tokens, API keys, ``Authorization`` and cookie headers, credentials (docs/logs.md, "Redaction").
SECRET_FIELD = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|authori[sz]ation|cookie|credential", re.I
)

#: A password inside a URL (``scheme://user:password@host``): the user name stays.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.I)
#: An HTTP credential inside a message (``Bearer <token>``, ``Basic <base64>``).
_HTTP_CREDENTIAL = re.compile(r"(?P<head>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}", re.I)

#: Fields every line of this process carries unless the line or its context sets them.
_PROCESS_FIELDS: dict[str, str] = {}

LogFormat = Literal["json", "console"]

#: Name of the root handler :func:`configure_logging` installs (and replaces on a second call).
_HANDLER_NAME = "rollguard"


def scrub(text: str) -> str:
    """``text`` with URL passwords and HTTP credentials replaced by :data:`REDACTED`
    (``postgresql://u:[redacted]@db``, ``Bearer [redacted]``)."""
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    # Substring tests first: most lines hold neither word, and ``in`` is far cheaper than a regex.
    if "earer" in text or "EARER" in text or "asic" in text or "ASIC" in text:
        text = _HTTP_CREDENTIAL.sub(rf"\g<head>{REDACTED}", text)
    return text


#: :func:`is_secret_field`'s answers: a process logs a small set of field names.
_SECRET_FIELDS_SEEN: dict[str, bool] = {}


def is_secret_field(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (:data:`SECRET_FIELD`)."""
    seen = _SECRET_FIELDS_SEEN.get(name)
    if seen is None:
        if len(_SECRET_FIELDS_SEEN) > 4096:  # field names made from data: keep the cache bounded
            _SECRET_FIELDS_SEEN.clear()
        seen = _SECRET_FIELDS_SEEN[name] = SECRET_FIELD.search(name) is not None
    return seen


def _redact(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if depth and isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_field(k) else _redact(v, depth - 1)
            for k, v in value.items()
        }
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: a field named like a secret (:data:`SECRET_FIELD`, also inside
    mappings up to 3 levels deep, e.g. a ``headers`` field) becomes :data:`REDACTED`; URL passwords
    and HTTP credentials in string values, the message included, are scrubbed (:func:`scrub`)."""
    for key, value in event_dict.items():
        if key[:1] == "_":  # structlog's own meta fields (the LogRecord)
            continue
        if is_secret_field(key):
            event_dict[key] = REDACTED
        elif type(value) is str:
            event_dict[key] = scrub(value)
        elif isinstance(value, Mapping):
            event_dict[key] = _redact(value, 3)
    return event_dict


def bind_process_fields(**fields: str | None) -> None:
    """Set fields that every later line of this process carries (from any thread), unless the
    line or its context has its own value: e.g. ``model_version`` of the version a model server
    serves now. ``None`` removes a field."""
    for key, value in fields.items():
        if value is None:
            _PROCESS_FIELDS.pop(key, None)
        else:
            _PROCESS_FIELDS[key] = value


def add_process_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the fields of :func:`bind_process_fields`, where the line has none."""
    for key, value in _PROCESS_FIELDS.items():
        event_dict.setdefault(key, value)
    return event_dict


def _drop_uvicorn_colors(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes a coloured copy of each message as ``extra``; the message is already there.
    event_dict.pop("color_message", None)
    return event_dict


#: Control characters (C0, DEL) as visible escapes: ``\n`` or ``\x1b`` in a request path must not
#: start a forged line or drive the terminal in console output (JSON escapes them itself).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
}


def escape_control_characters(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Console lines only: every string field (tracebacks excepted) with its control characters
    written as escapes, so one log call is one terminal line that cannot move the cursor."""
    for key, value in event_dict.items():
        if isinstance(value, str) and key != "exception":
            event_dict[key] = value.translate(_CONTROL)
    return event_dict


def resolve_format(setting: str, stream: TextIO) -> LogFormat:
    """``json`` or ``console`` for ``ROLLGUARD_LOG_FORMAT``: ``auto`` is console when ``stream``
    is a terminal (a person reads it) and JSON lines otherwise (a container, a pipe, a file)."""
    if setting == "json":
        return "json"
    if setting == "console":
        return "console"
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "json"


def shared_processors() -> list[Processor]:
    """The processors every line goes through before it is rendered, in order."""
    # Redaction runs on the fields of the line and of its context, before the fields Rollguard
    # adds itself (process fields, level, logger, time), which hold no secret: fewer to scan.
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        _drop_uvicorn_colors,
        redact_secrets,
        add_process_fields,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def log_formatter(log_format: LogFormat, *, colors: bool = False) -> logging.Formatter:
    """The formatter of Rollguard's lines for a standard-library handler: the
    :func:`shared_processors`, then one JSON object per line (exceptions as an ``exception``
    string) or readable console columns (ANSI colours when ``colors``)."""
    renderer: list[Processor]
    if log_format == "json":
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        renderer = [escape_control_characters, structlog.dev.ConsoleRenderer(colors=colors)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is written (a test runner or a daemon
    may replace it after the set-up), as :data:`logging.lastResort` does."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(
    settings: Settings,
    *,
    service: str,
    stream: TextIO | None = None,
    level: str | None = None,
) -> LogFormat:
    """Route every log record of this process (standard library and structlog) through
    Rollguard's processors to ``stream`` (default: stderr), in the format of
    ``settings.log_format`` at ``level`` (default ``settings.log_level``); every line carries
    ``service`` and ``usecase`` (``settings.usecase``). Replaces the handler an earlier call
    installed, so calling it again leaves one; other handlers (a test's capture) stay. Returns
    the format chosen (:func:`resolve_format`).
    """
    out = stream if stream is not None else sys.stderr
    log_format = resolve_format(settings.log_format, out)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(log_formatter(log_format, colors=resolve_format("auto", out) == "console"))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or settings.log_level)
    # The record attributes no Rollguard line renders are not gathered: the caller's file and
    # line (a walk up the stack), thread, process (the "Optimization" section of Python's logging
    # HOWTO): no walk up the stack per line (docs/logs.md, "Format").
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    bind_process_fields(service=service, usecase=settings.usecase)
    return log_format


def bind_context(**fields: Any) -> None:
    """Bind fields to the current context (this request, this task): every line logged in it,
    by any logger, carries them (:func:`structlog.contextvars.bind_contextvars`)."""
    structlog.contextvars.bind_contextvars(**fields)


def unbind_context(*names: str) -> None:
    """Forget fields of the current context (:func:`structlog.contextvars.unbind_contextvars`)."""
    structlog.contextvars.unbind_contextvars(*names)
