"""The Streamable HTTP server side of `/mcp`: sessions, POST answers as JSON or SSE, GET, DELETE.

HTTP concerns only (auth, media types, size caps, session headers, SSE framing; Host and Origin are
`gateway.guards`' for every route); message meaning is `gateway.relay`'s. Refuses the 2026-07-28 stateless
probe the way a legacy server does (400, plain JSON-RPC error) so clients fall back to `initialize`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import time
from typing import Any

from aiohttp import web

from gateway import jsonrpc, mcp
from gateway.config import ServerConfig
from gateway.hub import Hub
from gateway.jsonrpc import Kind, Message
from gateway.ratelimit import RateLimit
from gateway.rejections import Rejections
from gateway.relay import DuplicateRequest, Relay
from gateway.sessions import EventStream, Session, SessionLimit

log = logging.getLogger("tollgate.downstream")

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform",
               "X-Accel-Buffering": "no"}
SERVER_INFO = {"name": "tollgate", "title": "Tollgate MCP gateway", "version": "0.1.0"}
# A DELETE may free a session any moment, idle expiry only after an hour: a hint that keeps clients from hammering.
SESSION_RETRY_AFTER_SECONDS = 30
LIMIT_LOG_SECONDS = 60.0  # at most one log line per this long while initializes are refused
POST_ANSWER_TYPES = ("application/json", "text/event-stream")  # a POST of a request is answered in either
GET_ANSWER_TYPES = ("text/event-stream",)


class HttpError(Exception):
    """Refuse a request with an HTTP status and a JSON-RPC error body."""

    def __init__(self, status: int, code: int, message: str, request_id: jsonrpc.RequestId | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.request_id, self.headers = request_id, headers or {}

    def response(self) -> web.Response:
        body = jsonrpc.encode(jsonrpc.error_body(self.request_id, self.code, self.message))
        return web.Response(status=self.status, body=body, content_type="application/json",
                            headers=self.headers)


class _Events:
    """Events a request emits before its answer, and one waiter woken by an event or by the answer.

    Cheaper than a Queue plus a getter task and asyncio.wait per request: most calls emit nothing and
    only wait for their task once.
    """

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[dict[str, Any]] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, body: dict[str, Any]) -> None:
        self.items.append(body)
        self.wake()

    def wake(self, _: object = None) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, task: asyncio.Future[Any]) -> None:
        """Return once an event is queued or the task is done (or, woken by its callback, another one)."""
        if self.items or task.done():
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class _DisconnectWatch(asyncio.Protocol):
    """Stands in for aiohttp's protocol on the connection while a POST waits for its JSON answer, passing every
    callback on, to learn at once that the client went away (aiohttp, without handler cancellation, tells the
    handler nothing). Put back before an SSE stream starts: a dropped stream is resumable, so no cancel."""

    def __init__(self, transport: asyncio.BaseTransport, inner: asyncio.BaseProtocol, gone: asyncio.Future[None]):
        self.transport, self.inner, self.gone = transport, inner, gone

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()  # type: ignore[attr-defined]
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        self.inner.connection_lost(exc)

    def restore(self) -> None:
        if self.transport.get_protocol() is self and not self.transport.is_closing():
            self.transport.set_protocol(self.inner)


def _watch_disconnect(request: web.Request, wake: Any) -> _DisconnectWatch | None:
    transport = request.transport
    if transport is None or transport.is_closing():
        return None
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    gone.add_done_callback(wake)
    watch = _DisconnectWatch(transport, transport.get_protocol(), gone)
    transport.set_protocol(watch)
    return watch


class McpEndpoint:
    """aiohttp handlers for `/mcp`."""

    def __init__(self, hub: Hub, relay: Relay, server: ServerConfig, rejections: Rejections | None = None) -> None:
        self.hub, self.relay, self.server = hub, relay, server
        self.rejections = rejections or Rejections()
        self._limit_log = RateLimit(1, LIMIT_LOG_SECONDS)

    def register(self, app: web.Application, path: str = "/mcp") -> None:
        app.router.add_post(path, self.post)
        app.router.add_get(path, self.get)
        app.router.add_delete(path, self.delete)

    # ----- POST -----------------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.StreamResponse:
        message: Message | jsonrpc.Batch | None = None
        try:
            identity = self._admit(request)
            _check_post_accept(request)
            message = await self._read_message(request)
            if isinstance(message, jsonrpc.Batch):
                return await self._post_batch(request, message)
            if message.method == "initialize" and message.kind is Kind.REQUEST:
                self._check_no_live_session(request, message)
                return self._initialize(request, message, identity)
            session = self._session(request, message)
            self._check_version_header(request, session, message.id)
        except HttpError as exc:
            return self._refuse(request, exc, message.method if isinstance(message, Message) else "")
        if message.kind is Kind.NOTIFICATION:
            await self.relay.handle_notification(session, message)
            return web.Response(status=202)
        if message.kind is Kind.RESPONSE:
            await self.relay.handle_response(session, message)
            return web.Response(status=202)
        return await self._answer(request, session, message)

    async def _read_message(self, request: web.Request) -> Message | jsonrpc.Batch:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(415, jsonrpc.INVALID_REQUEST,
                            f"Unsupported Media Type {content_type[:60]!r}: use application/json")
        body = await _read_capped(request, self.server.max_body_bytes)
        try:
            return jsonrpc.parse_message_or_batch(body)
        except jsonrpc.ProtocolError as exc:
            raise HttpError(400, exc.code, exc.message, exc.request_id) from None

    def _initialize(self, request: web.Request, message: Message, identity: str) -> web.Response:
        params = message.params
        assert message.id is not None
        if not isinstance(params.get("protocolVersion"), str):
            # Answered like any request's invalid params (200, -32602) and no session made: a client that sends
            # no version cannot be told one it understands.
            log.info("initialize refused: no protocolVersion string in its params")
            return web.Response(body=jsonrpc.encode(jsonrpc.error_body(
                message.id, jsonrpc.INVALID_PARAMS, "Invalid params: initialize needs params.protocolVersion, a "
                f"string such as {mcp.LATEST_VERSION!r}")), content_type="application/json")
        version = mcp.negotiate(params.get("protocolVersion"))
        client_info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        capabilities = params.get("capabilities") if isinstance(params.get("capabilities"), dict) else {}
        try:
            session = self.hub.sessions.create(
                protocol_version=version, client_info=client_info or {}, client_capabilities=capabilities or {},
                auth_identity=identity, user_agent=request.headers.get("User-Agent", ""))
        except SessionLimit as exc:
            self._log_refusal(exc)
            raise HttpError(503, jsonrpc.SERVER_BUSY, f"Service Unavailable: {exc}; retry later", message.id,
                            headers={"Retry-After": str(SESSION_RETRY_AFTER_SECONDS)}) from None
        self.hub.session_started(session)
        result = {"protocolVersion": version, "capabilities": mcp.server_capabilities(),
                  "serverInfo": SERVER_INFO, "instructions": self._instructions()}
        log.info("session %s initialized by %s %s (%s)", session.session_id[:8], session.client_name,
                 session.client_version, version)
        return web.Response(body=jsonrpc.encode(jsonrpc.result_body(message.id, result)),
                            content_type="application/json", headers={SESSION_HEADER: session.session_id})

    def _log_refusal(self, exc: SessionLimit) -> None:
        """One warning per LIMIT_LOG_SECONDS however many initializes a flood sends (counted apart, in
        tollgate_sessions_refused_total, so `_refuse` leaves them out)."""
        if self._limit_log.allow(time.monotonic()):
            log.warning("refused %d initialize request(s): %s", self._limit_log.take_held() + 1, exc)

    def _refuse(self, request: web.Request, exc: HttpError, method: str = "") -> web.Response:
        """The refusal's response, logged (rate-limited) and counted."""
        if exc.status != 503:
            self.rejections.refused(request, exc.status, exc.message, method)
        return exc.response()

    def _instructions(self) -> str:
        parts = [f"[{u.name}] {u.instructions}" for u in self.hub.upstreams.values() if u.instructions]
        return "\n\n".join(parts)

    async def _answer(self, request: web.Request, session: Session, message: Message) -> web.StreamResponse:
        events = _Events()
        try:
            task = self.relay.start_request(session, message, events.put)
        except DuplicateRequest as exc:
            return self._refuse(request, HttpError(400, jsonrpc.INVALID_REQUEST, f"Invalid Request: {exc}",
                                                   message.id), message.method)
        task.add_done_callback(events.wake)
        if await self._wait_or_cancel_if_gone(request, [task], task, events):
            return web.Response(status=499)  # nobody reads it: the connection is closed
        if task.done() and not events.items and (encoded := _answer_of(task)) is not None:
            return web.Response(body=encoded, content_type="application/json")
        # Streaming, or cancelled by the client, which expects no answer: a POST carrying a request still gets JSON
        # or SSE (202 is for notifications and responses), so the stream just ends without one.
        stream = await self._open_sse(request)
        await self._stream_until_done(stream, [task], task, events, session.open_stream())
        return stream

    # ----- batches (2024-11-05 and 2025-03-26 sessions) --------------------------------------

    async def _post_batch(self, request: web.Request, batch: jsonrpc.Batch) -> web.StreamResponse:
        """Serve each element as if it came alone: requests concurrently, answered together (a JSON array, or one
        SSE stream when any of them streams); notifications and responses handled. Only those: 202, as for one.
        Refused whole, before anything is served or metered, in a session of a revision without batches."""
        session = self._session(request, None)
        self._check_version_header(request, session, None)
        if session.protocol_version not in mcp.BATCH_VERSIONS:
            raise HttpError(400, jsonrpc.INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported "
                            f"in protocol {session.protocol_version} (removed in 2025-06-18)")
        if any(isinstance(item, Message) and item.method == "initialize" for item in batch.items):
            raise HttpError(400, jsonrpc.INVALID_REQUEST, "Invalid Request: initialize must not be part of a batch")
        events = _Events()
        tasks: list[asyncio.Task[bytes | None]] = []
        errors: list[bytes] = []
        for item in batch.items:  # in order: a cancel later in the batch finds the request it cancels
            if isinstance(item, jsonrpc.ProtocolError):
                errors.append(jsonrpc.encode(jsonrpc.error_body(item.request_id, item.code, item.message)))
            elif item.kind is Kind.NOTIFICATION:
                await self.relay.handle_notification(session, item)
            elif item.kind is Kind.RESPONSE:
                await self.relay.handle_response(session, item)
            else:
                try:
                    task = self.relay.start_request(session, item, events.put)
                except DuplicateRequest as exc:
                    errors.append(jsonrpc.encode(jsonrpc.error_body(
                        item.id, jsonrpc.INVALID_REQUEST, f"Invalid Request: {exc}")))
                    continue
                task.add_done_callback(events.wake)
                tasks.append(task)
        if not tasks and not errors:
            return web.Response(status=202)
        return await self._answer_all(request, session, tasks, events, errors)

    async def _answer_all(self, request: web.Request, session: Session, tasks: list[asyncio.Task[bytes | None]],
                          events: _Events, errors: list[bytes]) -> web.StreamResponse:
        done: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        done.add_done_callback(events.wake)
        if await self._wait_or_cancel_if_gone(request, tasks, done, events):
            return web.Response(status=499)
        if done.done() and not events.items:
            answers = [*errors, *(a for t in tasks if (a := _answer_of(t)) is not None)]
            if answers:
                return web.Response(body=b"[" + b",".join(answers) + b"]", content_type="application/json")
        stream = await self._open_sse(request)
        await self._stream_until_done(stream, tasks, done, events, session.open_stream(), errors)
        return stream

    @staticmethod
    async def _wait_or_cancel_if_gone(request: web.Request, tasks: list[asyncio.Task[bytes | None]],
                                      done: asyncio.Future[Any], events: _Events) -> bool:
        """Wait for `done` or a first event. A client that goes away meanwhile can never get the JSON answer
        (there is no stream to resume): its calls are cancelled, so each is recorded as cancelled with nothing
        delivered and its upstream is sent notifications/cancelled. True when that happened."""
        watch = _watch_disconnect(request, events.wake)
        try:
            while not (done.done() or events.items or (watch is not None and watch.gone.done())):
                await events.wait(done)  # each task's end, an event and the disconnect wake it
        finally:
            if watch is not None:
                watch.restore()
        if done.done() or events.items or watch is None:
            return False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("session client went away during %d call(s); cancelled", len(tasks))
        return True

    async def _open_sse(self, request: web.Request) -> web.StreamResponse:
        stream = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await stream.prepare(request)
        return stream

    async def _stream_until_done(self, stream: web.StreamResponse, tasks: list[asyncio.Task[bytes | None]],
                                 done: asyncio.Future[Any], events: _Events, numbered: EventStream,
                                 answers: list[bytes] | None = None) -> None:
        """Write `answers`, then each event as it comes and each task's answer once it is done (`done`: all of
        them are), each numbered on `numbered`, which keeps them for a client that drops the connection and
        resumes with GET and Last-Event-ID."""
        alive = True
        for answer in answers or ():
            alive = await _publish(stream, numbered, answer, alive)
        unanswered = list(tasks)
        while True:
            while events.items:
                alive = await _publish(stream, numbered, jsonrpc.encode(events.items.popleft()), alive)
            for task in [t for t in unanswered if t.done()]:
                unanswered.remove(task)
                if (encoded := _answer_of(task)) is not None:
                    alive = await _publish(stream, numbered, encoded, alive)
            if not unanswered and not events.items:
                break
            await events.wait(done)
        numbered.end()
        with contextlib.suppress(ConnectionError):
            await stream.write_eof()

    # ----- GET and DELETE -------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admit(request)
            if not accepts(_accept_header(request), GET_ANSWER_TYPES):
                raise HttpError(406, jsonrpc.INVALID_REQUEST, "Not Acceptable: GET needs Accept: text/event-stream")
            session = self._session(request, None)
            numbered, after = session.resume_point(request.headers.get("Last-Event-ID"))
        except HttpError as exc:
            return self._refuse(request, exc)
        stream = await self._open_sse(request)
        if numbered is not session.general:  # resuming a POST's answer stream: the rest of it, then the end
            await self._follow(stream, session, numbered, after)
            return stream
        if numbered.attached:  # a client reconnecting before its dropped stream was noticed: the new one wins
            log.info("session %s: a new GET stream replaces the open one", session.session_id[:8])
        reader = numbered.take_over()
        try:
            await self._follow(stream, session, numbered, after, reader)
        finally:
            numbered.let_go(reader)
            session.touch()  # idle time counts from when the client let go of the stream
        return stream

    async def _follow(self, stream: web.StreamResponse, session: Session, numbered: EventStream, after: int,
                      reader: int | None = None) -> None:
        """Write `numbered`'s events past `after` as they come, until it ends, the session ends, the client goes or
        (the GET stream) a newer GET takes it over."""
        def mine() -> bool:
            return reader is None or numbered.reader == reader

        while self.hub.sessions.get(session.session_id) is session and mine():
            for seq, data in numbered.after(after):
                if not mine() or not await _write_event(stream, data, numbered.event_id(seq)):
                    return
                after = numbered.delivered = seq
            if numbered.ended:
                return
            if not await numbered.wait(after, KEEPALIVE_SECONDS, reader) and not await _write_raw(
                    stream, b": keepalive\n\n"):
                return

    async def delete(self, request: web.Request) -> web.Response:
        try:
            self._admit(request)
            session = self._session(request, None)
        except HttpError as exc:
            return self._refuse(request, exc)
        self.hub.sessions.end(session.session_id, "deleted by client")
        return web.Response(status=200)

    # ----- checks ---------------------------------------------------------------------------

    def _admit(self, request: web.Request) -> str:
        """The bearer-token check (Origin and Host were checked for every route by gateway.guards); returns
        the caller's identity ('' when anonymous)."""
        if not self.server.auth_tokens:
            return ""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        for index, allowed in enumerate(self.server.auth_tokens):
            if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), allowed.encode()):
                return f"token-{index + 1}"
        problem = "bearer token not accepted" if "Authorization" in request.headers else "bearer token required"
        raise HttpError(401, jsonrpc.INVALID_REQUEST, f"Unauthorized: {problem}",
                        headers={"WWW-Authenticate": 'Bearer realm="tollgate"'})

    def _session(self, request: web.Request, message: Message | None) -> Session:
        request_id = message.id if message else None
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            # The 2026-07-28 probe lands here too: a plain 400 makes clients fall back to initialize.
            raise HttpError(400, jsonrpc.INVALID_REQUEST, "Bad Request: Missing session ID", request_id)
        session = self.hub.sessions.get(session_id)
        if session is None:  # a restart of Tollgate forgets every session: its clients see this first
            raise HttpError(404, jsonrpc.INVALID_REQUEST, f"Not Found: unknown or expired session "
                            f"{_printable(session_id[:8])}; the client must initialize again", request_id)
        return session

    def _check_no_live_session(self, request: web.Request, message: Message) -> None:
        """An initialize carrying the id of a live session is refused, not served with a second session that
        would linger until idle expiry. One carrying an id Tollgate does not know (expired, or from before a
        restart) starts a new session as one without it does: the answer's Mcp-Session-Id replaces the stale one
        (see docs/DESIGN-NOTES.md)."""
        session_id = request.headers.get(SESSION_HEADER)
        if session_id and self.hub.sessions.get(session_id) is not None:
            raise HttpError(400, jsonrpc.INVALID_REQUEST, "Bad Request: session already initialized; start a new "
                            f"session without {SESSION_HEADER}", message.id)

    def _check_version_header(self, request: web.Request, session: Session,
                              request_id: jsonrpc.RequestId | None) -> None:
        header = request.headers.get(VERSION_HEADER)
        if header is None or header == session.protocol_version:
            return
        if header not in mcp.SUPPORTED_VERSIONS:
            raise HttpError(400, jsonrpc.INVALID_REQUEST,
                            f"Bad Request: unsupported {VERSION_HEADER} {header[:40]!r}", request_id)
        log.info("session %s negotiated %s but sent %s %s", session.session_id[:8],
                 session.protocol_version, VERSION_HEADER, header)


