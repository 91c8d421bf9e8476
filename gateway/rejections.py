"""Requests refused at the HTTP edge (bad token, Host or Origin, media type, size, session, an unknown path or
method, a bad query): one log line each with the reason, method and client address (never a token), rate-limited per
route and status, and counted for /metrics.

A handler that knows why it refuses calls `Rejections.refused` (the OTLP routes through their `on_refused` hook);
`Rejections.middleware`, outermost on every app, records every other 4xx answer of every route, with the error its
body gave the client.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.ratelimit import RateLimit

log = logging.getLogger("tollgate.rejections")

LINES_PER_MINUTE = 10  # per route and status: a flood of one kind cannot fill the log nor hide another kind
# Refusals that point at a misconfigured or hostile client; the rest (an expired session, a probe) are routine.
WARNING_STATUSES = frozenset({401, 403, 413})
ROUTE_PREFIXES = ("/api", "/metrics", "/v1", "/healthz", "/ui")
REASON_CHARS = 200  # of an error taken from a response body
# Set on a request once its refusal is recorded, so the middleware does not record it again.
RECORDED = web.RequestKey("refusal_recorded", bool)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(path: str) -> str:
    """A small fixed set of route labels (`/ui` for the pages, `/` among them), so a scan of random paths
    cannot grow the metric."""
    if path == "/mcp":
        return "/mcp"
    if path == "/":
        return "/ui"
    for prefix in ROUTE_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"


def is_refusal(status: int) -> bool:
    """A 4xx answer; 5xx ones (a full session table, a store down) are the server's state, counted elsewhere."""
    return 400 <= status < 500


class Rejections:
    """Counts every refused request by (route, status) and logs as many as the rate limit lets through."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        self._limits: dict[tuple[str, int], RateLimit] = {}

    def refused(self, request: web.Request, status: int, reason: str, method: str = "") -> None:
        """Record that `request` was answered `status` because of `reason` (`method`: its JSON-RPC method, if read)."""
        request[RECORDED] = True
        key = (route_of(request.path), status)
        self.counts[key] += 1
        limit = self._limits.setdefault(key, RateLimit(LINES_PER_MINUTE, 60.0))
        if not limit.allow(time.monotonic()):
            return
        held = limit.take_held()
        log.log(logging.WARNING if status in WARNING_STATUSES else logging.INFO, "refused %s %s%s from %s: %d %s%s",
                request.method, _escaped(request.path[:100]), f" ({_escaped(method[:60])})" if method else "",
                request.remote or "?", status, _escaped(reason), f" ({held} more like it not logged)" if held else "")

    def middleware(self) -> Middleware:
        """Outermost middleware: records each 4xx answer (or raised HTTPException: an unknown path, a method the
        route does not take, a body past client_max_size) that no handler recorded itself."""

        @web.middleware
        async def record_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if is_refusal(exc.status) and RECORDED not in request:
                    self.refused(request, exc.status, _unprefixed(exc.status, exc.text or exc.reason)[:REASON_CHARS])
                raise
            if is_refusal(response.status) and RECORDED not in request:
                self.refused(request, response.status, _unprefixed(response.status, _said(response))[:REASON_CHARS])
            return response

        return record_refusals


def _said(response: web.StreamResponse) -> str:
    """The error a refusal's body gave the client: the JSON API's `error`, a JSON-RPC error's or an OTLP Status's
    `message`, a plain-text body; else the status line's reason."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or not body:
        return response.reason
    if response.content_type == "application/json":
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return response.reason
        error = doc.get("error", doc) if isinstance(doc, dict) else None
        said = error.get("message") if isinstance(error, dict) else error
        return said if isinstance(said, str) and said else response.reason
    if response.content_type == "text/plain":
        return body.decode("utf-8", "replace").strip() or response.reason
    return response.reason


def _unprefixed(status: int, reason: str) -> str:
    """`reason` without a leading copy of the status (aiohttp's pages say "405: Method Not Allowed"): the log line
    gives the status already."""
    return reason.removeprefix(f"{status}: ") or reason


def _escaped(text: str) -> str:
    """What a client chose (a path, a JSON-RPC method, what a reason quotes) as one log line can hold it: no newline
    forges another."""
    return text.encode("unicode_escape").decode("ascii")


REJECTIONS_KEY = web.AppKey("rejections", Rejections)
