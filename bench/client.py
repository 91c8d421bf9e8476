"""Raw JSON-RPC MCP clients for benchmarks: aiohttp POSTs (JSON or SSE answers) and a stdio pipe.

Deliberately not the `mcp` SDK client, whose ~3 ms of CPU per call would hide a gateway's overhead.
A call returns the raw bytes of the answer, so a result is never parsed twice on the client side.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Protocol

import aiohttp
import orjson

PROTOCOL = "2025-06-18"
INIT_PARAMS = {"protocolVersion": PROTOCOL, "capabilities": {},
               "clientInfo": {"name": "tollgate-bench", "version": "1.0"}}


class Client(Protocol):
    async def call(self, tool: str, arguments: dict[str, Any]) -> bytes: ...

    async def close(self) -> None: ...


class BenchError(Exception):
    """A target answered something a benchmark cannot use."""


def check_answer(raw: bytes) -> bytes:
    """Cheap sanity check on an answer (the id splice must not hide errors)."""
    if b'"result"' not in raw[:64] and b'"error"' in raw[:200]:
        raise BenchError(f"error answer: {raw[:200]!r}")
    return raw


def last_sse_data(body: bytes) -> bytes:
    """The data of the last `message` event that carries a JSON-RPC response."""
    found = b""
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            joined = b"\n".join(data)
            if b'"id"' in joined and (b'"result"' in joined or b'"error"' in joined):
                found = joined
    if not found:
        raise BenchError(f"no response in SSE stream: {body[:200]!r}")
    return found


class HttpClient:
    """One MCP session over Streamable HTTP; many clients may share one aiohttp session."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        self._ids = itertools.count(1)
        self.tools: dict[str, str] = {}

    async def open(self) -> HttpClient:
        await self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
        self.headers["MCP-Protocol-Version"] = PROTOCOL
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = orjson.loads(await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/list"}))
        self.tools = _tool_names(listed)
        return self

    async def call(self, tool: str, arguments: dict[str, Any]) -> bytes:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call",
                "params": {"name": self.tools[tool], "arguments": arguments}}
        return check_answer(await self._post(body))

    async def _post(self, body: dict[str, Any]) -> bytes:
        async with self.http.post(self.url, data=orjson.dumps(body), headers=self.headers) as response:
            if response.status >= 400:
                raise BenchError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
            session_id = response.headers.get("Mcp-Session-Id")
            if session_id:
                self.headers["Mcp-Session-Id"] = session_id
            raw = await response.read()
            if response.content_type == "text/event-stream":
                return last_sse_data(raw)
            return raw

    async def close(self) -> None:
        if "Mcp-Session-Id" in self.headers:
            async with self.http.delete(self.url, headers=self.headers):
                pass


class StdioClient:
    """One MCP session over a child's stdin/stdout; concurrent callers are matched by id."""

    def __init__(self, argv: list[str], cwd: str | None = None) -> None:
        self.argv, self.cwd = argv, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.tools: dict[str, str] = {}

    async def open(self) -> StdioClient:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=self.cwd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=128 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read())
        await self._request("initialize", INIT_PARAMS)
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.tools = _tool_names(orjson.loads(await self._request("tools/list", {})))
        return self

    async def call(self, tool: str, arguments: dict[str, Any]) -> bytes:
        return check_answer(await self._request("tools/call", {"name": self.tools[tool], "arguments": arguments}))

    async def _request(self, method: str, params: dict[str, Any]) -> bytes:
        request_id = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return await future

    def _write(self, body: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(body) + b"\n")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            head = line[:80]
            start = head.find(b'"id":')
            if start < 0:
                continue
            end = start + 5
            while head[end:end + 1].isdigit():
                end += 1
            future = self._pending.pop(int(head[start + 5:end] or b"-1"), None)
            if future is not None and not future.done():
                future.set_result(line)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BenchError("stdio upstream closed"))

    async def close(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


def _tool_names(listed: dict[str, Any]) -> dict[str, str]:
    """Short name -> exposed name (gateways prefix tools with the upstream's name)."""
    names: dict[str, str] = {}
    for tool in listed.get("result", {}).get("tools", []):
        for short in ("echo", "blob"):
            if tool["name"] == short or tool["name"].endswith(f"__{short}") or tool["name"].endswith(f"_{short}"):
                names[short] = tool["name"]
    if set(names) != {"echo", "blob"}:
        raise BenchError(f"target does not list echo and blob: {listed!r:.300}")
    return names
