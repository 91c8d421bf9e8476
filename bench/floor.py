"""The floor any aiohttp relay stands on: POST bodies forwarded byte for byte to the upstream, nothing else.

No parsing, metering, sessions or store: one aiohttp server and one ClientSession on uvloop, the same stack
Tollgate runs on. Tollgate measured against this row is what its own logic costs; this row measured against
a direct connection is what one more HTTP hop in Python costs on this machine.
Run as a script: `python3 bench/floor.py --upstream http://127.0.0.1:PORT/mcp` (prints `LISTENING <url>`).
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

FORWARDED = ("Content-Type", "Accept", "Mcp-Session-Id", "MCP-Protocol-Version")


def make_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    state: dict[str, aiohttp.ClientSession] = {}

    async def client_ctx(_: web.Application):  # type: ignore[no-untyped-def]
        state["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await state["http"].close()

    async def relay(request: web.Request) -> web.Response:
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        async with state["http"].post(upstream, data=await request.read(), headers=headers) as answer:
            body = await answer.read()
            out = {k: answer.headers[k] for k in ("Content-Type", "Mcp-Session-Id") if k in answer.headers}
            return web.Response(body=body, status=answer.status, headers=out)

    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/mcp", relay)
    return app


async def serve(upstream: str, port: int) -> None:
    runner = web.AppRunner(make_app(upstream), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"LISTENING http://127.0.0.1:{bound}/mcp", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.upstream, args.port))
