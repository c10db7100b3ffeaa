"""The UI's only way to the model: an httpx client of the Rollguard REST API (docs/api.md).

Every failure becomes one :class:`ApiError` whose ``kind`` says what happened (timeout,
unreachable, validation, not_found, not_ready, too_large, unavailable, server, not_rollguard)
and whose :func:`ui.formatting.error_message` is the sentence shown in the page.

Retries (tenacity): only when the connection was refused or the name did not resolve
(:class:`httpx.ConnectError`) — the request never reached the API, so sending it again cannot do
anything twice, and a refusal is quick, so the retries do not stretch the wait. Answers, read timeouts and 5xx are never retried: every route the UI calls is
read-only or a pure function of its input (``/v1/predict``, ``/v1/explain``), but
``/v1/predict`` and the entity route write each scored row to the prediction log, so repeating
a request the API may have received could log a row twice; and retrying a read timeout would
multiply the wait the user configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from rollguard.errors import ConfigurationError

#: Connection failures worth one more try (the request was never sent, and they fail fast).
_CONNECT_ERRORS = (httpx.ConnectError,)

_KINDS = {
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    413: "too_large",
    422: "validation",
    429: "rate_limited",
}


@dataclass
class ApiError(Exception):
    """A call to the API that did not give the expected answer.

    Attributes:
        kind: ``timeout``, ``unreachable``, ``validation`` (422), ``not_found`` (404),
            ``unauthorized`` (401/403: the UI's API key is missing, unknown or revoked),
            ``rate_limited`` (429),
            ``too_large`` (413), ``not_ready`` (503 without a serving model), ``unavailable``
            (another 503: no snapshot, store down), ``server`` (5xx), ``http`` (another 4xx),
            ``not_rollguard`` (the address answered, but not with the API's JSON).
        message: what the API (or the transport) said.
        url: the API base URL that was called.
        timeout: the configured timeout, seconds.
        status: HTTP status, when an answer came.
        error: the API's machine-readable ``error`` field, when present.
        details: the API's ``[{"field", "problem"}]``.
        retry_after: the ``Retry-After`` header, seconds, when present.
    """

    kind: str
    message: str
    url: str
    timeout: float
    status: int | None = None
    error: str | None = None
    details: list[dict[str, str]] = field(default_factory=list)
    retry_after: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def read_api_key(path: Path | None) -> str | None:
    """The key in ``path`` (``ROLLGUARD_API_KEY_FILE``; whitespace stripped), or None when no
    file is configured.

    Raises:
        ConfigurationError: the file cannot be read or is empty.
    """
    if path is None:
        return None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"ROLLGUARD_API_KEY_FILE={path}: cannot read it: {exc}") from None
    if not key:
        raise ConfigurationError(f"ROLLGUARD_API_KEY_FILE={path} is empty")
    return key


class RollguardClient:
    """A synchronous client of the Rollguard REST API.

    Args:
        base_url: the API's base URL (``Settings.ui_api_url``).
        timeout: seconds to wait for each answer (connect, write, read and pool alike;
            ``Settings.ui_timeout_seconds``).
        connect_attempts: tries when the connection cannot be established (exponential wait
            0.2 s, 0.4 s, ... capped at 2 s between them).
        transport: an httpx transport (default: the network).
        before_retry: called with tenacity's retry state before each pause between connect
            attempts (logging; tests use it to bring a server up between attempts).
        api_key: the UI's own API key, sent as ``X-API-Key`` on every call (needed when the API
            runs with ``ROLLGUARD_API_KEYS=true``; see :func:`read_api_key`).
    """

    def __init__(
        self,
        base_url: str,
        timeout: float,
        *,
        connect_attempts: int = 3,
        transport: httpx.BaseTransport | None = None,
        before_retry: Callable[[Any], None] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.connect_attempts = connect_attempts
        self._before_retry = before_retry
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout),
            transport=transport,
            headers={
                "Accept": "application/json",
                "User-Agent": "rollguard-ui",
                **({"X-API-Key": api_key} if api_key else {}),
            },
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- routes ------------------------------------------------------------------------------
    def usecase(self) -> dict[str, Any]:
        """``GET /v1/usecase``: the declarations the pages are built from (title, task,
        subject, entity column, route templates, label, money unit, features)."""
        return self._call("GET", "/v1/usecase")

    def entity_prediction(self, usecase: dict[str, Any], entity_id: int) -> dict[str, Any]:
        """``GET /v1/{subject}/{id}/prediction`` (template from :meth:`usecase`): score,
        features, version; rank and targeted (classification) or the realized label
        (regression)."""
        path = usecase["entity_route"].format(**{usecase["entity_column"]: int(entity_id)})
        return self._call("GET", path)

    def entity_history(
        self, usecase: dict[str, Any], entity_id: int, limit: int = 100
    ) -> dict[str, Any]:
        """``GET /v1/{subject}/{id}/history``: the entity's records newest first, with totals."""
        path = usecase["history_route"].format(**{usecase["entity_column"]: int(entity_id)})
        return self._call("GET", path, params={"limit": limit})

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """``POST /v1/predict``: one score per feature row, and the model version."""
        return self._call("POST", "/v1/predict", json={"rows": rows})

    def explain(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """``POST /v1/explain``: per-row score, base value and per-feature contributions."""
        return self._call("POST", "/v1/explain", json={"rows": rows})

    def model_info(self) -> dict[str, Any]:
        """``GET /v1/model``: serving version, lineage and gate evidence tags."""
        return self._call("GET", "/v1/model")

    def model_history(self, limit: int = 20) -> dict[str, Any]:
        """``GET /v1/model/history``: recent champion alias moves with reasons."""
        return self._call("GET", "/v1/model/history", params={"limit": limit})

    # --- transport ---------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in Retrying(
            retry=retry_if_exception_type(_CONNECT_ERRORS),
            stop=stop_after_attempt(self.connect_attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            before_sleep=self._before_retry,
            reraise=True,
        ):
            with attempt:
                return self._http.request(method, path, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover - Retrying re-raises

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        def fail(kind: str, message: str, **more: Any) -> ApiError:
            return ApiError(kind, message, self.base_url, self.timeout, **more)

        try:
            resp = self._send(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise fail("unreachable", f"connection timed out: {exc}") from exc
            raise fail("timeout", f"no answer within {self.timeout:g} s") from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.NetworkError) as exc:
            raise fail("unreachable", str(exc) or type(exc).__name__) from exc
        except httpx.HTTPError as exc:  # invalid URL, unsupported protocol, ...
            raise fail("unreachable", f"{type(exc).__name__}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.is_success:
            if not isinstance(body, dict):
                raise fail(
                    "not_rollguard",
                    f"HTTP {resp.status_code} without a JSON object",
                    status=resp.status_code,
                )
            return body
        if not isinstance(body, dict) or "error" not in body:
            raise fail(
                "not_rollguard",
                f"HTTP {resp.status_code} without the API's error body",
                status=resp.status_code,
            )
        status = resp.status_code
        error = str(body.get("error"))
        if status == 503:
            kind = "not_ready" if error == "not_ready" else "unavailable"
        elif status in _KINDS:
            kind = _KINDS[status]
        elif status >= 500:
            kind = "server"
        else:
            kind = "http"
        details = [
            {"field": str(d.get("field", "")), "problem": str(d.get("problem", ""))}
            for d in body.get("details") or []
            if isinstance(d, dict)
        ]
        raise fail(
            kind,
            str(body.get("message", "")),
            status=status,
            error=error,
            details=details,
            retry_after=resp.headers.get("retry-after"),
        )
