"""stdio upstream transport: one child process in its own process group, newline-delimited JSON.

Owns spawning, byte-level framing of stdout, stderr to logs and process-group teardown. Knows no
MCP meaning; restarts are the caller's job (it gets on_closed with the cause).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Mapping
from typing import cast

import orjson

from gateway.upstreams.base import (
    ClosedHandler,
    MessageHandler,
    MessageTooLarge,
    Transport,
    TransportClosed,
    TransportError,
)

DEFAULT_LOGGER = logging.getLogger("tollgate.upstreams.stdio")
STDERR_LINE_CAP = 64 * 1024
MIN_SECRET_CHARS = 8  # env values this long or longer are masked in stderr lines; shorter ones (LOG_LEVEL=info) are not
LOG_EXCERPT = 200
# A crash's cause quotes at most this many stderr lines (each cut at LOG_EXCERPT), and only those of the last
# STDERR_RECENT_SECONDS: a banner printed at start an hour ago says nothing of why the process died now.
STDERR_QUOTED_LINES = 5
STDERR_RECENT_SECONDS = 30.0
EVENT_EXCERPT = 120  # of a non-JSON stdout line, in the upstream event recorded (and logged) for it
_POLL_SECONDS = 0.02


class LineFramer:
    """Splits a byte stream on LF, linear in input: only each new chunk is searched.

    Pending bytes of an unfinished line are kept as a list of chunks. When a line passes
    `max_line_bytes`, framing stops and `overflow` holds the size seen so far.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.overflow: int | None = None
        self.high_water = 0
        self._parts: list[bytes] = []
        self._pending = 0

    @property
    def pending_bytes(self) -> int:
        return self._pending

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the complete lines in `chunk` (without LF or a trailing CR)."""
        lines: list[bytes] = []
        start = 0
        while self.overflow is None and (end := chunk.find(b"\n", start)) != -1:
            self._add(chunk[start:end])
            start = end + 1
            if self.overflow is None:
                lines.append(self._take())
        if self.overflow is None and start < len(chunk):
            self._add(chunk[start:] if start else chunk)
        return lines

    def take_pending(self) -> bytes:
        """Hand over the unfinished line (used to break over-long stderr lines)."""
        self.overflow = None
        return self._take()

    def _add(self, piece: bytes) -> None:
        self._parts.append(piece)
        self._pending += len(piece)
        self.high_water = max(self.high_water, self._pending)
        if self._pending > self.max_line_bytes:
            self.overflow = self._pending
            self._parts, self._pending = [], 0

    def _take(self) -> bytes:
        line = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._pending = [], 0
        return line[:-1] if line.endswith(b"\r") else line


def is_json_object(line: bytes) -> bool:
    """True when the line is one well-formed JSON object (valid UTF-8 included)."""
    if not line.lstrip().startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def group_has_running_member(pgid: int) -> bool:
    """Scan /proc for a non-zombie process of the group; assume one runs where /proc is absent."""
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return True
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def exit_status(code: int | None) -> str:
    """How a process ended, from its return code (negative: the signal that killed it, as Popen reports it)."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def excerpt(data: bytes, limit: int = LOG_EXCERPT) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return text + "..." if len(data) > limit else text


def child_environment(env: Mapping[str, str], withheld: Collection[str]) -> dict[str, str]:
    """The gateway's environment without the `withheld` names, then the upstream's own `env` over it."""
    inherited = {name: value for name, value in os.environ.items() if name not in withheld}
    return {**inherited, **env}


