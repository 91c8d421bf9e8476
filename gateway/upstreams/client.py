"""One upstream MCP server as the gateway sees it: handshake, id correlation, catalog, restarts.

Owns a Transport (made by a factory so a crashed pipe can be replaced), assigns Tollgate's own
request ids, rewrites progress tokens so several clients can share one upstream, and keeps the
upstream's catalog fresh. Knows nothing of downstream sessions: it reports through callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import orjson

from gateway import jsonrpc, mcp
from gateway.config import UpstreamConfig
from gateway.ratelimit import RateLimit
from gateway.upstreams import paging
from gateway.upstreams.base import SessionLost, Transport, TransportError

log = logging.getLogger("tollgate.upstream")

CATALOG_KINDS: dict[str, tuple[str, str]] = {
    # list key -> (method, capability that must be present)
    "tools": ("tools/list", "tools"),
    "resources": ("resources/list", "resources"),
    "resourceTemplates": ("resources/templates/list", "resources"),
    "prompts": ("prompts/list", "prompts"),
}
# Transport events (a non-JSON stdout line each) recorded and logged per minute: a noisy server must not flood
# the store or the log. All are counted (health, metrics); the next recorded one says how many were held back.
TRANSPORT_EVENTS_PER_MINUTE = 10
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
CANCEL_NOTICE_SECONDS = 5.0
# Ready this long counts as recovered, so the next failure starts the backoff over; a server that
# dies sooner after each start is one crash loop, and its restarts keep backing off.
READY_STABLE_SECONDS = 10.0


class State(Enum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"


class UpstreamError(Exception):
    """A request could not be completed by the upstream; the message is safe for the client."""

    def __init__(self, message: str, code: int = jsonrpc.UPSTREAM_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, jsonrpc.REQUEST_TIMEOUT)


# Receives, for one in-flight request, every message the upstream sent about it before the
# answer: progress notifications (token already restored) and server-to-client requests.
EventSink = Callable[[dict[str, Any]], None]


class UpstreamObserver(Protocol):
    def upstream_changed(self, upstream: UpstreamClient) -> None: ...
    def upstream_notification(self, upstream: UpstreamClient, body: dict[str, Any]) -> None: ...
    def upstream_request(self, upstream: UpstreamClient, body: dict[str, Any]) -> None: ...
    def upstream_event(self, upstream: UpstreamClient, kind: str, detail: str) -> None: ...


@dataclass(slots=True)
class Response:
    """The upstream's final answer to one request, with its wire size."""

    body: dict[str, Any]
    size: int
    raw: bytes = b""  # the message as it crossed the wire, so an unchanged result can pass through untouched


class _Pending:
    """One request in flight. Plain slots: built once per call on the hot path."""

    __slots__ = ("future", "last_activity", "owner", "progress_events", "progress_token", "sink")

    def __init__(self, future: asyncio.Future[Response], sink: EventSink | None, progress_token: Any = None,
                 owner: object = None) -> None:
        self.future = future
        self.sink = sink
        self.owner = owner  # whom the sink speaks for (a downstream session); opaque here
        self.progress_token = progress_token  # the client's own token, restored on relayed progress
        self.progress_events = 0
        self.last_activity = time.monotonic()  # progress and server requests push the idle deadline back


class _Attempt:
    """One start of the upstream: set `lost` when its pipe ends while in use; `cause` is why the pipe ended."""

    __slots__ = ("cause", "lost")

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.cause: BaseException | None = None


class _Expired(Exception):
    """Set on a pending future by its idle/absolute timer; turned into UpstreamTimeout by the waiter."""


@dataclass
class Catalog:
    """The upstream's lists as it sent them (items untouched) and when they were read."""

    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    read_at: float = 0.0


