"""Legacy HTTP+SSE upstream transport (protocol 2024-11-05): one GET stream in, POSTs out.

Owns the GET event stream, the `endpoint` handshake and the POSTs to that endpoint. The stream
cannot be resumed in this protocol, so its end closes the transport (the caller restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urljoin, urlsplit

import aiohttp

from gateway.upstreams.base import (
    ClosedHandler,
    MessageHandler,
    MessageTooLarge,
    Transport,
    TransportClosed,
    TransportError,
)
from gateway.upstreams.http import ERROR_BODY_CAP, ERROR_EXCERPT, read_capped, safe_url, translate_errors
from gateway.upstreams.sse_parser import EventTooLarge, SseParser

DEFAULT_LOGGER = logging.getLogger("tollgate.upstreams.sse")


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


class LegacySseTransport(Transport):
    """An MCP server reached over the 2024-11-05 HTTP+SSE transport."""

    kind = "sse"

    def __init__(
        self,
        name: str,
        url: str,
        headers: dict[str, str] | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        connect_timeout: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.url = url
        self.headers = dict(headers or {})
        self.max_message_bytes = max_message_bytes
        self.connect_timeout = connect_timeout
        self.log = logger or DEFAULT_LOGGER
        self.endpoint: str | None = None
        self._client: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._endpoint_ready: asyncio.Future[str] | None = None
        self._report_task: asyncio.Task[None] | None = None
        self._on_message: MessageHandler | None = None
        self._on_closed: ClosedHandler | None = None
        self._closed = False

    async def open(self, on_message: MessageHandler, on_closed: ClosedHandler) -> None:
        self._on_message, self._on_closed = on_message, on_closed
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout)
        self._client = aiohttp.ClientSession(timeout=timeout)
        self._endpoint_ready = asyncio.get_running_loop().create_future()
        try:
            response = await self._connect()
            self._reader = asyncio.create_task(self._read(response), name=f"sse-{self.name}")
            self.endpoint = await asyncio.wait_for(self._endpoint_ready, self.connect_timeout)
        except TimeoutError as exc:
            await self._shutdown()
            raise TransportError(
                f"upstream {self.name}: no endpoint event from {safe_url(self.url)} within {self.connect_timeout:g}s"
            ) from exc
        except BaseException:
            await self._shutdown()
            raise

    async def send(self, message: bytes, *, request_id: str | int | None = None) -> None:
        if self._closed or self._client is None or self.endpoint is None:
            raise TransportClosed(f"upstream {self.name}: transport is closed")
        headers = {**self.headers, "Content-Type": "application/json"}
        with translate_errors(self.name, self.endpoint, self.connect_timeout):
            async with self._client.post(self.endpoint, data=message, headers=headers) as response:
                if response.status == 404:
                    # This protocol cannot re-initialize on the same stream: reconnect from scratch.
                    lost = TransportClosed(f"upstream {self.name} no longer knows our session (HTTP 404)")
                    self._end(lost)
                    raise lost
                if response.status >= 300:
                    body = await read_capped(response, ERROR_BODY_CAP) or b""
                    text = body[:ERROR_EXCERPT].decode("utf-8", "replace").strip()
                    raise TransportError(f"upstream {self.name}: HTTP {response.status}: {text or response.reason}")
        self.stats.bytes_out += len(message)
        self.stats.messages_out += 1

    async def close(self) -> None:
        if self._closed:
            return
        await self._shutdown()
        if self._on_closed is not None:
            self._on_closed(None)

    async def _connect(self) -> aiohttp.ClientResponse:
        assert self._client is not None
        headers = {**self.headers, "Accept": "text/event-stream"}
        with translate_errors(self.name, self.url, self.connect_timeout):
            response = await self._client.get(self.url, headers=headers)
        if response.status != 200 or response.content_type != "text/event-stream":
            response.release()
            raise TransportError(
                f"upstream {self.name}: GET {safe_url(self.url)} answered HTTP {response.status} "
                f"({response.content_type}), not an event stream"
            )
        return response

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        parser = SseParser(self.max_message_bytes)
        cause: BaseException = TransportClosed(f"upstream {self.name}: event stream ended")
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if not event.empty:  # no message (an SSE keepalive or priming event); this stream never resumes
                        self._take_event(event.event, event.data)
        except EventTooLarge as exc:
            self.stats.oversized_messages += 1
            cause = MessageTooLarge(f"upstream {self.name}: {exc}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            cause = TransportClosed(f"upstream {self.name}: event stream dropped: {type(exc).__name__}")
        except TransportError as exc:
            cause = exc
        finally:
            response.release()
        self._end(cause)

    def _take_event(self, event: str, data: bytes) -> None:
        if event == "endpoint":
            self._take_endpoint(data.decode("utf-8", "replace").strip())
        elif event == "message":
            self.stats.bytes_in += len(data)
            self.stats.messages_in += 1
            assert self._on_message is not None
            try:
                self._on_message(data, None)
            except Exception:
                self.log.exception("upstream %s: message handler failed", self.name)

    def _take_endpoint(self, relative: str) -> None:
        endpoint = urljoin(self.url, relative)
        if not same_origin(endpoint, self.url):
            # Our headers (often credentials) must not be sent to another origin.
            raise TransportError(f"upstream {self.name}: endpoint {safe_url(endpoint)} is on another origin")
        if self._endpoint_ready is not None and not self._endpoint_ready.done():
            self._endpoint_ready.set_result(endpoint)

    def _end(self, cause: BaseException) -> None:
        if self._endpoint_ready is not None and not self._endpoint_ready.done():
            self._endpoint_ready.set_exception(cause)
            return  # still opening: open() raises it
        if self._closed:
            return
        self.log.warning("%s", cause)
        self._closed = True
        self._report_task = asyncio.create_task(self._report(cause), name=f"sse-{self.name}-closed")

    async def _report(self, cause: BaseException) -> None:
        if self._client is not None:
            await self._client.close()
        if self._on_closed is not None:
            self._on_closed(cause)

    async def _shutdown(self) -> None:
        self._closed = True
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._client is not None:
            await self._client.close()
