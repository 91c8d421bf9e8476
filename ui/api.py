"""The read-only JSON API under `/api/*` (described by `/api/openapi.json`) over `store.queries_*`.

Parses and bounds query parameters, maps store errors to HTTP statuses, encodes rows with orjson. No SQL here
and no import of `gateway`: the composition root hands in the store.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from store import queries_servers, queries_turns, queries_usage
from store.client import Store
from store.errors import StoreError, StoreUnavailable
from ui.openapi import spec

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("api_store", Store)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A query parameter the API cannot use: 400 with the reason."""


def json_response(doc: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z, default=_default)
    return web.Response(body=body, status=status, content_type="application/json")


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return sorted(value)
    return str(value)


def _time(request: web.Request, name: str) -> dt.datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO-8601 time, got {raw!r}") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _guarded(handler: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_response({"error": str(exc)}, 400)
        except StoreUnavailable as exc:
            response = json_response({"error": f"store unavailable: {exc}"}, 503)
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after_seconds)))
            return response
        except StoreError as exc:
            log.warning("API %s failed: %s", request.path, exc)
            return json_response({"error": f"store error: {exc}"}, 500)

    return run


async def sessions(request: web.Request) -> web.StreamResponse:
    page = await queries_turns.list_sessions(
        request.app[STORE_KEY], user=request.query.get("user") or None, server=request.query.get("server") or None,
        since=_time(request, "since"), until=_time(request, "until"),
        limit=_int(request, "limit", 50, 1, 500), offset=_int(request, "offset", 0, 0, 1_000_000))
    return json_response(page)


async def session(request: web.Request) -> web.StreamResponse:
    detail = await queries_turns.session_detail(request.app[STORE_KEY], request.match_info["id"])
    if detail is None:
        return json_response({"error": f"no session {request.match_info['id']!r}"}, 404)
    return json_response(detail)


async def usage(request: web.Request) -> web.StreamResponse:
    rows = await queries_usage.usage_report(request.app[STORE_KEY], _time(request, "since"), _time(request, "until"))
    return json_response({"usage": rows})


async def servers(request: web.Request) -> web.StreamResponse:
    rows = await queries_servers.servers(request.app[STORE_KEY], _time(request, "since"), _time(request, "until"))
    return json_response({"servers": rows})


async def server(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    detail = await queries_servers.server_detail(request.app[STORE_KEY], name, _time(request, "since"),
                                                 _time(request, "until"), _int(request, "largest", 10, 1, 100))
    if detail is None:
        return json_response({"error": f"no server {name!r}"}, 404)
    return json_response(detail)


async def calls(request: web.Request) -> web.StreamResponse:
    rows = await queries_servers.calls(
        request.app[STORE_KEY], server=request.query.get("server") or None,
        session=request.query.get("session") or None, since=_time(request, "since"), until=_time(request, "until"),
        limit=_int(request, "limit", 100, 1, 1000))
    return json_response({"calls": rows})


async def openapi(_: web.Request) -> web.StreamResponse:
    return json_response(spec())


ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/api/sessions", sessions),
    ("/api/sessions/{id}", session),
    ("/api/usage", usage),
    ("/api/servers", servers),
    ("/api/servers/{name}", server),
    ("/api/calls", calls),
    ("/api/openapi.json", openapi),
)


def add_api_routes(app: web.Application, store: Store, **extras: Any) -> None:
    """Mount every `/api/*` route on `app` over `store` (extras are accepted for future routes)."""
    app[STORE_KEY] = store
    for path, handler in ROUTES:
        app.router.add_get(path, _guarded(handler))
