"""API keys on the model server: the check in front of the predict, explain and entity routes.

When ``ROLLGUARD_API_KEYS`` is true, each protected route's ASGI app is wrapped by
:class:`KeyGate` (after routing, so only those routes pay for it; health, metrics, ``/v1/model``,
``/v1/usecase`` and the docs stay open). A request must carry ``X-API-Key: rg_<key_id>_<secret>``:

- no header, or a value that is not of the key format: **401** ``missing_api_key`` /
  ``malformed_api_key`` with ``WWW-Authenticate: ApiKey header="X-API-Key"`` (RFC 9110: 401 means
  "no usable credentials");
- a well-formed key that is not in the store, or is revoked: **403** ``invalid_api_key`` /
  ``revoked_api_key`` (credentials were given and are refused);
- over the key's rate (``ROLLGUARD_API_KEY_RATE``, a sliding window counter of the ``limits``
  library in process memory): **429** ``rate_limited`` with ``Retry-After`` in whole seconds;
- the key store cannot be read and this key id was never verified: **503**
  ``key_store_unavailable`` with ``Retry-After``.

All in the API's one error envelope. Keys are verified through
:class:`rollguard.apikeys.KeyVerifier` (in memory, store read at most once per key id and 30 s),
and the accepted key id is handed to the route in :data:`CURRENT_KEY_ID` (the prediction log
records it). Every protected request is counted in ``rollguard_api_requests_by_key_total``; with
keys off the gate only counts (``key_id="anonymous"``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import anyio
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from rollguard.apikeys import KEY_FORMAT, KeyVerifier, Outcome
from rollguard.errors import ConfigurationError

#: The key id of the request being served (None when keys are off); set by :class:`KeyGate`.
CURRENT_KEY_ID: ContextVar[str | None] = ContextVar("rollguard_api_key_id", default=None)
#: Request header carrying the key.
HEADER = "X-API-Key"
_HEADER_RAW = HEADER.lower().encode()
_CHALLENGE = {"WWW-Authenticate": f'ApiKey header="{HEADER}"'}


#: A period of zero units ("1/0 minute"), which ``limits`` silently reads as one unit.
_ZERO_PERIOD = re.compile(r"(?:/|\bper)\s*0+\s*[A-Za-z]", re.IGNORECASE)


def parse_rate(rate: str) -> RateLimitItem:
    """The ``limits`` item of ``ROLLGUARD_API_KEY_RATE`` (e.g. ``600/minute``).

    Raises:
        ConfigurationError: the value is not in the ``limits`` notation, or allows no request
            (``0/minute``) or names a zero period (``1/0 minute``).
    """
    try:
        item = parse(rate)
    except ValueError:
        item = None
    # limits reads "1/0 minute" as 1/minute and accepts "0/minute" (every request refused).
    if item is None or item.amount < 1 or _ZERO_PERIOD.search(rate):
        raise ConfigurationError(
            f"ROLLGUARD_API_KEY_RATE={rate!r} is not a rate such as 600/minute or 10/second "
            "(at least 1 request per period of at least 1 unit)"
        )
    return item


class KeyPolicy:
    """What every gate of one server shares: whether keys are required, the verifier, the rate
    limiter (``limits``' sliding window counter over in-memory storage, one per key id: two
    counters per key whatever the rate, where a moving window keeps one timestamp per admitted
    request and costs more per hit the higher the rate) and the
    counter."""

    def __init__(
        self,
        required: bool,
        verifier: KeyVerifier,
        rate: str,
        counter: Counter,
        error: Callable[..., Any],
    ) -> None:
        self.required = required
        self.verifier = verifier
        self.item = parse_rate(rate)
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.counter = counter
        self.error = error
        self._children: dict[tuple[str, str, str], Any] = {}

    def count(self, key_id: str, route: str, outcome: str) -> None:
        key = (key_id, route, outcome)
        child = self._children.get(key)
        if child is None:  # bounded: key ids in the store x protected routes x outcomes
            child = self._children[key] = self.counter.labels(key_id, route, outcome)
        child.inc()

    def retry_after(self, key_id: str) -> int:
        """Whole seconds until the key's window lets one more request through (at least 1)."""
        stats = self.limiter.get_window_stats(self.item, key_id)
        return max(1, math.ceil(stats.reset_time - time.time()))


class KeyGate:
    """ASGI wrapper of one protected route (see the module docstring)."""

    def __init__(self, app: ASGIApp, policy: KeyPolicy, route: str) -> None:
        self.app = app
        self.policy = policy
        self.route = route

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        error: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        details = (
            [{"field": f"header.{HEADER}", "problem": message}] if status in (401, 403) else []
        )
        response = self.policy.error(status, error, message, details, headers=headers)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.policy
        if not policy.required:
            policy.count("anonymous", self.route, "accepted")
            await self.app(scope, receive, send)
            return
        key = None
        for name, value in scope["headers"]:
            if name == _HEADER_RAW:
                key = value.decode("latin-1").strip()
                break
        if not key:
            policy.count("none", self.route, "missing")
            await self._refuse(
                scope, receive, send, 401, "missing_api_key",
                f"this route needs an API key: send it in the {HEADER} header",
                _CHALLENGE,
            )  # fmt: skip
            return
        verdict = policy.verifier.cached(key)
        if verdict is None:
            try:
                verdict = await anyio.to_thread.run_sync(policy.verifier.verify, key)
            except Exception:  # noqa: BLE001 - any store failure is "unavailable" to the client
                await self._refuse(
                    scope, receive, send, 503, "key_store_unavailable",
                    "API keys cannot be checked right now (key store unreachable); try again",
                    {"Retry-After": "5"},
                )  # fmt: skip
                return
        outcome = verdict.outcome
        if outcome is Outcome.MALFORMED:
            policy.count("none", self.route, "malformed")
            await self._refuse(
                scope, receive, send, 401, "malformed_api_key",
                f"not an API key: keys have the form {KEY_FORMAT}",
                _CHALLENGE,
            )  # fmt: skip
            return
        if outcome is Outcome.UNKNOWN:
            policy.count("unknown", self.route, "unknown")
            await self._refuse(
                scope, receive, send, 403, "invalid_api_key", "this API key is not valid"
            )  # fmt: skip
            return
        key_id = verdict.key_id or "unknown"
        if outcome is Outcome.REVOKED:
            policy.count(key_id, self.route, "revoked")
            await self._refuse(
                scope, receive, send, 403, "revoked_api_key",
                f"API key {key_id} was revoked: ask for a new key",
            )  # fmt: skip
            return
        if not policy.limiter.hit(policy.item, key_id):
            policy.count(key_id, self.route, "rate_limited")
            retry = policy.retry_after(key_id)
            await self._refuse(
                scope, receive, send, 429, "rate_limited",
                f"API key {key_id} is over its rate of {policy.item}; retry in {retry} s",
                {"Retry-After": str(retry)},
            )  # fmt: skip
            return
        policy.count(key_id, self.route, "accepted")
        token = CURRENT_KEY_ID.set(key_id)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_KEY_ID.reset(token)
