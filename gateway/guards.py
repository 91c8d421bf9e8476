"""The DNS-rebinding guard in front of every route: which Host names and browser Origins are answered.

A page on another site that rebinds its name to 127.0.0.1 reaches a loopback server as same-origin, so the
Origin check alone cannot stop it from reading the API or posting telemetry: the Host header can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config import ServerConfig, is_loopback, parse_listen
from gateway.rejections import Rejections

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """A configured Origin, or any loopback one (http://localhost:3000, http://127.0.0.1, http://[::1])."""
    if origin in allowed or "*" in allowed:
        return True
    try:
        return is_loopback(urlsplit(origin).hostname or "")
    except ValueError:  # "http://[::1" and the like: not an origin anyone may send from
        return False


def host_of(header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'Example.org' -> 'example.org'."""
    try:
        return (urlsplit(f"//{header}").hostname or "").lower()
    except ValueError:  # an unbalanced "[": no host name at all, so no loopback one
        return header.lower()


def allowed_hosts(server: ServerConfig) -> frozenset[str] | None:
    """The Host names answered; None (any) when Tollgate listens beyond loopback, where tokens guard it."""
    if not is_loopback(parse_listen(server.listen)[0]):
        return None
    from_origins = {urlsplit(o).hostname or "" for o in server.allowed_origins if o != "*"}
    return frozenset({h.lower() for h in server.allowed_hosts} | {h.lower() for h in from_origins} - {""})


def _refusal(request: web.Request, rejections: Rejections, message: str, status: int = 403) -> web.Response:
    rejections.refused(request, status, message)
    if request.path == "/mcp":  # MCP clients expect a JSON-RPC error body
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
    return web.json_response({"error": message}, status=status)


def rebinding_guard(server: ServerConfig, rejections: Rejections) -> Middleware:
    """Middleware: refuse a Host that is not loopback or allowed (when bound to loopback), and a foreign Origin."""
    hosts = allowed_hosts(server)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = host_of(request.host)
        if hosts is not None and not is_loopback(host) and host not in hosts:
            return _refusal(request, rejections, f"Forbidden: Host {host[:100]!r} is not served here "
                            "(Tollgate answers loopback names and server.allowed_hosts)")
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, server.allowed_origins):
            return _refusal(request, rejections, f"Forbidden: Origin {origin[:100]!r} is not allowed "
                            "(Tollgate answers loopback origins and server.allowed_origins)")
        return await handler(request)

    return guard
