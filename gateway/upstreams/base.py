"""The transport interface every upstream speaks, and the errors transports raise.

A transport is a duplex pipe of serialized JSON-RPC messages (raw bytes, exactly as they crossed
the wire). It knows framing and connection state, never MCP meaning: id correlation, the
initialize handshake and restarts live in `gateway.upstreams.client`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field


class TransportError(Exception):
    """Base of every error a transport raises; the message is safe to show to a client."""


class TransportClosed(TransportError):
    """The pipe is gone (process exited, connection dropped); in-flight requests fail."""


class SessionLost(TransportError):
    """The upstream forgot our session (HTTP 404 on a known session id): re-initialize and retry."""


class MessageTooLarge(TransportError):
    """One inbound message passed the configured size cap; the transport restarts the pipe."""


# Called once per inbound message with its raw bytes (no trailing newline or SSE framing).
# `related_id` is the JSON-RPC id of the outbound request whose HTTP response stream carried
# the message, when the transport knows it (Streamable HTTP); None otherwise.
MessageHandler = Callable[[bytes, "str | int | None"], None]
# Called once when the pipe ends; None for an orderly close, else the cause.
ClosedHandler = Callable[[BaseException | None], None]
# Called with (kind, detail) for what is worth recording but is no message, e.g. a non-JSON stdout line.
EventHandler = Callable[[str, str], None]


@dataclass
class TransportStats:
    """Counters a transport keeps for health and metrics; plain ints, read by the gateway."""

    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    non_json_lines: int = 0
    oversized_messages: int = 0
    stderr_lines: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Transport(abc.ABC):
    """One connection to one upstream MCP server, carrying raw JSON-RPC messages."""

    kind: str = "abstract"
    # True when every message that belongs to a request arrives tagged with its id (Streamable HTTP),
    # so an untagged one belongs to none; False when untagged is all the transport can say (stdio).
    relates_messages: bool = False

    def __init__(self) -> None:
        self.stats = TransportStats()
        self._on_event: EventHandler = _ignore_event

    @abc.abstractmethod
    async def open(self, on_message: MessageHandler, on_closed: ClosedHandler) -> None:
        """Connect or spawn. Returns once messages can be sent; raises TransportError if not."""

    @abc.abstractmethod
    async def send(self, message: bytes, *, request_id: str | int | None = None) -> None:
        """Deliver one serialized JSON-RPC message upstream.

        `request_id` is set when the message is a request, so transports that answer on a
        per-request stream (Streamable HTTP) can tag inbound messages with it. Raises
        SessionLost when the upstream dropped our session, TransportClosed when the pipe is gone.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything (processes, sockets, tasks). Safe to call twice."""

    def set_protocol_version(self, version: str) -> None:  # noqa: B027 - optional hook
        """Told the negotiated protocol version after initialize (HTTP sends it as a header)."""

    def set_event_handler(self, handler: EventHandler) -> None:
        """Told where to report events that are not messages; every one is reported, unthrottled."""
        self._on_event = handler


def _ignore_event(kind: str, detail: str) -> None:
    return None
