"""Pure ASGI middleware: request metrics and the body size limit.

Both work on raw ASGI messages (no ``BaseHTTPMiddleware``), so they add microseconds, see chunked
bodies as they arrive, and never buffer a response.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import CLIENT_CLOSED_REQUEST, KNOWN_METHODS, UNMATCHED, ServingMetrics


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


class BodySizeLimitMiddleware:
    """Answers 413 (JSON body) when a request body is larger than ``max_bytes``.

    A ``Content-Length`` above the limit is refused before reading; one within the limit passes
    untouched (the HTTP parser delivers exactly that many bytes). A body without one
    (``Transfer-Encoding: chunked``) is read message by message, counting bytes, up to the limit,
    then replayed to the application. The whole body is held in memory once, which the
    JSON parser would do anyway.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared, chunked = -1, False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if declared >= 0 and not chunked:
            # The HTTP parser delivers exactly Content-Length bytes of body, which is within the
            # limit: nothing to count.
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False
        whole = b"".join(chunks)

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body: dict[str, Any] = {
            "error": "payload_too_large",
            "message": f"request body is larger than the limit of {self.max_bytes} bytes",
            "details": [{"field": "body", "problem": f"more than {self.max_bytes} bytes"}],
            "request_id": uuid.uuid4().hex,
        }
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"x-request-id", body["request_id"].encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
