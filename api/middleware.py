"""Pure ASGI middleware: request metrics, and the body size limit (defined in core,
:mod:`rollguard.asgi`, because the guard service uses it too).

Both work on raw ASGI messages (no ``BaseHTTPMiddleware``), so they add microseconds, see chunked
bodies as they arrive, and never buffer a response.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import CLIENT_CLOSED_REQUEST, KNOWN_METHODS, UNMATCHED, ServingMetrics
from rollguard.asgi import BodySizeLimitMiddleware

__all__ = ["BodySizeLimitMiddleware", "MetricsMiddleware"]


class MetricsMiddleware:
    """Counts every HTTP request by route *template* (``scope["route"].path`` after routing), method
    and status, and observes its duration in seconds. A request that matched no route is counted
    as ``route="unmatched"``, so unknown paths cannot create new series."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            # Answered before routing (413 from the body limit): find the template ourselves.
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match is Match.FULL:
                    route = candidate
                    break
        return getattr(route, "path", None) or UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # the application raised before answering
        answered = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
            if not answered:
                # Returned without answering: the client hung up while sending its body.
                status = CLIENT_CLOSED_REQUEST
        finally:
            template = self._template(scope)
            method = scope.get("method", "GET")
            method = method if method in KNOWN_METHODS else "other"
            key = (template, method, status)
            children = self._children.get(key)
            if children is None:
                # Label sets are bounded (see the class docstring), so this cache is too; it
                # saves prometheus-client's label lookup and lock on every request.
                children = self._children[key] = (
                    self.metrics.http_requests.labels(template, method, str(status)),
                    self.metrics.http_duration.labels(template),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
