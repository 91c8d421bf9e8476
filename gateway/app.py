"""Builds the one aiohttp application: `/mcp`, `/healthz`, and the routes other packages add.

`gateway.cli` composes the store, ingest and UI around what is built here; this module imports
none of them.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway import jsonrpc
from gateway.config import Config
from gateway.downstream import McpEndpoint
from gateway.guards import rebinding_guard
from gateway.hub import Hub, TransportFactory
from gateway.records import Observer
from gateway.rejections import REJECTIONS_KEY, Rejections
from gateway.relay import Policy, Relay
from gateway.upstreams.factory import make_transport

HUB_KEY = web.AppKey("hub", Hub)
RELAY_KEY = web.AppKey("relay", Relay)


def create_app(config: Config, *, observers: list[Observer] | None = None, policy: Policy | None = None,
               transport_factory: TransportFactory = make_transport,
               extend: Callable[[web.Application, Hub], None] | None = None) -> web.Application:
    """The gateway app; upstreams start with the app and stop with it."""
    rejections = Rejections()
    # Without tokens the bearer guard has nothing to check: leave it out of every request's path.
    bearer = [_bearer_guard(config.server.auth_tokens, rejections)] if config.server.auth_tokens else []
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[rejections.middleware(), rebinding_guard(config.server, rejections), *bearer,
                                       _json_errors])
    hub = Hub(config, transport_factory, observers)
    relay = Relay(hub, policy)
    app[HUB_KEY] = hub
    app[RELAY_KEY] = relay
    app[REJECTIONS_KEY] = rejections
    McpEndpoint(hub, relay, config.server, rejections).register(app)
    app.router.add_get("/healthz", _healthz)
    if extend is not None:
        extend(app, hub)
    app.cleanup_ctx.append(_hub_lifetime)
    app.on_shutdown.append(_end_sessions)
    return app


# /mcp and the OTLP routes check tokens themselves (with protocol-shaped errors); pages carry no data.
GUARDED_PREFIXES = ("/api/", "/metrics")


def _bearer_guard(tokens: tuple[str, ...], rejections: Rejections) -> Any:
    """When tokens are configured, the JSON API and /metrics need one as a Bearer header."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if tokens and request.path.startswith(GUARDED_PREFIXES) and not has_token(request, tokens):
            problem = "bearer token not accepted" if "Authorization" in request.headers else "bearer token required"
            rejections.refused(request, 401, problem)
            return web.json_response({"error": f"unauthorized: {problem}"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="tollgate"'})
        response: web.StreamResponse = await handler(request)
        return response

    return guard


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A path no route serves (or not with this method) answers in JSON like every route's own errors, not with
    aiohttp's text/plain page: a method /mcp does not take in a JSON-RPC error body, the rest as `{"error": ...}`
    (the API's shape), with the Allow header. The OTLP routes answer their own (a Status, per OTLP/HTTP)."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        if request.path == "/mcp" and exc.status == 405:
            body = jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, f"Method Not Allowed: {request.method[:20]} "
                                      "(/mcp takes POST, GET and DELETE)")
            return web.Response(status=405, body=jsonrpc.encode(body), content_type="application/json",
                                headers=_allow(exc))
        message = _no_route(request) if exc.status == 404 else _not_allowed(request, exc)
        return web.json_response({"error": message}, status=exc.status, headers=_allow(exc))
    return response


def _no_route(request: web.Request) -> str:
    path = request.path[:200]
    if path.startswith("/api/"):
        has_api = _serves(request, "/api/openapi.json")
        hint = "see /api/openapi.json" if has_api else "this server runs no API: it was started without a store"
        return f"no API route {path!r} ({hint})"
    if path == "/v1" or path.startswith("/v1/"):  # with a store, the OTLP routes answer every /v1 path themselves
        return f"no route {path!r}: this server runs no OTLP receiver (it was started without a store)"
    return f"no route {path!r}"


def _not_allowed(request: web.Request, exc: web.HTTPException) -> str:
    allowed = exc.headers.get("Allow", "")
    return f"{request.method[:20]} is not allowed on {request.path[:200]!r}" + (
        f" (allowed: {allowed.replace(',', ', ')})" if allowed and not request.path.startswith("/api/") else "")


def _serves(request: web.Request, path: str) -> bool:
    return any(r.canonical == path for r in request.app.router.resources())


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def has_token(request: web.Request, tokens: tuple[str, ...]) -> bool:
    """The request carries one of `tokens` as `Authorization: Bearer <token>`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens)


async def _end_sessions(app: web.Application) -> None:
    """On shutdown, end every session first so open GET streams close instead of lingering."""
    hub = app[HUB_KEY]
    for session in list(hub.sessions):
        hub.sessions.end(session.session_id, "shutdown")


async def _hub_lifetime(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    await hub.start()
    yield
    await hub.close()


async def _healthz(request: web.Request) -> web.Response:
    """Overall status for anyone (load balancers probe without a token); upstream names, versions and errors only
    with the bearer token when tokens are configured."""
    hub = request.app[HUB_KEY]
    health = hub.health()
    status = 200 if health["status"] != "down" else 503
    tokens = hub.config.server.auth_tokens
    if tokens and not has_token(request, tokens):
        return web.json_response({"status": health["status"]}, status=status)
    return web.json_response(health, status=status)
