"""Streamable HTTP upstream transport: one POST per message, answered by JSON or an SSE stream.

Owns one aiohttp ClientSession per upstream, the Mcp-Session-Id, the optional GET event stream and
its resumption with Last-Event-ID. Knows JSON-RPC ids only to keep error bodies; no MCP meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from gateway.upstreams.base import (
    ClosedHandler,
    MessageHandler,
    MessageTooLarge,
    SessionLost,
    Transport,
    TransportClosed,
    TransportError,
)
from gateway.upstreams.sse_parser import EventTooLarge, SseParser

DEFAULT_LOGGER = logging.getLogger("tollgate.upstreams.http")
ERROR_EXCERPT = 200
ERROR_BODY_CAP = 64 * 1024
RETRY_DELAY = 0.5  # seconds before reconnecting a dropped stream, unless the server says `retry:`
ACCEPT_BOTH = "application/json, text/event-stream"


def safe_url(url: str) -> str:
    """The URL without credentials or query (either may hold a secret), for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, url: str) -> str:
    """`text` with the parts of `url` that may hold a secret (user, password, query) masked: aiohttp's
    error messages quote the whole URL."""
    parts = urlsplit(url)
    pieces = parts.query.split("&")
    candidates = {parts.query, parts.username or "", parts.password or "", *pieces,
                  *(piece.partition("=")[2] for piece in pieces)}
    for secret in sorted((c for c in candidates if len(c) >= 4), key=len, reverse=True):  # short ones match anything
        text = text.replace(secret, "***")
    return text


class translate_errors:  # a lower-case name: used as `with translate_errors(...)`, like the generator it replaced
    """Map aiohttp and socket failures to Tollgate transport errors, once, at the boundary.

    A plain class rather than @contextmanager: it wraps every POST, and a generator-based context
    manager costs a few µs per use."""

    __slots__ = ("name", "timeout", "url")

    def __init__(self, name: str, url: str, timeout: float) -> None:
        self.name, self.url, self.timeout = name, url, timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, TransportError):
            return None
        name, url = self.name, self.url
        if isinstance(exc, TimeoutError):
            raise TransportError(f"upstream {name} at {safe_url(url)}: no answer within {self.timeout:g}s") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise TransportClosed(f"upstream {name} at {safe_url(url)}: cannot connect: "
                                  f"{redact(str(exc.os_error or exc), url)}") from exc
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise TransportClosed(f"upstream {name} at {safe_url(url)}: connection failed: "
                                  f"{type(exc).__name__}: {redact(str(exc), url)}") from exc
        return None


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The whole body, or None when it passes `cap` bytes (reading stops there)."""
    if response.content_length is not None and response.content_length > cap:
        return None
    parts: list[bytes] = []
    size = 0
    # iter_chunks: each chunk as the parser buffered it, never copied; iter_chunked(n) re-slices into n-byte
    # copies and iter_any joins whatever is buffered, so either copies a 10 MB body once more than this join.
    async for chunk, _ in response.content.iter_chunks():
        size += len(chunk)
        if size > cap:
            return None
        parts.append(chunk)
    return b"".join(parts)


def json_rpc_id(body: bytes) -> tuple[bool, Any]:
    """(is a JSON-RPC error object, its id) for an HTTP error body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return True, parsed.get("id")
    return False, None