def seal_inherited_fds() -> None:
    """Mark every descriptor above stderr close-on-exec, so an upstream inherits only its own stdio.

    uvloop does not implement `close_fds`: a child gets every inheritable descriptor of the gateway, such as
    one its own parent handed it (a supervisor's log pipe), and holds it for as long as it lives, even past the
    gateway. Python opens its own descriptors non-inheritable; this catches the rest before each spawn.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: try the descriptors up to the usual limit
        fds = list(range(3, 4096))
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor), or not ours
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


class _Protocol(asyncio.SubprocessProtocol):
    """Forwards pipe events to the transport; callbacks, so exit is seen even if pipes stay open."""

    def __init__(self, owner: StdioTransport) -> None:
        self._owner = owner

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._owner._on_stdout(data)
        elif fd == 2:
            self._owner._on_stderr(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._owner._on_pipe_lost(fd)

    def process_exited(self) -> None:
        self._owner._on_exit()

    def pause_writing(self) -> None:
        self._owner._can_write.clear()

    def resume_writing(self) -> None:
        self._owner._can_write.set()


class StdioTransport(Transport):
    """A child process speaking newline-delimited JSON-RPC on stdin/stdout."""

    kind = "stdio"

    def __init__(
        self,
        name: str,
        command: str,
        args: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        logger: logging.Logger | None = None,
        *,
        withheld_env: Collection[str] = (),
        grace_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.name = name
        self.command = command
        self.args = tuple(args)
        self.env = dict(env or {})
        self.withheld_env = frozenset(withheld_env)
        # Longest first, so a value containing a shorter one is starred whole; short values are not secrets.
        self._secrets = sorted((v for v in self.env.values() if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)
        self.cwd = cwd
        self.max_message_bytes = max_message_bytes
        self.grace_seconds = grace_seconds
        self.log = logger or DEFAULT_LOGGER
        self._framer = LineFramer(max_message_bytes)
        self._stderr_framer = LineFramer(STDERR_LINE_CAP)
        self._clock = clock  # when each stderr line came, to quote only recent ones; a test passes its own
        self._last_stderr: collections.deque[tuple[float, str]] = collections.deque(maxlen=STDERR_QUOTED_LINES)
        self._proc: asyncio.SubprocessTransport | None = None
        self._pgid: int | None = None
        self._on_message: MessageHandler | None = None
        self._on_closed: ClosedHandler | None = None
        self._can_write = asyncio.Event()
        self._exited = asyncio.Event()
        self._stdout_eof = asyncio.Event()
        self._stderr_eof = asyncio.Event()
        self._ending = asyncio.Event()
        self._fault: BaseException | None = None
        self._close_requested = False
        self._teardown: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid, which is also its process group id."""
        return self._proc.get_pid() if self._proc is not None else None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the unfinished stdout line held in memory."""
        return self._framer.pending_bytes

    async def open(self, on_message: MessageHandler, on_closed: ClosedHandler) -> None:
        self._on_message, self._on_closed = on_message, on_closed
        loop = asyncio.get_running_loop()
        seal_inherited_fds()
        try:
            self._proc, _ = await loop.subprocess_exec(
                lambda: _Protocol(self),
                self.command,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_environment(self.env, self.withheld_env),
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"upstream {self.name}: cannot start {self.command!r}: {exc}") from exc
        self._pgid = self._proc.get_pid()  # start_new_session: the child leads its own group
        self._can_write.set()
        self._teardown = asyncio.create_task(self._run_teardown(), name=f"stdio-teardown-{self.name}")

    async def send(self, message: bytes, *, request_id: str | int | None = None) -> None:
        stdin = self._stdin()
        stdin.write(message)
        stdin.write(b"\n")
        self.stats.bytes_out += len(message)
        self.stats.messages_out += 1
        await self._can_write.wait()
        if self._ending.is_set():
            raise TransportClosed(f"upstream {self.name}: process is gone")

    async def close(self) -> None:
        if self._teardown is None:
            return
        if not self._ending.is_set():
            self._close_requested = True
            self._end(None)
        await asyncio.shield(self._teardown)

    def _stdin(self) -> asyncio.WriteTransport:
        pipe = self._proc.get_pipe_transport(0) if self._proc is not None else None
        if self._ending.is_set() or pipe is None or pipe.is_closing():
            raise TransportClosed(f"upstream {self.name}: process is gone")
        return cast(asyncio.WriteTransport, pipe)  # uvloop's pipe transports are not subclasses

    # Pipe callbacks (called by _Protocol on the event loop).

    def _on_stdout(self, data: bytes) -> None:
        if self._framer.overflow is not None:
            return  # after a fatal oversize nothing more is framed
        for line in self._framer.feed(data):
            self._take_line(line)
        self.stats.extra["buffer_high_water"] = self._framer.high_water
        if self._framer.overflow is not None:
            self._oversized(self._framer.overflow)

    def _take_line(self, line: bytes) -> None:
        if not line.strip():
            return
        if not is_json_object(line):
            self.stats.non_json_lines += 1
            self.stats.extra["non_json_bytes"] = self.stats.extra.get("non_json_bytes", 0) + len(line)
            self._on_event("non_json_line", excerpt(line, EVENT_EXCERPT))  # logged by the client, rate-limited
            return
        self.stats.bytes_in += len(line)
        self.stats.messages_in += 1
        assert self._on_message is not None
        try:
            self._on_message(line, None)
        except Exception:
            self.log.exception("upstream %s: message handler failed", self.name)

    def _oversized(self, size: int) -> None:
        self.stats.oversized_messages += 1
        cap = self.max_message_bytes
        error = MessageTooLarge(f"upstream {self.name}: message of {size}+ bytes passes the cap of {cap}")
        self.log.error("%s; stopping the upstream", error)
        self._end(error)

    def _masked(self, text: str) -> str:
        """Values of the configured env (API keys, tokens) starred out: servers do print their own config."""
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def _on_stderr(self, data: bytes) -> None:
        lines = self._stderr_framer.feed(data)
        if self._stderr_framer.overflow is not None:
            lines.append(self._stderr_framer.take_pending())
        for line in lines:
            text = self._masked(excerpt(line, STDERR_LINE_CAP))
            self.stats.stderr_lines += 1
            self._last_stderr.append((self._clock(), self._masked(excerpt(line))))
            self.log.info("upstream %s stderr: %s", self.name, text)

    def _on_pipe_lost(self, fd: int) -> None:
        if fd == 1:
            self._stdout_eof.set()
            self._end(None)
        elif fd == 2:
            self._stderr_eof.set()
        elif fd == 0:
            self._can_write.set()  # wake senders blocked on a full pipe

    def _on_exit(self) -> None:
        self._exited.set()
        self._end(None)

    def _end(self, fault: BaseException | None) -> None:
        """Start teardown once; `fault` is a cause the exit status cannot tell (oversize)."""
        if not self._ending.is_set():
            self._fault = fault
            self._ending.set()
            self._can_write.set()

    # Teardown: runs once, whatever ended the pipe.

    async def _run_teardown(self) -> None:
        await self._ending.wait()
        if not self._close_requested and self._fault is None:
            await self._wait(self._exited, self.grace_seconds)  # stdout EOF usually just precedes exit
        closed_stdout = not self._exited.is_set()
        await self._stop_group(polite=self._close_requested)
        # Deliver what the pipes still hold; bounded, since a stray process may keep them open.
        await self._wait(self._stdout_eof, self.grace_seconds)
        await self._wait(self._stderr_eof, _POLL_SECONDS * 5)
        cause = self._final_cause(closed_stdout)
        if self._proc is not None:
            self._proc.close()
        if cause is not None:
            self.log.debug("%s", cause)  # the client logs it once, as the upstream's failure
        assert self._on_closed is not None
        self._on_closed(cause)

    def _final_cause(self, closed_stdout: bool) -> BaseException | None:
        if self._close_requested:
            return None
        if self._fault is not None:
            return self._fault
        if closed_stdout:
            return TransportClosed(f"upstream {self.name} closed its stdout")
        code = self._proc.get_returncode() if self._proc is not None else None
        return TransportClosed(f"upstream {self.name} {exit_status(code)}; {self._recent_stderr()}")

    def _recent_stderr(self) -> str:
        since = self._clock() - STDERR_RECENT_SECONDS
        recent = [text for at, text in self._last_stderr if at >= since]
        if recent:
            return "last stderr: " + " | ".join(recent)
        return f"no stderr in its last {STDERR_RECENT_SECONDS:g}s" if self._last_stderr else "last stderr: (none)"

    async def _stop_group(self, *, polite: bool) -> None:
        """Close stdin and wait, then SIGTERM the group and wait, then SIGKILL it and wait."""
        self._close_stdin()
        if polite:
            await self._wait(self._exited, self.grace_seconds)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._group_alive():
                return
            self._killpg(sig)
            for _ in range(max(1, int(self.grace_seconds / _POLL_SECONDS))):
                await asyncio.sleep(_POLL_SECONDS)  # a process group cannot be awaited, only probed
                if not self._group_alive():
                    return

    def _close_stdin(self) -> None:
        pipe = self._proc.get_pipe_transport(0) if self._proc is not None else None
        if pipe is not None:
            pipe.close()

    def _group_alive(self) -> bool:
        """True while a member of the group runs; zombies awaiting a lazy reaper do not count."""
        if self._pgid is None:
            return False
        try:
            os.killpg(self._pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return group_has_running_member(self._pgid)

    def _killpg(self, sig: signal.Signals) -> None:
        if self._pgid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
