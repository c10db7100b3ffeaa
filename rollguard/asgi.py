"""ASGI helpers shared by every HTTP service of Rollguard (the model API, the guard service).

:class:`BodySizeLimitMiddleware` is pure ASGI (no ``BaseHTTPMiddleware``): it adds microseconds,
sees chunked bodies as they arrive, and never buffers a response.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