def _check_post_accept(request: web.Request) -> None:
    """406 for a POST whose Accept takes neither answer type. The spec says the client MUST list both, but one
    that sends no Accept at all is served (many clients omit it; see docs/DESIGN-NOTES.md), as is one that lists
    only one of them or a wildcard."""
    header = _accept_header(request)
    if header.strip() and not accepts(header, POST_ANSWER_TYPES):
        raise HttpError(406, jsonrpc.INVALID_REQUEST, "Not Acceptable: Accept must include application/json and "
                        f"text/event-stream (got {_printable_header(header)!r})")


def _accept_header(request: web.Request) -> str:
    """Every Accept header of the request as one list (a client may send several)."""
    return ", ".join(request.headers.getall("Accept", []))


def accepts(header: str, answer_types: tuple[str, ...]) -> bool:
    """Whether an Accept header lets the answer be one of `answer_types`: a media range naming one, or a wildcard
    covering one (`*/*`, `application/*`), counts unless its q is 0."""
    for part in header.split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        if _quality(params) <= 0:
            continue
        if media == "*/*" or any(media in (kind, kind.split("/")[0] + "/*") for kind in answer_types):
            return True
    return False


def _quality(params: list[str]) -> float:
    """The q of a media range's parameters; 1 when absent, and when unreadable (as lenient as a missing one)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0


def _printable_header(text: str) -> str:
    """A header value as an error message may quote it: short, printable ASCII."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:80])


