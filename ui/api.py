"""The read-only JSON API under `/api/*` (described by `/api/openapi.json`) over `store.queries_*`.

Parses and bounds query parameters, maps store errors to HTTP statuses, encodes rows with orjson. No SQL here
and no import of `gateway`: the composition root hands in the store.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from store import queries_calls, queries_servers, queries_turns, queries_usage, sums, times
from store.client import Store
from store.errors import StoreError, StoreUnavailable
from ui.openapi import spec

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("api_store", Store)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MIN_PREFIX = 6  # reports and the UI show ids cut to 8 or 12 characters
PREFIX_PAGES, PAGE = 4, 500  # a prefix is looked up in at most this many pages of the sessions list


class BadRequest(Exception):
    """A query parameter the API cannot use: 400 with the reason. Messages name query parameters as the API takes
    them, in backticks (`since`): the CLI shows them as its flags (ui/cli_report.as_flags)."""


def encode(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z, default=_default)
    except orjson.JSONEncodeError:  # an integer past 64 bits (a Python sum of huge values): saturate, not 500
        return orjson.dumps(_saturated(doc), option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z, default=_default)


def _saturated(value: Any) -> Any:
    """`value` with every integer beyond Int64 saturated into it (orjson, and JSON readers, take 64 bits)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return sums.clamp(value)
    if isinstance(value, dict):
        return {k: _saturated(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_saturated(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return sorted(value)
    return str(value)


Query = Mapping[str, str]
Answer = tuple[int, Any]


@dataclass(frozen=True)
class Settings:
    """What the routes know of the gateway serving them: the names Claude Code knows its MCP server by (the
    configured `server.registered_name`; none when the store is read without a config) and its upstreams."""

    gateway_names: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()  # the configured upstream names: known servers even before any call


NO_SETTINGS = Settings()
Route = Callable[[Store, Query, Query, Settings], Awaitable[Answer]]


def _time(query: Query, name: str) -> dt.datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO-8601 time, got {raw!r}") from None
    value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    if not times.EARLIEST <= value <= times.LATEST:  # nothing is stored outside, and arithmetic on it may overflow
        raise BadRequest(f"{name} must be between {times.EARLIEST:%Y-%m-%d} and {times.LATEST:%Y-%m-%d}"
                         f" (the times the store holds), got {raw!r}")
    return value


def _window(query: Query) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`since` and `until`; a range that ends before (or as) it starts is a 400, not an empty answer."""
    since, until = _time(query, "since"), _time(query, "until")
    if since is not None and until is not None and since >= until:
        raise BadRequest(f"since must be earlier than until (since {query['since']!r}, until {query['until']!r})")
    return since, until


def check_window(query: Query) -> str | None:
    """Why the API would refuse the query's time range (400), or None: for callers checking before they fetch."""
    try:
        _window(query)
    except BadRequest as exc:
        return str(exc)
    return None


def _int(query: Query, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


async def sessions(store: Store, query: Query, _: Query, __: Settings) -> Answer:
    since, until = _window(query)
    return 200, await queries_turns.list_sessions(
        store, user=query.get("user") or None, server=query.get("server") or None, since=since, until=until,
        limit=_int(query, "limit", 50, 1, 500), offset=_int(query, "offset", 0, 0, 1_000_000))


async def session(store: Store, query: Query, match: Query, settings: Settings) -> Answer:
    """A session by its id, or by the start of exactly one id (looked up in the query's time range), so the CLI
    and the UI resolve a prefix in one request instead of a refused one (404) and a second."""
    detail = await queries_turns.session_detail(store, match["id"], settings.gateway_names)
    if detail is not None:
        return 200, detail
    resolved = await resolve_prefix(store, match["id"], query)
    if isinstance(resolved, tuple):
        return resolved
    detail = await queries_turns.session_detail(store, resolved, settings.gateway_names)
    return (404, {"error": f"no session {match['id']!r}"}) if detail is None else (200, detail)


async def resolve_prefix(store: Store, prefix: str, query: Query) -> str | Answer:
    """`prefix` when it is a whole session id, else the one session id starting with it among the listed
    sessions (in the query's time range, at most PREFIX_PAGES pages) and the MCP and Claude Code session ids of
    the latest 1,000 calls; else the answer refusing it: 404 when none (or the prefix is too short to be taken
    as one), 409 naming the candidates."""
    since, until = _window(query)
    found: dict[str, None] = {}  # ordered: newest first
    for page in range(PREFIX_PAGES):
        doc = await queries_turns.list_sessions(store, since=since, until=until, limit=PAGE, offset=page * PAGE)
        found.update(dict.fromkeys(s["session_id"] for s in doc["sessions"] if s["session_id"].startswith(prefix)))
        if doc["next_offset"] is None:
            break
    recent = await queries_servers.calls(store, since=since, until=until, limit=1000)
    found.update(dict.fromkeys(
        i for c in recent for i in (c["mcp_session_id"], c.get("cc_session_id") or "") if i.startswith(prefix)))
    if prefix in found:  # a whole id (a session with no calls on one server, say), whatever its length
        return prefix
    if len(prefix) < MIN_PREFIX:
        return 404, {"error": f"no session {prefix!r} (an id prefix needs at least {MIN_PREFIX} characters)"}
    if len(found) == 1:
        return next(iter(found))
    if not found:
        looked = str(doc["since"]).replace("T", " ")[:19]
        return 404, {"error": f"no session {prefix!r}, and no session id starts with it (looked at sessions "
                              f"since {looked} UTC; an earlier `since` looks further back)"}
    listed = ", ".join(list(found)[:10]) + (f", ... ({len(found) - 10} more)" if len(found) > 10 else "")
    return 409, {"error": f"{prefix!r} is the start of {len(found)} session ids: {listed}; give more characters"}


async def usage(store: Store, query: Query, _: Query, __: Settings) -> Answer:
    return 200, {"usage": await queries_usage.usage_report(store, *_window(query))}


async def servers(store: Store, query: Query, _: Query, __: Settings) -> Answer:
    return 200, {"servers": await queries_servers.servers(store, *_window(query))}


async def server(store: Store, query: Query, match: Query, __: Settings) -> Answer:
    detail = await queries_servers.server_detail(store, match["name"], *_window(query),
                                                 largest=_int(query, "largest", 10, 1, 100))
    return _no_server(match["name"]) if detail is None else (200, detail)


def _no_server(name: str) -> Answer:
    return 404, {"error": f"no server {name!r}"}


async def _known_server(store: Store, name: str, query: Query, settings: Settings) -> bool:
    """Whether `name` is a server: configured, or named by a store row or tool list (as `/api/servers/{name}`
    finds it in the query's time range). The one rule for a `server` filter that matches no call."""
    if name in settings.upstreams:
        return True
    return await queries_servers.server_detail(store, name, *_window(query), largest=1) is not None


async def calls(store: Store, query: Query, _: Query, settings: Settings) -> Answer:
    """Recent calls; a `session` no call has is taken as the start of one session id (`resolve_prefix`); a
    `server` no call has that is no server at all is a 404, as `/api/servers/{name}` answers it."""
    since, until = _window(query)
    session_id, server_name = query.get("session") or None, query.get("server") or None

    async def listed(session: str | None) -> list[dict[str, Any]]:
        return await queries_calls.calls(store, server=server_name, session=session,
                                         since=since, until=until, limit=_int(query, "limit", 100, 1, 1000))

    rows = await listed(session_id)
    if not rows and server_name is not None and not await _known_server(store, server_name, query, settings):
        return _no_server(server_name)
    if rows or session_id is None:
        return 200, {"calls": rows}
    resolved = await resolve_prefix(store, session_id, query)
    if isinstance(resolved, tuple):
        return resolved
    return 200, {"calls": rows if resolved == session_id else await listed(resolved)}


async def openapi(_: Store, __: Query, ___: Query, ____: Settings) -> Answer:
    return 200, spec()


ROUTES: tuple[tuple[str, Route], ...] = (
    ("/api/sessions", sessions),
    ("/api/sessions/{id}", session),
    ("/api/usage", usage),
    ("/api/servers", servers),
    ("/api/servers/{name}", server),
    ("/api/calls", calls),
    ("/api/openapi.json", openapi),
)


async def answer(store: Store, route: Route, query: Query, match: Query,
                 settings: Settings = NO_SETTINGS) -> tuple[int, bytes, dict[str, str]]:
    """Run one route: (status, JSON body, extra headers). The HTTP handlers and the direct CLI share this."""
    try:
        status, doc = await route(store, query, match, settings)
        return status, encode(doc), {}
    except BadRequest as exc:
        return 400, encode({"error": str(exc)}), {}
    except StoreUnavailable as exc:
        retry = {"Retry-After": str(max(1, round(exc.retry_after_seconds)))}
        return 503, encode({"error": f"store unavailable: {exc}"}), retry
    except StoreError as exc:
        log.warning("API route %s failed: %s", getattr(route, "__name__", route), exc)
        return 500, encode({"error": f"store error: {exc}"}), {}
    except Exception as exc:  # a bug of ours: still a JSON answer (the UI and CLI read JSON), and a traceback logged
        log.exception("API route %s failed", getattr(route, "__name__", route))
        return 500, encode({"error": f"internal error ({type(exc).__name__}); the server log has the details"}), {}


def _handler(store: Store, route: Route, settings: Settings) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        status, body, headers = await answer(store, route, request.query, request.match_info, settings)
        return web.Response(body=body, status=status, content_type="application/json", headers=headers)

    return handle


def add_api_routes(app: web.Application, store: Store, **extras: Any) -> None:
    """Mount every `/api/*` route on `app` over `store`; `config` (the gateway's, among `extras`) names its MCP
    server."""
    app[STORE_KEY] = store
    settings = settings_of(extras.get("config"))
    for path, route in ROUTES:
        app.router.add_get(path, _handler(store, route, settings))


def settings_of(config: Any) -> Settings:
    """The routes' settings from a gateway config (read by attribute: `ui` does not import `gateway`)."""
    name = getattr(getattr(config, "server", None), "registered_name", None)
    upstreams = tuple(n for u in getattr(config, "upstreams", ()) if isinstance(n := getattr(u, "name", None), str))
    return Settings(gateway_names=(name,) if isinstance(name, str) and name else (), upstreams=upstreams)


def resolve(path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving `path` (without query string) and its path parameters, for callers without HTTP."""
    for pattern, route in ROUTES:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$"
        match = re.match(regex, path)
        if match:
            return route, {k: unquote(v) for k, v in match.groupdict().items()}
    return None
