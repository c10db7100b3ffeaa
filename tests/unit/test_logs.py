"""The logging set-up (rollguard/logs.py, docs/logs.md): redaction of secrets, the console/JSON
choice, and the fields of the context and of the process on standard-library lines."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from rollguard import logs
from rollguard.settings import Settings


@pytest.fixture
def reset_logging() -> Iterator[None]:
    """Leaves the root logger, structlog and the process fields as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    fields = dict(logs._PROCESS_FIELDS)
    structlog.contextvars.clear_contextvars()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logs._PROCESS_FIELDS.clear()
        logs._PROCESS_FIELDS.update(fields)
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


def test_fields_named_like_secrets_are_redacted_at_any_case_and_depth() -> None:
    event = {
        "event": "calling the registry",
        "password": "p1",
        "MLFLOW_TRACKING_PASSWORD": "p2",
        "api_key": "k1",
        "X-API-Key": "k2",
        "Authorization": "Bearer abcdefgh",
        "admin_token": "t1",
        "client_secret": "s1",
        "headers": {"cookie": "c1", "accept": "json", "inner": {"x-api-key": "k3"}},
        "key_id": "crm-1a2b",
        "model_version": "3",
    }
    out = logs.redact_secrets(None, "info", dict(event))
    for key in ("password", "MLFLOW_TRACKING_PASSWORD", "api_key", "X-API-Key", "Authorization"):
        assert out[key] == logs.REDACTED, key
    assert out["admin_token"] == out["client_secret"] == logs.REDACTED
    assert out["headers"] == {
        "cookie": logs.REDACTED,
        "accept": "json",
        "inner": {"x-api-key": logs.REDACTED},
    }
    # What is not a secret stays: a key's id, the version, the message.
    assert out["key_id"] == "crm-1a2b"
    assert out["model_version"] == "3"
    assert out["event"] == "calling the registry"


def test_url_passwords_and_http_credentials_are_scrubbed_from_messages() -> None:
    out = logs.redact_secrets(
        None,
        "warning",
        {
            "event": "store unreachable: postgresql+psycopg://rollguard:hunter2secret@db:5432/rg "
            "(sent Authorization: Bearer eyJhbGciOi.payload.sig)",
            "detail": "http://user:pa55word@mlflow:5000/api",
        },
    )
    assert "hunter2secret" not in out["event"] and "eyJhbGciOi" not in out["event"]
    assert "postgresql+psycopg://rollguard:[redacted]@db:5432/rg" in out["event"]
    assert "Bearer [redacted]" in out["event"]
    assert out["detail"] == "http://user:[redacted]@mlflow:5000/api"
    # A URL without a password is left alone.
    assert logs.scrub("see http://mlflow:5000/#/models") == "see http://mlflow:5000/#/models"


def test_auto_format_is_console_on_a_terminal_and_json_elsewhere() -> None:
    pipe = io.StringIO()
    assert logs.resolve_format("auto", pipe) == "json"
    assert logs.resolve_format("console", pipe) == "console"
    main, replica = os.openpty()  # a real terminal device
    try:
        with os.fdopen(replica, "w", closefd=False) as tty:
            assert logs.resolve_format("auto", tty) == "console"
            assert logs.resolve_format("json", tty) == "json"
    finally:
        os.close(main)
        os.close(replica)


def test_settings_accept_any_case_and_refuse_unknown_values(home: Path) -> None:
    s = Settings(home=home, log_level="debug", log_format="JSON")  # type: ignore[arg-type]
    assert (s.log_level, s.log_format) == ("DEBUG", "json")
    with pytest.raises(ValueError, match="log_format"):
        Settings(home=home, log_format="xml")  # type: ignore[arg-type]


def test_stdlib_lines_carry_context_and_process_fields_as_json(
    home: Path, reset_logging: None
) -> None:
    out = io.StringIO()
    settings = Settings(home=home, log_format="auto", usecase="hotel")
    assert logs.configure_logging(settings, service="api", stream=out) == "json"
    logs.bind_process_fields(model_version="7")
    logs.bind_context(request_id="req-1")
    logging.getLogger("uvicorn.error").info("started %s", "worker", extra={"color_message": "x"})
    structlog.get_logger("rollguard.test").info("swap", model_version="8", api_key="k-123456")
    logging.getLogger("rollguard.test").debug("below the level")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "started worker"
    assert (first["logger"], first["level"], first["service"]) == ("uvicorn.error", "info", "api")
    assert (first["usecase"], first["request_id"], first["model_version"]) == (
        "hotel",
        "req-1",
        "7",
    )
    assert "color_message" not in first
    # A line's own value wins over the process's.
    assert second["model_version"] == "8"
    assert second["api_key"] == logs.REDACTED
    # A second set-up replaces the first handler; it does not add one.
    logs.configure_logging(settings.model_copy(update={"log_format": "console"}), service="api")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "rollguard"]
    assert len(ours) == 1


def test_console_lines_escape_control_characters(reset_logging: None) -> None:
    """A request path with a newline or an ANSI escape stays one inert console line (no forged
    line, no cursor movement); the JSON renderer escapes them by itself."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.log_formatter("console"))
    logger = logging.getLogger("rollguard.test.console")
    logger.addHandler(handler)
    try:
        logger.warning("GET /x\n2026-12-03T00:00:00Z [critical ] forged \x1b[2J\r")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out
    assert "\\n2026-12-03" in out and "\\x1b[2J" in out
