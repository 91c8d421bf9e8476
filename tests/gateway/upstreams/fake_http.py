"""Test helper: a scriptable aiohttp upstream on port 0 for HTTP edge cases real servers rarely hit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request the fake upstream received."""

    method: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeUpstream:
    url: str
    seen: list[Seen] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fake_upstream(post: Handler, get: Handler | None = None, path: str = "/mcp") -> AsyncIterator[FakeUpstream]:
    """Serve `post` (and `get`, else 405) at `path`; DELETE answers 200. Records every request."""
    fake = FakeUpstream(url="")

    async def record(request: web.Request) -> web.StreamResponse:
        fake.seen.append(Seen(request.method, dict(request.headers), await request.read()))
        if request.method == "POST":
            return await post(request)
        if request.method == "GET" and get is not None:
            return await get(request)
        if request.method == "DELETE":
            return web.Response(status=200)
        return web.Response(status=405)

    app = web.Application()
    app.router.add_route("*", path, record)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def sse_response(request: web.Request, events: list[bytes], *, drop: bool = False) -> web.StreamResponse:
    """Answer with an SSE stream of pre-framed events; `drop` cuts the connection afterwards."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(event)
    if drop and request.transport is not None:
        request.transport.abort()
        return response
    await response.write_eof()
    return response
