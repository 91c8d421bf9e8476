"""Hostile and malformed JSON-RPC never crashes the gateway and always gets a precise answer."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import echo_upstream, gateway_config, running_gateway

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
METHODS = st.sampled_from(["tools/call", "tools/list", "ping", "resources/read", "prompts/get", "initialize",
                           "notifications/cancelled", "completion/complete", "logging/setLevel", "resources/subscribe",
                           "resources/unsubscribe", "prompts/list", "x/y", ""])
# The keys the gateway reads from params, each given hostile values (lists and objects where an id,
# a string or an object belongs), so every lookup and type assumption is exercised, not just the envelope.
META = JSON_VALUES | st.fixed_dictionaries({}, optional={
    "progressToken": JSON_VALUES, "claudecode/toolUseId": JSON_VALUES, "traceparent": JSON_VALUES})
REAL_PARAMS = st.fixed_dictionaries({}, optional={
    "requestId": JSON_VALUES, "cursor": JSON_VALUES, "name": JSON_VALUES | st.sampled_from(["a__echo", "a__slow"]),
    "uri": JSON_VALUES, "_meta": META, "arguments": JSON_VALUES, "ref": JSON_VALUES, "level": JSON_VALUES,
    "reason": JSON_VALUES})
MESSAGES = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | JSON_VALUES},
    optional={"id": JSON_VALUES, "method": METHODS | JSON_VALUES, "params": JSON_VALUES,
              "result": JSON_VALUES, "error": JSON_VALUES})
# Well-formed envelopes, so the hostile values reach the relay instead of stopping at envelope checks.
REQUESTS = st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "method": METHODS, "params": REAL_PARAMS},
                                 optional={"id": st.integers(1000, 2000) | st.text(min_size=1, max_size=8)})
RAW = st.binary(max_size=200) | st.builds(lambda m: json.dumps(m).encode(), MESSAGES | REQUESTS) | \
    st.builds(lambda ms: json.dumps(ms).encode(), st.lists(MESSAGES, max_size=3))


class ThreadedGateway:
    """A real gateway on its own event loop thread, so hypothesis can drive it synchronously."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        async with running_gateway(gateway_config(echo_upstream("a"), max_body_bytes=4096)) as url:
            self.port = int(url.split(":")[2].split("/")[0])
            self.ready.set()
            await self.stop.wait()

    def post(self, body: bytes, session_id: str | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if session_id:
            headers["Mcp-Session-Id"] = session_id
        connection.request("POST", "/mcp", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        self.last_session = response.getheader("Mcp-Session-Id") or ""
        connection.close()
        return response.status, data


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[ThreadedGateway, str]]:
    server = ThreadedGateway()
    server.thread.start()
    assert server.ready.wait(60)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "f", "version": "1"}}}
    status, _ = server.post(json.dumps(init).encode())
    assert status == 200
    yield server, server.last_session
    assert server.loop is not None and server.stop is not None
    server.loop.call_soon_threadsafe(server.stop.set)
    server.thread.join(30)


def check_answer(status: int, data: bytes) -> None:
    assert status in (200, 202, 400, 404, 413), status
    if status == 202:
        return
    text = data.split(b"data: ", 1)[1] if data.startswith(b"event:") else data
    if not text:
        return  # an SSE stream closed without an answer (a request cancelled by its own notification)
    body: Any = json.loads(text.split(b"\n\n", 1)[0])
    assert body.get("jsonrpc") == "2.0"
    if "error" in body:
        assert isinstance(body["error"]["code"], int) and body["error"]["code"] != -32603
        assert body["error"]["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=RAW)
def test_hostile_messages_get_precise_answers_and_the_session_keeps_serving(
        gateway: tuple[ThreadedGateway, str], raw: bytes) -> None:
    server, session_id = gateway
    check_answer(*server.post(raw, session_id))
    status, data = server.post(b'{"jsonrpc":"2.0","id":"probe","method":"ping"}', session_id)
    assert status == 200 and json.loads(data)["result"] == {}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=REQUESTS)
def test_hostile_values_in_the_keys_the_gateway_reads_never_give_an_internal_error(
        gateway: tuple[ThreadedGateway, str], message: dict[str, Any]) -> None:
    server, session_id = gateway
    check_answer(*server.post(json.dumps(message).encode(), session_id))
    status, data = server.post(b'{"jsonrpc":"2.0","id":"probe","method":"ping"}', session_id)
    assert status == 200 and json.loads(data)["result"] == {}
