"""Downstream client sessions: identity, negotiated version, in-flight requests, event streams.

A session is created by `initialize` and lives until DELETE or idle expiry. It holds only
per-client state; upstream connections are shared and owned by `gateway.upstreams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.jsonrpc import RequestId

if TYPE_CHECKING:
    from gateway.upstreams.client import UpstreamClient

REPLAY_BUFFER_EVENTS = 256
REPLAY_BUFFER_BYTES = 8 * 1024 * 1024  # per stream; the newest event is kept whatever its size
POST_STREAMS_KEPT = 8  # a session's most recent POST streams, resumable with their Last-Event-ID


@dataclass
class ServerRequest:
    """A server-to-client request relayed to this session, awaiting the client's answer."""

    upstream: UpstreamClient  # the instance that asked: for a stateful upstream, this session's own
    upstream_id: RequestId
    deliver: Callable[[dict[str, Any]], None]  # reaches the client: the call's stream, else the GET stream


class EventStream:
    """One SSE stream's events, numbered `<stream id>-<n>`, in a bounded buffer that readers follow.

    Each reader keeps its own position, so a live GET, a GET resumed with Last-Event-ID and a replay
    read alike; what a client away or slow has not read is kept only as far as the bounds allow.
    """

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.last_seq = 0
        self.delivered = 0  # the last event a reader wrote out: where a GET without Last-Event-ID resumes
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.buffered_bytes = 0
        self.ended = False
        self.reader = 0  # the GET now writing this stream out (0: none); a newer GET takes it over
        self._readers = itertools.count(1)
        self._changed = asyncio.Event()

    @property
    def attached(self) -> bool:
        return self.reader != 0

    def take_over(self) -> int:
        """Make a new reader the stream's only one; the one before it (a dropped connection the server has not
        noticed yet, say) stops at its next step instead of holding the stream until a keepalive fails."""
        self.reader = next(self._readers)
        self._changed.set()
        return self.reader

    def let_go(self, reader: int) -> None:
        if self.reader == reader:
            self.reader = 0

    def event_id(self, seq: int) -> str:
        return f"{self.stream_id}-{seq}"

    def push(self, data: bytes) -> str:
        self.last_seq += 1
        self.buffer.append((self.last_seq, data))
        self.buffered_bytes += len(data)
        while len(self.buffer) > REPLAY_BUFFER_EVENTS or (
                self.buffered_bytes > REPLAY_BUFFER_BYTES and len(self.buffer) > 1):
            self.buffered_bytes -= len(self.buffer.popleft()[1])
        self._changed.set()
        return self.event_id(self.last_seq)

    def end(self) -> None:
        """No more events: readers return once they have written what is buffered."""
        self.ended = True
        self._changed.set()

    def after(self, seq: int) -> list[tuple[int, bytes]]:
        """Buffered events numbered past `seq`, oldest first."""
        if not self.buffer:
            return []
        return list(itertools.islice(self.buffer, max(0, seq + 1 - self.buffer[0][0]), None))

    def seq_of(self, event_id: str) -> int | None:
        """The number in one of this stream's event ids; None for another stream's or one never issued."""
        stream_id, _, number = event_id.rpartition("-")
        if stream_id != self.stream_id or not number.isdigit() or int(number) > self.last_seq:
            return None
        return int(number)

    async def wait(self, seq: int, timeout: float, reader: int | None = None) -> bool:
        """Wait until there is an event past `seq`, the stream ended or `reader` lost it; False on `timeout`."""
        if self.last_seq > seq or self.ended or (reader is not None and self.reader != reader):
            return True
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        return False


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
    log_level: str | None = None  # the client's logging/setLevel, given to its own upstream instances as they start
    # Stream ids carry a random per-session tag, so another session's event id is never taken for ours.
    _tag: str = field(default_factory=lambda: secrets.token_hex(4))
    general: EventStream = field(init=False)
    post_streams: OrderedDict[str, EventStream] = field(default_factory=OrderedDict)
    # Upstreams marked `stateful` get one client (process) per session, closed with the session.
    private_upstreams: dict[str, Any] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _stream_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.general = EventStream(f"{self._tag}g")

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

    def open_stream(self) -> EventStream:
        """A new POST answer stream, kept (the last POST_STREAMS_KEPT of them) for resumption."""
        stream = EventStream(f"{self._tag}p{next(self._stream_ids)}")
        self.post_streams[stream.stream_id] = stream
        while len(self.post_streams) > POST_STREAMS_KEPT:
            self.post_streams.popitem(last=False)
        return stream

    def resume_point(self, last_event_id: str | None) -> tuple[EventStream, int]:
        """The stream a GET continues and the number of the last event of it the client saw.

        No Last-Event-ID: the general stream, after what was delivered. One of this session's
        streams: that stream, after it. Anything else: the general stream, replaying nothing."""
        if last_event_id is None:
            return self.general, self.general.delivered
        stream_id = last_event_id.rpartition("-")[0]
        stream = self.general if stream_id == self.general.stream_id else self.post_streams.get(stream_id)
        seq = stream.seq_of(last_event_id) if stream is not None else None
        if stream is None or seq is None:
            return self.general, self.general.last_seq
        return stream, seq


class SessionLimit(Exception):
    """`max_sessions` sessions are open: a new one must wait for a DELETE or an idle expiry."""

    def __init__(self, max_sessions: int) -> None:
        super().__init__(f"{max_sessions} sessions are open (server.max_sessions)")
        self.max_sessions = max_sessions


class SessionRegistry:
    """All live sessions, at most `max_sessions` of them; expiry runs the same cleanup as DELETE."""

    def __init__(self, idle_seconds: float, on_end: Callable[[Session, str], None],
                 max_sessions: int = 1000) -> None:
        self._sessions: dict[str, Session] = {}
        self._idle_seconds = idle_seconds
        self._on_end = on_end
        self.max_sessions = max_sessions
        self.refused = 0  # creates refused since start because the cap was reached

    def create(self, **kwargs: Any) -> Session:
        """A new session; SessionLimit when the cap is reached even after ending idle ones."""
        if len(self._sessions) >= self.max_sessions and not self.expire_idle():
            self.refused += 1
            raise SessionLimit(self.max_sessions)
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
