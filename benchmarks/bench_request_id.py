"""Cost of :class:`rollguard.asgi.RequestIdMiddleware` per request, in microseconds: the same
trivial ASGI app called bare and wrapped, 200,000 times each, best of 3 (no server, no network:
only the middleware's own work, a header scan, one regex match or a new id, the binding of the
id to the request's logging context (docs/logs.md), one header-list copy; access lines off, their
default; their cost is ``benchmarks/bench_api.py --logs-only``).

Rerun: uv run python benchmarks/bench_request_id.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rollguard.asgi import RequestIdMiddleware

N = 200_000


async def _app(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"x-model-version", b"3")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _send(message: Any) -> None:
    return None


def _scope(extra: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    base = [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"300")]
    return {"type": "http", "method": "POST", "path": "/v1/predict", "headers": base + extra}


async def _per_request(app: Any, extra: list[tuple[bytes, bytes]]) -> float:
    start = time.perf_counter()
    for _ in range(N):
        await app(_scope(extra), _receive, _send)
    return (time.perf_counter() - start) / N * 1e6


async def main() -> None:
    wrapped = RequestIdMiddleware(_app)
    for label, extra in (("no id", []), ("client id", [(b"x-request-id", b"client-abc.1:x_y")])):
        bare = min([await _per_request(_app, extra) for _ in range(3)])
        with_id = min([await _per_request(wrapped, extra) for _ in range(3)])
        print(f"{label}: {bare:.2f} us bare, {with_id:.2f} us wrapped, +{with_id - bare:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
