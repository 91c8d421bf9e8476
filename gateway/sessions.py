"""Downstream client sessions: identity, negotiated version, in-flight requests, event streams.

A session is created by `initialize` and lives until DELETE or idle expiry. It holds only
per-client state; upstream connections are shared and owned by `gateway.upstreams`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.jsonrpc import RequestId

if TYPE_CHECKING:
    from gateway.upstreams.client import UpstreamClient

REPLAY_BUFFER_EVENTS = 256


@dataclass
class ServerRequest:
    """A server-to-client request relayed to this session, awaiting the client's answer."""

    upstream: UpstreamClient  # the instance that asked: for a stateful upstream, this session's own
    upstream_id: RequestId
    deliver: Callable[[dict[str, Any]], None]  # reaches the client: the call's stream, else the GET stream


class EventStream:
    """One SSE stream's numbered events, kept in a bounded buffer for Last-Event-ID replay."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._seq = itertools.count(1)
        self.buffer: deque[tuple[str, bytes]] = deque(maxlen=REPLAY_BUFFER_EVENTS)
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.attached = False

    def push(self, data: bytes) -> str:
        event_id = f"{self.stream_id}-{next(self._seq)}"
        self.buffer.append((event_id, data))
        self.queue.put_nowait((event_id, data))
        return event_id

    def replay_after(self, last_event_id: str) -> list[tuple[str, bytes]]:
        ids = [event_id for event_id, _ in self.buffer]
        if last_event_id not in ids:
            return list(self.buffer)
        return list(self.buffer)[ids.index(last_event_id) + 1:]


@dataclass
class Session:
    session_id: str
    protocol_version: str
    client_info: dict[str, Any]
    client_capabilities: dict[str, Any]
    auth_identity: str = ""
    user_agent: str = ""
    started_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    cc_session_id: str = ""  # set by gateway.binding once a tool_use_id ties this session
    # Every exposed name this session was shown stays routable for the session's life.
    tool_routes: dict[str, tuple[str, str]] = field(default_factory=dict)
    prompt_routes: dict[str, tuple[str, str]] = field(default_factory=dict)
    in_flight: dict[RequestId, asyncio.Task[Any]] = field(default_factory=dict)
    server_requests: dict[str, ServerRequest] = field(default_factory=dict)
    subscriptions: set[tuple[str, str]] = field(default_factory=set)  # (upstream, uri) of resources/subscribe
    general: EventStream = field(default_factory=lambda: EventStream("g"))
    # Upstreams marked `stateful` get one client (process) per session, closed with the session.
    private_upstreams: dict[str, Any] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def client_name(self) -> str:
        return str(self.client_info.get("name", ""))

    @property
    def client_version(self) -> str:
        return str(self.client_info.get("version", ""))

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def next_server_request_id(self) -> str:
        return f"tollgate-{next(self._ids)}"

    def supports(self, capability: str) -> bool:
        return capability in self.client_capabilities


class SessionRegistry:
    """All live sessions; expiry runs the same cleanup as DELETE."""

    def __init__(self, idle_seconds: float, on_end: Callable[[Session, str], None]) -> None:
        self._sessions: dict[str, Session] = {}
        self._idle_seconds = idle_seconds
        self._on_end = on_end

    def create(self, **kwargs: Any) -> Session:
        session = Session(session_id=secrets.token_hex(16), **kwargs)
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.touch()
        return session

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def end(self, session_id: str, reason: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        for task in session.in_flight.values():
            task.cancel()
        self._on_end(session, reason)
        return True

    def expire_idle(self) -> int:
        cutoff = time.monotonic() - self._idle_seconds
        # A session with a call in flight or a client holding its GET stream is in use, however quiet.
        idle = [s.session_id for s in self._sessions.values()
                if s.last_seen < cutoff and not s.in_flight and not s.general.attached]
        for session_id in idle:
            self.end(session_id, "idle")
        return len(idle)