class StreamableHttpTransport(Transport):
    """An MCP server reached over Streamable HTTP (protocol 2025-03-26 and later)."""

    kind = "http"
    relates_messages = True

    def __init__(
        self,
        name: str,
        url: str,
        headers: dict[str, str] | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        connect_timeout: float = 10.0,
        logger: logging.Logger | None = None,
        *,
        stream_retries: int = 5,
    ) -> None:
        super().__init__()
        self.name = name
        self.url = url
        self.headers = dict(headers or {})
        self.max_message_bytes = max_message_bytes
        self.connect_timeout = connect_timeout
        self.stream_retries = stream_retries
        self.log = logger or DEFAULT_LOGGER
        self.protocol_version: str | None = None
        self._session_id: str | None = None
        self._client: aiohttp.ClientSession | None = None
        self._on_message: MessageHandler | None = None
        self._on_closed: ClosedHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._event_stream: asyncio.Task[None] | None = None
        self._want_event_stream = False
        self._session_changed = False
        self._closed = False

    @property
    def session_id(self) -> str | None:
        return self._session_id

    async def open(self, on_message: MessageHandler, on_closed: ClosedHandler) -> None:
        self._on_message, self._on_closed = on_message, on_closed
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout)
        self._client = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)

    def set_protocol_version(self, version: str) -> None:
        self.protocol_version = version

    async def send(self, message: bytes, *, request_id: str | int | None = None) -> None:
        client = self._live_client()
        self._resume_event_stream_after_new_session()
        sent_session = self._session_id
        headers = self._headers(accept=ACCEPT_BOTH, content_type="application/json")
        with translate_errors(self.name, self.url, self.connect_timeout):
            response = await client.post(self.url, data=message, headers=headers)
        self.stats.bytes_out += len(message)
        self.stats.messages_out += 1
        self._capture_session(response)
        try:
            await self._take_response(response, request_id, sent_session)
        except BaseException:
            response.release()
            raise

    async def open_event_stream(self) -> bool:
        """Open the GET stream for server-initiated messages; False when the server offers none."""
        self._want_event_stream = True
        if self._event_stream is not None and not self._event_stream.done():
            return True
        response = await self._get_stream(last_event_id=None)
        if response is None:
            self._want_event_stream = False
            return False
        self._event_stream = self._spawn(self._run_event_stream(response), "event-stream")
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._shutdown()
        if self._on_closed is not None:
            self._on_closed(None)

    # Responses to POST.

    async def _take_response(
        self, response: aiohttp.ClientResponse, request_id: str | int | None, sent_session: str | None
    ) -> None:
        if response.status == 404 and sent_session is not None:
            if self._session_id == sent_session:  # a late 404 for an older session must not drop the new one
                self._session_id = None
            raise SessionLost(f"upstream {self.name} no longer knows our session (HTTP 404)")
        if response.status in (202, 204):
            response.release()
        elif response.status >= 400:
            await self._take_error(response, request_id)
        elif response.content_type == "text/event-stream":
            self._spawn(self._run_post_stream(response, request_id), f"post-stream-{request_id}")
        elif response.content_type == "application/json":
            await self._take_json(response, request_id)
        else:
            raise TransportError(f"upstream {self.name}: unexpected content type {response.content_type!r}")

    async def _take_json(self, response: aiohttp.ClientResponse, related_id: str | int | None) -> None:
        with translate_errors(self.name, self.url, self.connect_timeout):
            body = await read_capped(response, self.max_message_bytes)
        if body is None:
            raise self._oversized(f"a JSON answer passes the {self.max_message_bytes} byte cap")
        if body.lstrip().startswith(b"["):
            # Batched answers (pre 2025-06-18): re-serialized per item, the only way to split them.
            for item in orjson.loads(body):
                self._deliver(orjson.dumps(item), related_id)
        elif body.strip():
            self._deliver(body, related_id)

    async def _take_error(self, response: aiohttp.ClientResponse, request_id: str | int | None) -> None:
        with translate_errors(self.name, self.url, self.connect_timeout):
            body = await read_capped(response, ERROR_BODY_CAP) or b""
        is_error, error_id = json_rpc_id(body)
        if is_error and request_id is not None and error_id == request_id:
            self._deliver(body, request_id)
            return
        text = redact(body[:ERROR_EXCERPT].decode("utf-8", "replace").strip(), self.url)  # it may echo the URL
        raise TransportError(f"upstream {self.name}: HTTP {response.status}: {text or response.reason}")

    # SSE streams (POST answers and the GET stream).

    async def _run_post_stream(self, response: aiohttp.ClientResponse, related_id: str | int | None) -> None:
        parser = SseParser(self.max_message_bytes)
        if await self._consume(response, parser, related_id) or parser.last_event_id is None:
            return
        await self._resume(parser, related_id)  # dropped mid-answer: the server may replay it

    async def _run_event_stream(self, response: aiohttp.ClientResponse) -> None:
        parser = SseParser(self.max_message_bytes)
        await self._consume(response, parser, None)
        await self._resume(parser, None)

    async def _resume(self, parser: SseParser, related_id: str | int | None) -> None:
        """Reconnect with GET and Last-Event-ID until the stream ends cleanly or retries run out."""
        failures = 0
        while not self._closed and failures < self.stream_retries:
            await asyncio.sleep((parser.retry_ms or RETRY_DELAY * 1000) / 1000)
            response = await self._get_stream(parser.last_event_id)
            if response is None:
                failures += 1
                continue
            seen = self.stats.messages_in
            clean = await self._consume(response, parser, related_id)
            if related_id is not None and clean:
                return
            failures = 0 if self.stats.messages_in > seen else failures + 1
        if not self._closed:
            self.log.warning("upstream %s: event stream gave up after %d attempts", self.name, failures)

    async def _get_stream(self, last_event_id: str | None) -> aiohttp.ClientResponse | None:
        """GET an event stream; None when the server has none (405) or refuses."""
        headers = self._headers(accept="text/event-stream")
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        try:
            with translate_errors(self.name, self.url, self.connect_timeout):
                response = await self._live_client().get(self.url, headers=headers)
        except TransportError as exc:
            self.log.info("upstream %s: event stream unavailable: %s", self.name, exc)
            return None
        if response.status == 200 and response.content_type == "text/event-stream":
            return response
        response.release()
        if response.status != 405:
            self.log.info("upstream %s: GET event stream answered HTTP %d", self.name, response.status)
        return None

    async def _consume(
        self, response: aiohttp.ClientResponse, parser: SseParser, related_id: str | int | None
    ) -> bool:
        """Deliver each message event as it arrives; True on a clean end of stream."""
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event == "message" and not event.empty:  # a priming event: its id is all it has
                        self._deliver(event.data, related_id)
            return True
        except EventTooLarge as exc:
            self._fail(self._oversized(str(exc)))
            return True
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.log.info("upstream %s: event stream dropped: %s", self.name, type(exc).__name__)
            return False
        finally:
            response.release()

    # Plumbing.

    def _deliver(self, raw: bytes, related_id: str | int | None) -> None:
        self.stats.bytes_in += len(raw)
        self.stats.messages_in += 1
        assert self._on_message is not None
        try:
            self._on_message(raw, related_id)
        except Exception:
            self.log.exception("upstream %s: message handler failed", self.name)

    def _headers(self, *, accept: str, content_type: str | None = None) -> dict[str, str]:
        headers = {**self.headers, "Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self._session_id is not None:
            headers["Mcp-Session-Id"] = self._session_id
        if self.protocol_version is not None:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def _capture_session(self, response: aiohttp.ClientResponse) -> None:
        session_id = response.headers.get("Mcp-Session-Id")
        if session_id and session_id != self._session_id:
            self._session_changed = self._session_id is not None or self._event_stream is not None
            self._session_id = session_id

    def _resume_event_stream_after_new_session(self) -> None:
        """After a re-initialize the old GET stream is dead; reopen it on the next message we send
        (the initialized notification), since the spec allows the GET only after initialize."""
        if not (self._session_changed and self._want_event_stream):
            return
        self._session_changed = False
        if self._event_stream is not None:
            self._event_stream.cancel()
        self._event_stream = None
        self._spawn(self._reopen_event_stream(), "event-stream-reopen")

    async def _reopen_event_stream(self) -> None:
        await self.open_event_stream()

    def _oversized(self, detail: str) -> MessageTooLarge:
        self.stats.oversized_messages += 1
        error = MessageTooLarge(f"upstream {self.name}: {detail}")
        self.log.error("%s", error)
        return error

    def _fail(self, cause: BaseException) -> None:
        """A fault the caller cannot see from send(): close and report it through on_closed."""
        if self._closed:
            return
        self._closed = True
        self._spawn(self._fail_later(cause), "fail")

    async def _fail_later(self, cause: BaseException) -> None:
        await self._shutdown()
        if self._on_closed is not None:
            self._on_closed(cause)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self._end_session()
        if self._client is not None:
            await self._client.close()

    async def _end_session(self) -> None:
        if self._client is None or self._client.closed or self._session_id is None:
            return
        headers = self._headers(accept=ACCEPT_BOTH)
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with asyncio.timeout(self.connect_timeout):
                response = await self._client.delete(self.url, headers=headers)
                response.release()
        self._session_id = None

    def _live_client(self) -> aiohttp.ClientSession:
        if self._closed or self._client is None:
            raise TransportClosed(f"upstream {self.name}: transport is closed")
        return self._client

    def _spawn(self, coro: Coroutine[Any, Any, None], label: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"http-{self.name}-{label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