class UpstreamClient:
    """A long-lived client of one upstream; safe to share between downstream sessions."""

    def __init__(self, config: UpstreamConfig, make_transport: Callable[[], Transport],
                 observer: UpstreamObserver, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self._sleep = sleep  # between restarts; a test passes its own to see the delays without waiting them
        self.name = config.name
        self._make_transport = make_transport
        self._observer = observer
        self._transport: Transport | None = None
        self._ids = itertools.count(1)
        self._reinit_lock = asyncio.Lock()
        self._sessions_made = 0  # re-initializations after a lost session; a call that saw none makes one
        self._pending: dict[int, _Pending] = {}
        self._by_token: dict[str, int] = {}
        self.state = State.STOPPED
        self.last_error = ""
        self.restarts = 0  # lost after being ready, and started again
        self.failed_starts = 0  # start attempts that never became ready (a crashing command, a dead URL)
        self.non_json_lines = 0  # over every process this client ran
        self._event_limit = RateLimit(TRANSPORT_EVENTS_PER_MINUTE, 60.0)
        self.unrouted = 0  # notifications dropped because no single session could be told they were its
        self.protocol_version = ""
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions = ""
        self.catalog = Catalog()
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()
        self._closing = False
        self._refresh: asyncio.Task[None] | None = None
        self.log_level: str | None = None  # the last logging/setLevel a client sent; given again after a restart
        self._stale = False  # a list_changed arrived during the running refresh
        self._background: set[asyncio.Task[None]] = set()

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; retries with backoff until closed."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"upstream-{self.name}")

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.state is State.READY

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until the first connection attempt succeeded or failed; True when ready."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)
        return self.state is State.READY

    async def close(self) -> None:
        self._closing = True
        for task in (self._runner, self._refresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_transport("gateway shutting down")
        self._set_state(State.STOPPED)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            current = _Attempt()
            try:
                await asyncio.wait_for(self._connect(current), self.config.timeouts.init_seconds)
            except TimeoutError:  # str() of it is empty: say what timed out
                self.failed_starts += 1
                self._fail(f"initialize timed out after {self.config.timeouts.init_seconds:g}s")
                await self._drop_transport(self.last_error)
            except (TransportError, UpstreamError, OSError) as exc:
                self.failed_starts += 1
                await self._fail_start(exc, current)
            else:
                self._recovered()
                self._set_state(State.READY)
                ready_at = time.monotonic()
                await current.lost.wait()
                if self._closing:
                    return
                self.restarts += 1
                self._observer.upstream_event(self, "restart", self.last_error)
                if time.monotonic() - ready_at >= READY_STABLE_SECONDS:
                    attempt = 0
            delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]
            attempt += 1
            log.info("upstream %s: next start in %gs", self.name, delay)
            await self._sleep(delay)

    def _recovered(self) -> None:
        """Say so when a start brings an unhealthy upstream (crashed, or failing to start) back: the warning that
        it was unhealthy would otherwise be its last word in the log. A first start that works is the hub's to log."""
        if self.state is not State.UNHEALTHY:
            return
        log.info("upstream %s ready again: %d tools (%s); it was down: %s", self.name,
                 len(self.catalog.items.get("tools", [])), self.protocol_version, self.last_error or "unknown")

    async def _fail_start(self, exc: BaseException, attempt: _Attempt) -> None:
        """Say once why a start failed. A pipe that ended on its own gives its cause (exit status, last stderr)
        as it is closed, which says more than the send that found it gone."""
        if attempt.lost.is_set():  # `closed` has said why
            await self._drop_transport(self.last_error)
            return
        await self._drop_transport(_describe(exc, "initialize failed"))
        self._fail(_describe(attempt.cause or exc, "initialize failed"))

    async def _connect(self, attempt: _Attempt) -> None:
        if self.state is not State.UNHEALTHY:  # a retry stays unhealthy, with its error, until it is ready
            self._set_state(State.STARTING)
        self._observer.upstream_event(self, "start", "")
        transport = self._make_transport()
        transport.set_event_handler(self._transport_event)
        self._transport = transport

        def closed(exc: BaseException | None) -> None:
            attempt.cause = exc
            if self._transport is transport:
                self._fail(_describe(exc, "upstream closed the connection") if exc or not self._closing
                           else "closed")
                self._fail_pending(f"upstream {self.name} is unavailable: {_unnamed(self.name, self.last_error)}")
                self._transport = None
                attempt.lost.set()

        await transport.open(self._on_message, closed)
        await self._initialize(transport)
        await self.refresh_catalog()
        await self._restore_log_level()

    async def _initialize(self, transport: Transport) -> None:
        params = {
            "protocolVersion": mcp.LATEST_VERSION,
            "capabilities": mcp.client_capabilities(None),
            "clientInfo": {"name": "tollgate", "version": "0.1.0"},
        }
        result = await self._call_checked("initialize", params)
        version = result.get("protocolVersion")
        if version not in mcp.SUPPORTED_VERSIONS:
            raise UpstreamError(f"upstream {self.name} speaks unsupported protocol version {version!r}")
        self.protocol_version = str(version)
        transport.set_protocol_version(self.protocol_version)
        self.server_info = result.get("serverInfo") or {}
        self.capabilities = result.get("capabilities") or {}
        self.instructions = str(result.get("instructions") or "")
        await self.notify("notifications/initialized")
        opener = getattr(transport, "open_event_stream", None)
        if opener is not None:
            await opener()

    async def _drop_transport(self, reason: str) -> None:
        transport, self._transport = self._transport, None
        self._fail_pending(f"upstream {self.name} is unavailable: {_unnamed(self.name, reason)}")
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()

    def _transport_event(self, kind: str, detail: str) -> None:
        """Count every event; record (and log, for a non-JSON line) only as many as the rate limit lets through."""
        if kind == "non_json_line":
            self.non_json_lines += 1
        if not self._event_limit.allow(time.monotonic()):
            return
        held = self._event_limit.take_held()
        if kind == "non_json_line":
            log.warning("upstream %s stdout (not JSON-RPC, ignored): %s%s", self.name, detail,
                        f" ({held} more such lines not logged)" if held else "")
        self._observer.upstream_event(self, kind, f"{detail} ({held} more not recorded)" if held else detail)

    def _fail(self, message: str) -> None:
        self.last_error = message
        if not self._closing:
            log.warning("upstream %s unhealthy: %s", self.name, message)
            self._set_state(State.UNHEALTHY)
            self._observer.upstream_event(self, "unhealthy", message)

    def _set_state(self, state: State) -> None:
        changed = state is not self.state
        self.state = state
        if state in (State.READY, State.UNHEALTHY):
            self._settled.set()
        if state is State.READY:
            self._ready.set()
            self.last_error = ""
        else:
            self._ready.clear()
        if changed:
            self._observer.upstream_changed(self)

    def _fail_pending(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        self._by_token.clear()
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(UpstreamError(message))

    # ----- catalog ---------------------------------------------------------------------------

    async def refresh_catalog(self) -> None:
        catalog = Catalog(read_at=time.time())
        for key, (method, capability) in CATALOG_KINDS.items():
            if capability in self.capabilities:
                catalog.items[key] = await self._read_all_pages(method, key)
        self.catalog = catalog
        self._observer.upstream_changed(self)

    async def _read_all_pages(self, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []

        def stopped(kind: str, detail: str) -> None:
            self._paging_stopped(kind, detail, len(items))

        try:
            await paging.read_all_pages(self._call_checked, method, key, items, stopped)
        except UpstreamError as exc:
            if key == "tools":
                raise
            log.info("upstream %s: %s failed (%s); treating as empty", self.name, method, exc)
        return items

    def _paging_stopped(self, kind: str, detail: str, kept: int) -> None:
        log.warning("upstream %s: %s; stopped paging, keeping %d items", self.name, detail, kept)
        self._observer.upstream_event(self, kind, detail)

    def _schedule_refresh(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._refresh_quietly())
        else:
            self._stale = True  # the running refresh may have read the changed list already: read once more

    async def _refresh_quietly(self) -> None:
        self._stale = True
        while self._stale:
            self._stale = False
            try:
                await self.refresh_catalog()
            except (UpstreamError, TransportError) as exc:
                log.warning("upstream %s: catalog refresh failed: %s", self.name, exc)
                return

    # ----- logging level ---------------------------------------------------------------------

    async def set_log_level(self, params: dict[str, Any]) -> None:
        """Pass a client's logging/setLevel on when the upstream is ready and logs, and keep the level: a
        (re)started upstream gets it again. An upstream that cannot take it now is told when it is back."""
        self.log_level = str(params["level"])
        if self.state is not State.READY or "logging" not in self.capabilities:
            return
        try:
            await self.request("logging/setLevel", params)
        except UpstreamError as exc:
            log.info("upstream %s: logging/setLevel not passed on now (%s); given again once it is back",
                     self.name, exc)

    async def _restore_log_level(self) -> None:
        if self.log_level is not None and "logging" in self.capabilities:
            with contextlib.suppress(UpstreamError):  # a server refusing a level still serves
                await self.request("logging/setLevel", {"level": self.log_level},
                                   idle_seconds=self.config.timeouts.init_seconds)

    # ----- requests --------------------------------------------------------------------------

    async def _call_checked(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        # Handshake and catalog reads are bounded by the init timeout, not the per-call one.
        response = await self.request(method, params, idle_seconds=self.config.timeouts.init_seconds)
        if "error" in response.body:
            error = response.body["error"] or {}
            raise UpstreamError(f"{method} failed: {error.get('message', error)}")
        result = response.body.get("result")
        return result if isinstance(result, dict) else {}

    async def request(self, method: str, params: dict[str, Any] | None, *,
                      sink: EventSink | None = None, on_sent: Callable[[int, int], None] | None = None,
                      idle_seconds: float | None = None, owner: object = None) -> Response:
        """Send one request and wait for its answer; progress and server requests go to `sink`.

        `owner` says whom the sink speaks for: over stdio a server request or log message is given to
        a call only when every call in flight has the same owner (see `_call_for`).
        `on_sent(upstream_id, wire_bytes)` is called once the request is on its way. Raises
        UpstreamError (unavailable, timeout) and asyncio.CancelledError (the caller cancelled;
        a `notifications/cancelled` then goes upstream).
        """
        upstream_id = next(self._ids)
        params, token = self._with_own_progress_token(params, upstream_id)
        pending = _Pending(asyncio.get_running_loop().create_future(), sink, token, owner)
        self._pending[upstream_id] = pending
        if token is not None:
            self._by_token[str(upstream_id)] = upstream_id
        try:
            raw = jsonrpc.encode(jsonrpc.request_body(upstream_id, method, params))
            await self._send_in_time(raw, upstream_id, method, idle_seconds or self.config.timeouts.call_seconds)
            if on_sent is not None:
                on_sent(upstream_id, len(raw))
            return await self._await_answer(upstream_id, pending, method, idle_seconds)
        except asyncio.CancelledError:
            await self._cancel_quietly(upstream_id, "cancelled by client")
            raise
        finally:
            self._pending.pop(upstream_id, None)
            self._by_token.pop(str(upstream_id), None)

    async def _send_in_time(self, raw: bytes, upstream_id: int, method: str, limit: float) -> None:
        """Send, bounded like the answer: an HTTP upstream's JSON answer arrives within the POST itself,
        so a server that accepts the connection and never answers would otherwise hang the call."""
        try:
            async with asyncio.timeout(limit):
                await self._send(raw, upstream_id)
        except TimeoutError:
            await self._cancel_quietly(upstream_id, "timed out at the gateway")
            raise UpstreamTimeout(f"upstream {self.name} did not answer {method} in time") from None

    async def _await_answer(self, upstream_id: int, pending: _Pending, method: str,
                            idle_seconds: float | None) -> Response:
        future = pending.future
        if future.done():  # HTTP JSON answers arrive while the POST is being sent: no timer needed
            return future.result()
        timeouts = self.config.timeouts
        idle_limit = idle_seconds or timeouts.call_seconds
        deadline = time.monotonic() + max(timeouts.call_max_seconds, idle_limit)
        loop = asyncio.get_running_loop()

        def check() -> None:
            # One timer per call, re-armed when activity moved the idle deadline, instead of a
            # wait() with a fresh Event waiter per progress message.
            now = time.monotonic()
            left = min(pending.last_activity + idle_limit - now, deadline - now)
            if future.done():
                return
            if left <= 0:
                future.set_exception(_Expired())
            else:
                timer[0] = loop.call_later(left, check)

        timer = [loop.call_later(min(idle_limit, deadline - time.monotonic()), check)]
        try:
            return await future
        except _Expired:
            await self._cancel_quietly(upstream_id, "timed out at the gateway")
            raise UpstreamTimeout(f"upstream {self.name} did not answer {method} in time") from None
        finally:
            timer[0].cancel()

    def _with_own_progress_token(self, params: dict[str, Any] | None, upstream_id: int,
                                 ) -> tuple[dict[str, Any] | None, Any]:
        """Swap the client's progressToken for one unique on this upstream (ids can collide
        between clients sharing it); every other _meta key passes untouched."""
        meta = params.get("_meta") if params else None
        if not params or not isinstance(meta, dict) or "progressToken" not in meta:
            return params, None
        token = meta["progressToken"]
        return {**params, "_meta": {**meta, "progressToken": str(upstream_id)}}, token

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> int:
        raw = jsonrpc.encode(jsonrpc.notification_body(method, params))
        await self._send(raw, None)
        return len(raw)

    async def respond(self, body: dict[str, Any]) -> None:
        """Answer a server-to-client request (the body already carries the upstream's id)."""
        await self._send(jsonrpc.encode(body), None)

    async def cancel(self, upstream_id: int, reason: str) -> None:
        await self._cancel_quietly(upstream_id, reason)

    async def _cancel_quietly(self, upstream_id: int, reason: str) -> None:
        pending = self._pending.pop(upstream_id, None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()
        with contextlib.suppress(TransportError, UpstreamError, TimeoutError):
            async with asyncio.timeout(CANCEL_NOTICE_SECONDS):  # a hung upstream must not hold up the caller
                await self.notify("notifications/cancelled", {"requestId": upstream_id, "reason": reason})

    async def _send(self, raw: bytes, request_id: int | None) -> None:
        transport = self._transport
        if transport is None:
            why = _unnamed(self.name, self.last_error) or "not connected"
            raise UpstreamError(f"upstream {self.name} is unavailable: {why}")
        if self._reinit_lock.locked():  # the session is being made again: send with the new one, not none
            async with self._reinit_lock:
                pass
        sessions_before = self._sessions_made
        try:
            await transport.send(raw, request_id=request_id)
            return
        except SessionLost:
            pass  # retried below, outside this handler, so the retry's own failures are translated too
        except TransportError as exc:
            raise UpstreamError(_prefixed(self.name, str(exc))) from exc
        try:
            async with self._reinit_lock:  # calls that lost the session together re-initialize it once
                if self._sessions_made == sessions_before:
                    await self._reinitialize(transport)
                    self._sessions_made += 1
            await transport.send(raw, request_id=request_id)
        except SessionLost as exc:
            raise UpstreamError(f"upstream {self.name} lost our session again right after re-initializing") from exc
        except TransportError as exc:
            raise UpstreamError(f"upstream {self.name}: re-initializing failed: {exc}") from exc

    async def _reinitialize(self, transport: Transport) -> None:
        """The upstream forgot our session (it restarted): shake hands again, once.

        Raises UpstreamError (an error answer, a timeout) or TransportError; never a bare TimeoutError."""
        log.info("upstream %s lost our session; re-initializing", self.name)
        self._observer.upstream_event(self, "restart", "session lost; re-initialized")
        upstream_id = next(self._ids)
        pending = _Pending(asyncio.get_running_loop().create_future(), None)
        self._pending[upstream_id] = pending
        params = {"protocolVersion": self.protocol_version or mcp.LATEST_VERSION,
                  "capabilities": mcp.client_capabilities(None),
                  "clientInfo": {"name": "tollgate", "version": "0.1.0"}}
        try:
            async with asyncio.timeout(self.config.timeouts.init_seconds):  # an HTTP answer may arrive in send()
                await transport.send(jsonrpc.encode(jsonrpc.request_body(upstream_id, "initialize", params)),
                                     request_id=upstream_id)
                answer = await pending.future
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name} did not answer initialize in time") from None
        finally:
            self._pending.pop(upstream_id, None)
        if "error" in answer.body:
            error = answer.body["error"] if isinstance(answer.body["error"], dict) else {}
            raise UpstreamError(f"upstream {self.name} refused to re-initialize: {error.get('message', error)}")
        await transport.send(jsonrpc.encode(jsonrpc.notification_body("notifications/initialized")))

    # ----- inbound ---------------------------------------------------------------------------

    def _on_message(self, raw: bytes, related_id: str | int | None) -> None:
        try:
            message = jsonrpc.parse(raw)
        except jsonrpc.ProtocolError as exc:
            log.warning("upstream %s sent an invalid message: %s", self.name, exc.message)
            self._observer.upstream_event(self, "invalid_message", exc.message)
            return
        if message.kind is jsonrpc.Kind.RESPONSE:
            self._on_response(message, raw)
        elif message.kind is jsonrpc.Kind.NOTIFICATION:
            self._on_notification(message.body, related_id)
        else:
            self._on_server_request(message.body, related_id)

    def _on_response(self, message: jsonrpc.Message, raw: bytes = b"") -> None:
        upstream_id = message.id
        pending = self._pending.get(upstream_id) if isinstance(upstream_id, int) else None
        if pending is None or pending.future.done():
            log.debug("upstream %s: dropping late or unknown response id %r", self.name, upstream_id)
            return
        pending.future.set_result(Response(message.body, message.size, raw))

    def _on_notification(self, body: dict[str, Any], related_id: str | int | None = None) -> None:
        method = body.get("method", "")
        if method == "notifications/progress":
            self._relay_progress(body)
        elif method.endswith("/list_changed"):
            self._schedule_refresh()
        elif method in ("notifications/cancelled", "notifications/resources/updated"):
            self._observer.upstream_notification(self, body)  # tied to a server request or a subscription
        else:
            self._relay_related(body, related_id)

    def _relay_related(self, body: dict[str, Any], related_id: str | int | None) -> None:
        """A log message (or other notification) goes to the call it belongs to when that is certain."""
        pending, ambiguous = self._call_for(related_id)
        if pending is not None and pending.sink is not None:
            pending.sink(body)
        elif ambiguous:
            self.unrouted += 1  # one client's log must never reach another: dropped
            log.debug("upstream %s: %s during calls of several sessions; not relayed", self.name, body.get("method"))
        else:
            self._observer.upstream_notification(self, body)

    def _call_for(self, related_id: str | int | None) -> tuple[_Pending | None, bool]:
        """The in-flight call an inbound message belongs to, and whether that is ambiguous.

        Streamable HTTP names it (the POST stream a message came on; a GET-stream message belongs to
        none). stdio and legacy SSE carry no link, so it is certain only when every call in flight
        with a sink has one owner: then the newest; with several owners, ambiguous.
        """
        if related_id is not None or (self._transport is not None and self._transport.relates_messages):
            pending = self._pending.get(related_id) if isinstance(related_id, int) else None
            return (pending if pending is not None and _open(pending) else None), False
        calls = [p for p in self._pending.values() if _open(p)]
        if len({id(p if p.owner is None else p.owner) for p in calls}) > 1:
            return None, True
        return (calls[-1] if calls else None), False

    def _relay_progress(self, body: dict[str, Any]) -> None:
        params = body.get("params") or {}
        upstream_id = self._by_token.get(str(params.get("progressToken")))
        pending = self._pending.get(upstream_id) if upstream_id is not None else None
        if pending is None or pending.sink is None:
            return
        pending.progress_events += 1
        pending.last_activity = time.monotonic()
        pending.sink({**body, "params": {**params, "progressToken": pending.progress_token}})

    def _on_server_request(self, body: dict[str, Any], related_id: str | int | None) -> None:
        if body.get("method") == "ping":
            self._answer_soon(jsonrpc.result_body(body["id"], {}))
            return
        pending, ambiguous = self._call_for(related_id)
        if pending is not None and pending.sink is not None:
            pending.last_activity = time.monotonic()
            pending.sink(body)
        elif ambiguous:
            # Handing it to a guessed session could show one client's data to another.
            self._answer_soon(jsonrpc.error_body(body["id"], jsonrpc.METHOD_NOT_FOUND, (
                f"Tollgate cannot route {body.get('method')}: calls of several client sessions are in flight on "
                f"the shared upstream {self.name}, and this request does not say which call it belongs to")))
        else:
            self._observer.upstream_request(self, body)

    def _answer_soon(self, body: dict[str, Any]) -> None:
        task = asyncio.create_task(self._answer_quietly(body))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _answer_quietly(self, body: dict[str, Any]) -> None:
        with contextlib.suppress(UpstreamError, TransportError):
            await self.respond(body)

    def unavailable(self) -> UpstreamError:
        """The error for a call that finds this upstream not ready: what it is doing, and why."""
        return UpstreamError(f"upstream {self.name} is unavailable ({self.condition()})")

    def condition(self) -> str:
        """What a not-ready upstream is doing, and why: 'restarting: exited with code 1; ...', 'starting'."""
        doing = {State.UNHEALTHY: "restarting", State.STARTING: "starting"}.get(self.state, self.state.value)
        why = _unnamed(self.name, self.last_error)
        return f"{doing}: {why}" if why else doing

    def calls_in_flight(self) -> int:
        """Clients' requests waiting for this upstream; Tollgate's own (initialize, list reads) are not calls."""
        return sum(1 for pending in self._pending.values() if pending.owner is not None)

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "type": self.config.type,
            "last_error": self.last_error,
            "restarts": self.restarts,
            "failed_starts": self.failed_starts,
            "protocol_version": self.protocol_version,
            "server_info": self.server_info,
            "tools": len(self.catalog.items.get("tools", [])),
            "in_flight": self.calls_in_flight(),
            "non_json_lines": self.non_json_lines,
        }


def _open(pending: _Pending) -> bool:
    # An answered call stays in `_pending` until its waiter resumes; what follows the answer is not its.
    return pending.sink is not None and not pending.future.done()


def _names(name: str, text: str) -> bool:
    head = f"upstream {name}"
    return text.startswith(head) and text[len(head):len(head) + 1] in ("", " ", ":")


def _prefixed(name: str, text: str) -> str:
    """`text` said of upstream `name`, once: transport errors often name the upstream already."""
    return text if _names(name, text) else f"upstream {name}: {text}"


def _unnamed(name: str, text: str) -> str:
    """`text` without a leading 'upstream <name>' (and ': '), to follow a sentence that already names it."""
    return text[len(f"upstream {name}"):].lstrip(": ") if _names(name, text) else text


def _describe(exc: BaseException | None, fallback: str) -> str:
    if exc is None:
        return fallback
    text = str(exc) or type(exc).__name__
    return text if len(text) < 500 else text[:500] + "..."


def dumps_size(value: Any) -> int:
    return len(orjson.dumps(value))
