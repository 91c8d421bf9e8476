"""Server-to-client requests (sampling, elicitation) are relayed with remapped ids, or refused at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent
from pydantic import FileUrl

from gateway import jsonrpc
from gateway.app import HUB_KEY, create_app
from gateway.config import UpstreamConfig
from tests.gateway.conftest import (
    echo_upstream,
    everything_upstream,
    gateway_config,
    mcp_session,
    raw_upstream,
    running_gateway,
    served,
)
from tests.gateway.taps import tap, tapped_echo_upstream


async def test_sampling_request_reaches_the_client_and_its_answer_the_upstream() -> None:
    asked: list[Any] = []

    async def sampling(context: Any, params: Any) -> CreateMessageResult:
        asked.append(params)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="sampled-by-client"),
                                   model="test-model", stop_reason="endTurn")

    async with running_gateway(gateway_config(everything_upstream())) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], sampling_callback=sampling) as client:
        await client.initialize()
        result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "hello", "maxTokens": 5})
    assert len(asked) == 1
    assert "sampled-by-client" in repr(result.content)


async def test_elicitation_request_is_relayed_to_a_client_that_supports_it() -> None:
    async def elicit(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "Ada Lovelace"})

    async with running_gateway(gateway_config(everything_upstream())) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], elicitation_callback=elicit) as client:
        await client.initialize()
        result = await client.call_tool("everything__trigger-elicitation-request", {})
    assert "Ada Lovelace" in repr(result.content)


async def test_a_client_without_sampling_gets_the_upstream_refused_at_once() -> None:
    async with running_gateway(gateway_config(everything_upstream())) as url, \
            streamable_http_client(url) as streams, ClientSession(streams[0], streams[1]) as client:
        await client.initialize()
        result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "hello", "maxTokens": 5})
    assert "The client does not support sampling" in repr(result.content)  # Tollgate's own refusal


async def test_a_client_without_elicitation_gets_the_upstream_refused_at_once() -> None:
    async with running_gateway(gateway_config(everything_upstream())) as url, \
            streamable_http_client(url) as streams, ClientSession(streams[0], streams[1]) as client:
        await client.initialize()
        async with asyncio.timeout(30):  # relayed to a client that cannot answer, the call would hang
            result = await client.call_tool("everything__trigger-elicitation-request", {})
    # Tollgate's own refusal, as server-everything reports the error it was answered with
    assert f"MCP error {jsonrpc.METHOD_NOT_FOUND}: The client does not support elicitation" in repr(result.content)


async def test_an_elicitation_from_a_sessions_own_instance_is_answered_to_that_instance() -> None:
    async def elicit(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "Grace Hopper"})

    upstream = dataclasses.replace(everything_upstream(), stateful=True)
    async with running_gateway(gateway_config(upstream)) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], elicitation_callback=elicit) as client:
        await client.initialize()
        async with asyncio.timeout(30):  # an answer sent to the shared instance would leave this call hanging
            result = await client.call_tool("everything__trigger-elicitation-request", {})
    assert "Grace Hopper" in repr(result.content)


def sampler(name: str, asked: list[str]) -> Any:
    async def sampling(context: Any, params: Any) -> CreateMessageResult:
        asked.append(name)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"by-{name}"),
                                   model="test-model", stop_reason="endTurn")
    return sampling


async def test_a_stdio_request_during_calls_of_two_sessions_is_refused_not_given_to_either(tmp_path: Path) -> None:
    asked: list[str] = []
    upstream = tapped_echo_upstream("a", tmp_path / "a.fifo")
    async with tap(tmp_path / "a.fifo") as upstream_in, running_gateway(gateway_config(upstream)) as url, \
            streamable_http_client(url) as one_streams, streamable_http_client(url) as two_streams, \
            ClientSession(*one_streams, sampling_callback=sampler("one", asked)) as one, \
            ClientSession(*two_streams, sampling_callback=sampler("two", asked)) as two:
        await one.initialize()
        await two.initialize()
        asking = asyncio.create_task(one.call_tool("a__sample_during_slow", {}))
        await upstream_in.wait_for("tools/call")  # session one's call is in flight: two's comes newer
        busy = asyncio.create_task(two.call_tool("a__slow", {"ms": 1500, "text": "two"}))
        async with asyncio.timeout(30):
            result, _ = await asyncio.gather(asking, busy)
    assert asked == []  # before: the newest in-flight call (session two's) was handed session one's request
    assert f"refused {jsonrpc.METHOD_NOT_FOUND}" in repr(result.content)
    assert "several client sessions" in repr(result.content)


async def test_a_stdio_request_while_only_its_session_has_calls_in_flight_reaches_that_session() -> None:
    asked: list[str] = []
    async with running_gateway(gateway_config(echo_upstream("a"))) as url, \
            streamable_http_client(url) as streams, ClientSession(*streams, sampling_callback=sampler("one", asked)) \
            as one:
        await one.initialize()
        async with asyncio.timeout(30):
            result, _ = await asyncio.gather(one.call_tool("a__sample_during_slow", {}),
                                             one.call_tool("a__slow", {"ms": 300, "text": "x"}))
    assert asked == ["one"] and "sampled: by-one" in repr(result.content)


ROOTS_ON_INIT = ("--roots-on-init", "--tools-named", "roots_answer")


async def roots_answer_through(upstream: UpstreamConfig, roots: Any = None) -> dict[str, Any]:
    """The answer the upstream got to the roots/list it sends once initialized (outside any call)."""
    async with running_gateway(gateway_config(upstream)) as url, streamable_http_client(url) as streams, \
            ClientSession(*streams, list_roots_callback=roots) as client:
        await client.initialize()
        async with asyncio.timeout(30):
            answer = await client.call_tool("s__roots_answer", {})
    return dict(json.loads(answer.content[0].text))  # type: ignore[union-attr]


async def test_a_roots_request_outside_any_call_from_a_sessions_own_instance_reaches_that_session() -> None:
    async def roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl("file:///work/project"), name="project")])

    answer = await roots_answer_through(raw_upstream("s", *ROOTS_ON_INIT, stateful=True), roots)
    assert answer["result"]["roots"][0]["uri"] == "file:///work/project"
    assert answer["id"] == "roots-1"  # the upstream's own id, restored


async def test_a_roots_request_outside_any_call_from_a_sessions_own_instance_needs_the_capability() -> None:
    answer = await roots_answer_through(raw_upstream("s", *ROOTS_ON_INIT, stateful=True))
    assert answer["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert "does not support roots" in answer["error"]["message"]


async def test_a_roots_request_outside_any_call_from_a_shared_instance_is_refused_saying_why() -> None:
    async def roots(context: Any) -> ListRootsResult:
        raise AssertionError("a shared upstream's request must not reach any one client")

    answer = await roots_answer_through(raw_upstream("s", *ROOTS_ON_INIT), roots)
    assert answer["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert "shared by all client sessions" in answer["error"]["message"]


async def test_a_shared_upstreams_request_outside_a_call_is_explained_once_in_the_log_as_harmless(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "tollgate.hub")
    app = create_app(gateway_config(raw_upstream("s", *ROOTS_ON_INIT)))
    hub = app[HUB_KEY]
    async with served(app) as url, mcp_session(url) as client:
        async with asyncio.timeout(30):
            await client.call_tool("s__roots_answer", {})  # answered once the refusal reached the upstream
        hub.upstream_request(hub.upstreams["s"], {"jsonrpc": "2.0", "id": "roots-2", "method": "roots/list"})
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "outside any call" in r.getMessage()]
    assert said == [
        ("INFO", "upstream s asked roots/list outside any call: refused, as expected for a shared upstream (no one "
                 "client session can be asked; during a call it reaches that call's client). Harmless: an error the "
                 "upstream logs about it is this refusal"),
        ("DEBUG", "upstream s asked roots/list outside any call; refused")]


async def test_a_stateful_upstreams_catalog_instance_refusal_does_not_advise_marking_it_stateful(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.hub")
    app = create_app(gateway_config(raw_upstream("s", *ROOTS_ON_INIT, stateful=True)))
    catalog_instance = app[HUB_KEY].upstreams["s"]
    answered, sent = asyncio.Event(), list[dict[str, Any]]()
    respond = catalog_instance.respond

    async def respond_and_tell(body: dict[str, Any]) -> None:
        sent.append(body)
        answered.set()
        await respond(body)

    catalog_instance.respond = respond_and_tell  # type: ignore[method-assign]
    async with served(app):
        async with asyncio.timeout(30):
            await answered.wait()  # the catalog instance asks for roots once initialized, outside any call
    message = sent[0]["error"]["message"]
    assert "stateful upstream s" in message and "each session's own instance asks that session" in message
    said = [r.getMessage() for r in caplog.records if "outside any call" in r.getMessage()]
    assert len(said) == 1 and "as expected for a stateful upstream's catalog instance" in said[0]
    assert not any("shared" in text or "mark the upstream stateful" in text for text in [message, *said])


class _Heard(logging.Handler):
    """Sets `event` when a record containing `text` is logged (records come from the loop's own thread)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.event, self.records = text, asyncio.Event(), list[logging.LogRecord]()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            self.event.set()


async def test_a_refusal_that_fails_while_the_gateway_serves_is_still_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.hub")
    app = create_app(gateway_config(raw_upstream("s", "--tools-named", "x"), echo_upstream("b")))
    hub = app[HUB_KEY]
    heard = _Heard("background task failed")
    logging.getLogger("tollgate.hub").addHandler(heard)
    try:
        async with served(app) as url, mcp_session(url):
            await hub.upstreams["s"].close()  # this upstream is gone; the gateway serves on
            hub.upstream_request(hub.upstreams["s"], {"jsonrpc": "2.0", "id": "roots-9", "method": "roots/list"})
            async with asyncio.timeout(30):
                await heard.event.wait()
    finally:
        logging.getLogger("tollgate.hub").removeHandler(heard)
    assert [(r.levelname, r.getMessage()) for r in heard.records] == [
        ("INFO", "background task failed: upstream s is unavailable: not connected")]


async def test_server_everythings_roots_refused_at_its_start_are_asked_again_in_a_call_and_reach_that_client() -> None:
    async def roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl("file:///work/project"), name="project")])

    app = create_app(gateway_config(everything_upstream()))
    hub = app[HUB_KEY]
    refused = asyncio.Event()
    refuse = hub.upstream_request

    def refuse_and_tell(upstream: Any, body: dict[str, Any]) -> None:
        refuse(upstream, body)
        refused.set()

    hub.upstream_request = refuse_and_tell  # type: ignore[method-assign]
    async with served(app) as url, streamable_http_client(url) as streams, \
            ClientSession(*streams, list_roots_callback=roots) as client:
        await client.initialize()
        async with asyncio.timeout(30):
            await refused.wait()  # it asks for roots once initialized, outside any call
            result = await client.call_tool("everything__get-roots-list", {})
    assert "Current MCP Roots (1 total)" in result.content[0].text  # type: ignore[union-attr]
    assert "URI: file:///work/project" in result.content[0].text  # type: ignore[union-attr]
