"""The gateway's shared state: upstream clients, the merged catalog, sessions and observers.

Starts upstreams concurrently (one that fails never blocks the others), rebuilds the catalog
when an upstream changes, tells sessions which of its lists changed, and fans relay events
out to observers. No HTTP here: `gateway.downstream` is the wire side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import catalog as catalog_mod
from gateway import jsonrpc, mcp
from gateway.catalog import MergedCatalog
from gateway.config import Config, UpstreamConfig
from gateway.naming import NameLedger, Renamed
from gateway.records import CallRecord, Observer
from gateway.sessions import ServerRequest, Session, SessionRegistry
from gateway.upstreams.base import Transport
from gateway.upstreams.client import State, UpstreamClient, UpstreamError

UNSUBSCRIBE_SECONDS = 10.0  # an ended session's leftover subscription; the upstream may be slow or gone
log = logging.getLogger("tollgate.hub")

TransportFactory = Callable[[UpstreamConfig], Transport]
# A part of /healthz beside the upstreams (the store, budgets): its document, and whether it is healthy.
HealthCheck = Callable[[], tuple[dict[str, Any], bool]]


class Hub:
    """Everything the relay and the downstream share, for one running gateway."""

    def __init__(self, config: Config, make_transport: TransportFactory,
                 observers: list[Observer] | None = None) -> None:
        self.config = config
        self.observers: list[Observer] = list(observers or [])
        self._make_transport = make_transport
        self.upstreams: dict[str, UpstreamClient] = {
            u.name: UpstreamClient(u, _bind(make_transport, u), self)
            for u in config.upstreams if u.enabled
        }
        self.catalog = MergedCatalog()
        self._fingerprints = catalog_mod.fingerprints(self.catalog)  # what clients were last told of each list
        self.sessions = SessionRegistry(config.server.session_idle_seconds, self._session_ended,
                                        config.server.max_sessions)
        self._background: set[asyncio.Task[Any]] = set()
        self._finishing: set[asyncio.Task[None]] = set()  # awaited by close: own upstreams stopping, unsubscribes
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False  # set by close: a background task failing from then on ends with the hub
        self.health_checks: dict[str, HealthCheck] = {}  # added by the composition root
        self._refusals_explained: set[str] = set()  # upstreams whose out-of-call requests were explained in the log
        self._renames_logged: set[Renamed] = set()
        # Exposed tool and prompt names handed out to clients: bound to their items for the life of the process.
        self.ledgers = {key: NameLedger() for key in ("tools", "prompts")}

    async def start(self) -> None:
        """Start every upstream and wait (bounded by each one's init timeout) for them."""
        for upstream in self.upstreams.values():
            upstream.start()
        waits = [u.wait_settled(u.config.timeouts.init_seconds) for u in self.upstreams.values()]
        ready = await asyncio.gather(*waits)
        for upstream, ok in zip(self.upstreams.values(), ready, strict=True):
            if ok:
                log.info("upstream %s ready: %d tools (%s)", upstream.name,
                         len(upstream.catalog.items.get("tools", [])), upstream.protocol_version)
            else:
                log.warning("upstream %s not ready: %s", upstream.name, upstream.last_error or "still starting")
        self._reaper = asyncio.create_task(self._reap_idle_sessions())

    async def close(self) -> None:
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self.sessions):
            self.sessions.end(session.session_id, "shutdown")
        # Awaited, not cancelled: a private stdio client may still be waiting out the grace before
        # SIGKILL of a worker that ignores SIGTERM, and the loop ends right after this.
        await asyncio.gather(*(u.close() for u in self.upstreams.values()), *self._finishing,
                             return_exceptions=True)
        for task in list(self._background):
            task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a fire-and-forget coroutine; its failure is logged, never raised."""
        task = asyncio.create_task(self._logged(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_idle_sessions(self) -> None:
        interval = max(1.0, min(60.0, self.config.server.session_idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            expired = self.sessions.expire_idle()
            if expired:
                log.info("expired %d idle session(s)", expired)

    # ----- UpstreamObserver -----------------------------------------------------------------

    def upstream_changed(self, upstream: UpstreamClient) -> None:
        merged = catalog_mod.merge(self.config.server.registered_name, self.upstreams.values(), self.ledgers)
        self.catalog = merged
        fingerprints = catalog_mod.fingerprints(merged)
        changed = [key for key, digest in fingerprints.items() if digest != self._fingerprints.get(key)]
        self._fingerprints = fingerprints
        for renamed in merged.renamed:
            if renamed not in self._renames_logged:  # once per process, not each time the tool list changes
                self._renames_logged.add(renamed)
                log.info("exposed %s/%s as %s (%s)", renamed.upstream, renamed.tool, renamed.exposed,
                         renamed.reason)
        for method in dict.fromkeys(mcp.LIST_CHANGED[key] for key in changed):
            self._broadcast(jsonrpc.notification_body(method))
        if upstream.state is State.READY:
            for snapshot in catalog_mod.snapshots(merged):
                if snapshot.upstream == upstream.name:
                    self._each_observer(lambda o, s=snapshot: o.tool_list_changed(s))  # type: ignore[misc]

    def upstream_notification(self, upstream: UpstreamClient, body: dict[str, Any]) -> None:
        """A notification of a shared upstream tied to no call (the client routed the others)."""
        route_notification(upstream, body, list(self.sessions), self._broadcast)

    def upstream_request(self, upstream: UpstreamClient, body: dict[str, Any]) -> None:
        """A server-to-client request of a shared upstream tied to no call: no client can be chosen safely.

        Refused rather than answered for the clients (an empty roots list, say): the upstream would take that as
        every client's answer, and server-everything caches it and never asks again during a call."""
        method = body.get("method")
        error = jsonrpc.error_body(body.get("id"), jsonrpc.METHOD_NOT_FOUND,
                                   f"Tollgate cannot route {method} outside a call: {_refusal_reason(upstream)}")
        self.spawn(upstream.respond(error))
        if upstream.name in self._refusals_explained:
            log.debug("upstream %s asked %s outside any call; refused", upstream.name, method)
            return
        self._refusals_explained.add(upstream.name)
        if upstream.config.stateful:
            kind, instead = "a stateful upstream's catalog instance", "each session's own instance asks that session"
        else:
            kind, instead = "a shared upstream", "during a call it reaches that call's client"
        log.info("upstream %s asked %s outside any call: refused, as expected for %s (no one client session can "
                 "be asked; %s). Harmless: an error the upstream logs about it is this refusal",
                 upstream.name, method, kind, instead)

    def offer_server_request(self, session: Session, upstream: UpstreamClient, body: dict[str, Any],
                             deliver: Callable[[dict[str, Any]], None]) -> None:
        """Relay a server-to-client request to `session` under an id of its own, or refuse it at once
        when the client lacks the capability it needs."""
        needed = mcp.SERVER_REQUEST_CAPABILITY.get(str(body.get("method")))
        if needed is not None and not session.supports(needed):
            error = jsonrpc.error_body(body["id"], jsonrpc.METHOD_NOT_FOUND, f"The client does not support {needed}")
            self.spawn(upstream.respond(error))
            return
        downstream_id = session.next_server_request_id()
        session.server_requests[downstream_id] = ServerRequest(upstream, body["id"], deliver)
        deliver({**body, "id": downstream_id})

    def upstream_event(self, upstream: UpstreamClient, kind: str, detail: str) -> None:
        self._each_observer(lambda o: o.upstream_event(upstream.name, kind, detail))

    # ----- relay events ---------------------------------------------------------------------

    def hand_out(self, key: str) -> dict[str, catalog_mod.Route]:
        """The current routes of `key` ("tools" or "prompts"), their names bound from now on: a client is
        about to learn or use them, so no later catalog may give one of them to another item."""
        names = self.catalog.names.get(key)
        if names is not None:  # None before the first catalog, which has nothing to hand out
            self.ledgers[key].bind(names)
        return self.catalog.tool_routes if key == "tools" else self.catalog.prompt_routes

    def call_finished(self, call: CallRecord) -> None:
        self._each_observer(lambda o: o.call_finished(call))

    async def client_for(self, session: Session, shared: UpstreamClient) -> UpstreamClient:
        """The client that serves `session`'s calls: the shared one, or for a `stateful` upstream the
        session's own (started on first use, closed when the session ends)."""
        if not shared.config.stateful:
            return shared
        client = session.private_upstreams.get(shared.name)
        if client is None:
            client = UpstreamClient(shared.config, _bind(self._make_transport, shared.config),
                                    _PrivateObserver(self, session))
            client.log_level = session.log_level  # set at its start, as the client asked before it existed
            session.private_upstreams[shared.name] = client
            client.start()
        if not await client.wait_settled(shared.config.timeouts.init_seconds):
            raise UpstreamError(f"upstream {shared.name} (this session's instance) is unavailable: "
                                f"{client.last_error or 'still starting'}")
        assert isinstance(client, UpstreamClient)
        return client

    def session_started(self, session: Session) -> None:
        self._each_observer(lambda o: o.session_event(_session_row(session)))

    def _session_ended(self, session: Session, reason: str) -> None:
        log.info("session %s ended (%s)", session.session_id[:8], reason)
        self._each_observer(lambda o: o.session_event(_session_row(session, ended=True)))
        session.general.end()  # wakes and closes an attached GET stream
        for client in session.private_upstreams.values():
            self._finish_before_close(client.close(), f"close-{client.name}-{session.session_id[:8]}")
        session.private_upstreams.clear()
        self._unsubscribe_orphans(session)

    def _unsubscribe_orphans(self, session: Session) -> None:
        """Unsubscribe a shared upstream from the uris only the ended session wanted updates of (clients rarely
        unsubscribe before they go); a session's own instances are being closed anyway."""
        for upstream_name, uri in sorted(session.subscriptions):
            upstream = self.upstreams.get(upstream_name)
            wanted = any((upstream_name, uri) in s.subscriptions for s in self.sessions if s is not session)
            if upstream is None or upstream.config.stateful or wanted:
                continue
            request = upstream.request("resources/unsubscribe", {"uri": uri}, idle_seconds=UNSUBSCRIBE_SECONDS)
            self._finish_before_close(request, f"unsubscribe-{upstream_name}")
        session.subscriptions.clear()

    def _finish_before_close(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `work` in the background; `close` awaits it rather than cancelling it (unlike `spawn`)."""
        task = asyncio.create_task(self._logged(work), name=name)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _logged(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Await `coro`, logging its failure rather than raising it. A failure once the hub is closing is the
        shutdown's doing (the upstream it answers is already gone), not news: logged at debug only."""
        try:
            await coro
        except Exception as exc:
            if self._closing:
                log.debug("background task ended by the shutdown: %s", exc)
            else:
                log.info("background task failed: %s", exc)

    def _broadcast(self, body: dict[str, Any]) -> None:
        data = jsonrpc.encode(body)
        for session in self.sessions:
            session.general.push(data)

    def _each_observer(self, deliver: Callable[[Observer], None]) -> None:
        for observer in self.observers:
            try:
                deliver(observer)
            except Exception:
                log.exception("observer %s failed", type(observer).__name__)

    def health(self) -> dict[str, Any]:
        """`down` when no upstream is ready; `degraded` when some is not, or a health check fails (the store is
        unreachable or refusing writes, a budget refuses every call for want of its spend)."""
        upstreams = {name: u.health() for name, u in sorted(self.upstreams.items())}
        states = {u["state"] for u in upstreams.values()}
        status = "ok" if states <= {"ready"} else ("degraded" if "ready" in states else "down")
        if not upstreams:
            status = "ok"
        parts = {}
        for name, check in sorted(self.health_checks.items()):
            parts[name], healthy = check()
            if not healthy and status == "ok":
                status = "degraded"
        return {"status": status, "sessions": len(self.sessions), "tools": len(self.catalog.tools),
                "upstreams": upstreams, **parts}


def route_notification(upstream: UpstreamClient, body: dict[str, Any], sessions: list[Session],
                       everyone: Callable[[dict[str, Any]], None]) -> None:
    """Give an upstream's unrelated notification to the sessions it concerns: a cancel of a relayed
    request to the client holding it, `resources/updated` to subscribers of the uri, the rest to all."""
    method, params = body.get("method"), body.get("params")
    params = params if isinstance(params, dict) else {}
    if method == "notifications/cancelled":
        _cancel_server_request(upstream, params, sessions)
    elif method == "notifications/resources/updated":
        data = jsonrpc.encode(body)
        for session in sessions:
            if (upstream.name, str(params.get("uri"))) in session.subscriptions:
                session.general.push(data)
    else:
        everyone(body)


def _cancel_server_request(upstream: UpstreamClient, params: dict[str, Any], sessions: list[Session]) -> None:
    for session in sessions:
        for downstream_id, pending in list(session.server_requests.items()):
            if pending.upstream is upstream and pending.upstream_id == params.get("requestId"):
                del session.server_requests[downstream_id]
                pending.deliver(jsonrpc.notification_body("notifications/cancelled",
                                                          {**params, "requestId": downstream_id}))
                return


def _bind(factory: TransportFactory, config: UpstreamConfig) -> Callable[[], Transport]:
    return lambda: factory(config)


def _session_row(session: Session, ended: bool = False) -> dict[str, Any]:
    return {
        "mcp_session_id": session.session_id, "started_at": session.started_at,
        "ended_at": time.time() if ended else None, "client_name": session.client_name,
        "client_version": session.client_version, "protocol_version": session.protocol_version,
        "auth_identity": session.auth_identity, "cc_session_id": session.cc_session_id,
        "user_agent": session.user_agent,
    }


def _refusal_reason(upstream: UpstreamClient) -> str:
    """Why the hub's own instance of `upstream` cannot ask a client. A stateful upstream already gives each
    session its own instance (which does ask its session): advising to mark it stateful would be wrong."""
    if upstream.config.stateful:
        return (f"this instance of the stateful upstream {upstream.name} only lists its tools for all client "
                "sessions, so no one client can be asked (expected; each session's own instance asks that session)")
    return (f"the upstream {upstream.name} is shared by all client sessions, so no one client can be asked (expected; "
            "during a call it reaches that call's client; mark the upstream stateful to give each session its own)")


class _PrivateObserver:
    """Observer of a session's own upstream instance: its catalog is the shared one's, its
    notifications go to that session only."""

    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub, self.session = hub, session

    def upstream_changed(self, upstream: UpstreamClient) -> None:
        return None

    def upstream_notification(self, upstream: UpstreamClient, body: dict[str, Any]) -> None:
        route_notification(upstream, body, [self.session], self._push)

    def upstream_request(self, upstream: UpstreamClient, body: dict[str, Any]) -> None:
        """Outside a call, this instance's requests (roots/list, say) can only be for its session."""
        self.hub.offer_server_request(self.session, upstream, body, self._push)

    def upstream_event(self, upstream: UpstreamClient, kind: str, detail: str) -> None:
        self.hub.upstream_event(upstream, kind, detail)

    def _push(self, body: dict[str, Any]) -> None:
        self.session.general.push(jsonrpc.encode(body))
