"""Test helper: drives a Transport with raw JSON-RPC and collects what comes back."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

import orjson

from gateway.upstreams.base import Transport

TIMEOUT = 20.0
INIT_PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "tollgate-tests", "version": "0"},
}


T = TypeVar("T", bound=Transport)


class Wire(Generic[T]):
    """Records inbound messages (raw and parsed) and the close cause of one transport."""

    def __init__(self, transport: T) -> None:
        self.transport = transport
        self.raw: list[bytes] = []
        self.related: list[str | int | None] = []
        self.messages: list[dict[str, Any]] = []
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.close_calls = 0
        self._changed = asyncio.Event()

    def on_message(self, raw: bytes, related_id: str | int | None) -> None:
        self.raw.append(raw)
        self.related.append(related_id)
        self.messages.append(orjson.loads(raw))
        self._changed.set()

    def on_closed(self, cause: BaseException | None) -> None:
        self.close_calls += 1
        if not self.closed.done():
            self.closed.set_result(cause)
        self._changed.set()

    async def open(self) -> Wire[T]:
        await self.transport.open(self.on_message, self.on_closed)
        return self

    async def request(self, msg_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and wait for the response carrying its id."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            body["params"] = params
        await self.transport.send(orjson.dumps(body), request_id=msg_id)
        return await self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m)

    async def notify(self, method: str) -> None:
        await self.transport.send(orjson.dumps({"jsonrpc": "2.0", "method": method}))

    async def initialize(self) -> dict[str, Any]:
        response = await self.request(0, "initialize", INIT_PARAMS)
        await self.notify("notifications/initialized")
        self.transport.set_protocol_version(response["result"]["protocolVersion"])
        return response

    async def call(self, msg_id: int, tool: str, **arguments: Any) -> dict[str, Any]:
        return await self.request(msg_id, "tools/call", {"name": tool, "arguments": arguments})

    async def wait_for(self, match: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if match(message):
                        return message
                if self.closed.done():
                    raise AssertionError(f"transport closed while waiting: {self.closed.result()!r}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self, timeout: float = TIMEOUT) -> BaseException | None:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)


def text_of(response: dict[str, Any]) -> str:
    """The first text block of a tools/call result."""
    return str(response["result"]["content"][0]["text"])
