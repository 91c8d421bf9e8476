"""Incremental Server-Sent Events parser over raw byte chunks (WHATWG event-stream rules).

Pure and I/O-free: feed chunks as they arrive, get complete events back. Linear in input size
(only new bytes are scanned) and bounded: an event larger than the cap raises EventTooLarge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class EventTooLarge(ValueError):
    """One event (its data plus the pending line) grew past the parser's cap."""


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event; `data` is the raw payload bytes (data lines joined with LF)."""

    event: str
    data: bytes
    id: str | None

    @property
    def empty(self) -> bool:
        """No payload: a `data:` line with nothing (or only blanks) after it. The Streamable HTTP priming event
        (an `id:` and an empty `data:`, sent first on every stream since 2025-11-25) is one: it carries an id to
        resume from and no message, so transports skip it; its id is kept as `last_event_id` all the same."""
        return not self.data.strip()


class SseParser:
    """Turns a byte stream into SseEvents; remembers the last event id across events."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self._line = bytearray()
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._event = ""
        self._saw_cr = False  # a chunk ended in CR: a leading LF of the next chunk belongs to it
        self._started = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the event being assembled (pending line plus data lines)."""
        return len(self._line) + self._data_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Consume one chunk; return every event it completed, in order."""
        chunk = self._strip_prefix(chunk)
        events: list[SseEvent] = []
        start = 0
        for match in _LINE_END.finditer(chunk):
            self._line += chunk[start : match.start()]
            start = match.end()
            event = self._take_line()
            if event is not None:
                events.append(event)
        self._line += chunk[start:]
        self._saw_cr = chunk.endswith(b"\r")
        self._check_size()
        return events

    def _strip_prefix(self, chunk: bytes) -> bytes:
        if self._saw_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._saw_cr = False
        if not self._started and chunk:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        return chunk

    def _check_size(self) -> None:
        if self.max_event_bytes is not None and self.buffered_bytes > self.max_event_bytes:
            size = self.buffered_bytes
            self._reset_event()
            self._line.clear()
            raise EventTooLarge(f"event of at least {size} bytes passes the cap of {self.max_event_bytes}")

    def _take_line(self) -> SseEvent | None:
        line = bytes(self._line)
        self._line.clear()
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        self._apply_field(name, value)
        self._check_size()
        return None

    def _apply_field(self, name: bytes, value: bytes) -> None:
        if name == b"data":
            self._data.append(value)
            self._data_bytes += len(value) + 1
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self.last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SseEvent(event=self._event or "message", data=data, id=self.last_event_id)
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._data = []
        self._data_bytes = 0
        self._event = ""