def _printable(text: str) -> str:
    """A client-chosen id as it may appear in a log line: letters, digits, '-' and '_', the rest as '?'."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "?" for c in text)


def _answer_of(task: asyncio.Task[bytes | None]) -> bytes | None:
    """The encoded answer of a finished request; None when the client cancelled it."""
    return None if task.cancelled() else task.result()


async def _read_capped(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise HttpError(413, jsonrpc.INVALID_REQUEST, f"Payload Too Large: the limit is {cap} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        if total > cap:
            raise HttpError(413, jsonrpc.INVALID_REQUEST, f"Payload Too Large: the limit is {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _publish(stream: web.StreamResponse, numbered: EventStream, data: bytes, alive: bool) -> bool:
    """Number `data` on `numbered` (kept for resumption) and write it while the client is still there."""
    event_id = numbered.push(data)
    return alive and await _write_event(stream, data, event_id)


async def _write_event(stream: web.StreamResponse, data: bytes, event_id: str) -> bool:
    return await _write_raw(stream, f"event: message\nid: {event_id}\n".encode() + b"data: " + data + b"\n\n")


async def _write_raw(stream: web.StreamResponse, payload: bytes) -> bool:
    try:
        await stream.write(payload)
    except (ConnectionError, RuntimeError):
        return False  # the client went away; the call still completes and is metered
    return True
