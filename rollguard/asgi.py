"""ASGI plumbing shared by Rollguard's HTTP services (the model server and the guard service):
the request id of every response and of every log line written while answering it, one access
line per request (docs/logs.md), and a request-body size limit that answers in Rollguard's own
error shape."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from rollguard.logs import bind_context

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


def port_problem(host: str, port: int, setting: str) -> str | None:
    """Why a server cannot listen on ``host:port`` (e.g. "address already in use"), as one line
    naming ``setting``, or None when it can. Binds and closes a socket the way uvicorn does
    (``SO_REUSEADDR``), so a refused start says why before the server prints anything."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc} ({setting})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc} ({setting})"
    return None


#: A client's ``X-Request-ID`` is kept when it is 1 to 64 characters of letters, digits and
#: ``. _ : -`` (64: the prediction log's ``request_id`` column); any other value is replaced.
REQUEST_ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,64}")

_REQUEST_ID: ContextVar[str | None] = ContextVar("rollguard_request_id", default=None)

#: One INFO line per answered request (docs/logs.md, "Access lines"): method, path without its
#: query string, status, duration. Never a header or a body.
access_log = logging.getLogger("rollguard.access")


def new_request_id() -> str:
    """A new request id: 32 lowercase hex characters, 128 random bits (the shape of a uuid4 hex
    string, a third of its cost: ``os.urandom`` without building a ``UUID``)."""
    return os.urandom(16).hex()


def current_request_id() -> str:
    """The id of the request being answered (set by :class:`RequestIdMiddleware`), or a new one
    (:func:`new_request_id`) outside a request."""
    return _REQUEST_ID.get() or new_request_id()


class RequestIdMiddleware:
    """Gives every HTTP request an id and puts it in the ``X-Request-ID`` header of its response,
    whatever answers it (a route, an error handler, another middleware, a 404 or 405). The id is
    bound to the request's logging context (field ``request_id`` of every line written while
    answering it); with ``access_lines`` (``ROLLGUARD_LOG_ACCESS``), one access line
    (:data:`access_log`) is written when the response starts.

    The id is the client's ``X-Request-ID`` when it matches :data:`REQUEST_ID_PATTERN`, else a
    new one (:func:`new_request_id`). Code answering the request reads it with :func:`current_request_id`
    (a context variable: each request runs in its own task, and thread-pool calls copy it). A
    header the application set itself is replaced, so body and header always agree. Pure ASGI:
    one regex match and one header-list copy per request.
    """

    def __init__(self, app: ASGIApp, *, access_lines: bool = False) -> None:
        self.app = app
        self.access_lines = access_lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                if REQUEST_ID_PATTERN.fullmatch(value):
                    request_id = value.decode("ascii")
                break
        if request_id is None:
            request_id = new_request_id()
        _REQUEST_ID.set(request_id)
        # Each request runs in its own task with a copy of the server's context: the binding
        # ends with the request.
        bind_context(request_id=request_id)
        header = (b"x-request-id", request_id.encode("ascii"))
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append(header)
                message["headers"] = headers
                if self.access_lines and access_log.isEnabledFor(logging.INFO):
                    _log_access(scope, message["status"], started)
            await send(message)

        await self.app(scope, receive, send_with_id)


def _log_access(scope: Scope, status: int, started: float) -> None:
    access_log.info(
        "%s %s %d",
        scope["method"],
        scope["path"],
        status,
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )


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
            "request_id": current_request_id(),
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
