"""Server-to-client requests (sampling, elicitation) are relayed with remapped ids, or refused at once."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CreateMessageResult, ElicitResult, TextContent

from tests.gateway.conftest import everything_upstream, gateway_config, running_gateway


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
