"""A minimal, fast MCP server for benchmarks: `echo(text)` and `blob(n)` over Streamable HTTP or stdio.

Hand-written (no SDK) so the upstream costs little CPU; answers are JSON, results cached and the id
spliced in. Run as a script too: `python3 bench/upstream.py --transport stdio|http [--port 0]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

PROTOCOL = "2025-06-18"
TOOLS = [
    {"name": "echo", "description": "Return the text.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "blob", "description": "Return n ASCII bytes of text.",
     "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
]
_blobs: dict[int, bytes] = {}


def _result(method: str, params: dict[str, Any]) -> bytes | None:
    """The encoded `result` of a request, or None for a method we do not know."""
    if method == "tools/call":
        args = params.get("arguments") or {}
        if params.get("name") == "blob":
            n = min(int(args.get("n", 0)), 64 * 1024 * 1024)
            if n not in _blobs:
                _blobs[n] = orjson.dumps({"content": [{"type": "text", "text": "x" * n}], "isError": False})
            return _blobs[n]
        return orjson.dumps({"content": [{"type": "text", "text": str(args.get("text", ""))}], "isError": False})
    if method == "initialize":
        return orjson.dumps({"protocolVersion": params.get("protocolVersion", PROTOCOL),
                             "capabilities": {"tools": {"listChanged": False}},
                             "serverInfo": {"name": "bench-upstream", "version": "1.0"}})
    if method == "tools/list":
        return orjson.dumps({"tools": TOOLS})
    if method == "ping":
        return b"{}"
    return None


def answer(raw: bytes) -> bytes | None:
    """The response line for one incoming message; None for notifications and responses."""
    message = orjson.loads(raw)
    if "method" not in message or "id" not in message:
        return None
    request_id = orjson.dumps(message["id"])
    result = _result(message["method"], message.get("params") or {})
    if result is None:
        return b'{"jsonrpc":"2.0","id":' + request_id + b',"error":{"code":-32601,"message":"Method not found"}}'
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"result":' + result + b"}"


def serve_stdio() -> None:
    """Newline-delimited JSON on stdin/stdout, one message at a time (tools answer instantly)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    for line in stdin:
        if not line.strip():
            continue
        reply = answer(line)
        if reply is not None:
            stdout.write(reply + b"\n")
            stdout.flush()


async def serve_http(host: str, port: int) -> None:
    from aiohttp import web

    async def post(request: web.Request) -> web.Response:
        reply = answer(await request.read())
        if reply is None:
            return web.Response(status=202)
        return web.Response(body=reply, content_type="application/json")

    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=405)

    async def delete(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", refuse)
    app.router.add_delete("/mcp", delete)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"LISTENING http://{host}:{bound}/mcp", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        serve_stdio()
        return
    try:
        import uvloop

        uvloop.run(serve_http(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
