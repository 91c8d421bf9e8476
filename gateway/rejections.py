"""Requests refused at the HTTP edge (bad token, Host or Origin, media type, size, session): one log line each with
the reason, method and client address (never a token), rate-limited per route and status, and counted for /metrics.
"""

from __future__ import annotations

import collections
import logging
import time

from aiohttp import web

from gateway.ratelimit import RateLimit

log = logging.getLogger("tollgate.rejections")

LINES_PER_MINUTE = 10  # per route and status: a flood of one kind cannot fill the log nor hide another kind
# Refusals that point at a misconfigured or hostile client; the rest (an expired session, a probe) are routine.
WARNING_STATUSES = frozenset({401, 403, 413})


def route_of(path: str) -> str:
    """A small fixed set of route labels, so a scan of random paths cannot grow the metric."""
    if path == "/mcp":
        return "/mcp"
    for prefix in ("/api", "/metrics", "/v1"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"


class Rejections:
    """Counts every refused request by (route, status) and logs as many as the rate limit lets through."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        self._limits: dict[tuple[str, int], RateLimit] = {}

    def refused(self, request: web.Request, status: int, reason: str, method: str = "") -> None:
        """Record that `request` was answered `status` because of `reason` (`method`: its JSON-RPC method, if read)."""
        key = (route_of(request.path), status)
        self.counts[key] += 1
        limit = self._limits.setdefault(key, RateLimit(LINES_PER_MINUTE, 60.0))
        if not limit.allow(time.monotonic()):
            return
        held = limit.take_held()
        log.log(logging.WARNING if status in WARNING_STATUSES else logging.INFO, "refused %s %s%s from %s: %d %s%s",
                request.method, _escaped(request.path[:100]), f" ({_escaped(method[:60])})" if method else "",
                request.remote or "?", status, reason, f" ({held} more like it not logged)" if held else "")


def _escaped(text: str) -> str:
    """What a client chose (a path, a JSON-RPC method) as one log line can hold it: no newline forges another."""
    return text.encode("unicode_escape").decode("ascii")


REJECTIONS_KEY = web.AppKey("rejections", Rejections)
