"""An upstream's changed list reaches clients as the matching list_changed, judged on whole definitions; a tool
the upstream dropped stays routable for the session and answers isError saying so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.gateway.conftest import echo_upstream, gateway_config, running_gateway

TOOLS_CHANGED = "notifications/tools/list_changed"
PROMPTS_CHANGED = "notifications/prompts/list_changed"
RESOURCES_CHANGED = "notifications/resources/list_changed"


class Notified:
    """The methods of the notifications a client received, in order of arrival."""

    def __init__(self) -> None:
        self.methods: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: object) -> None:
        if isinstance(message, Exception):
            raise message
        self.methods.put_nowait(str(getattr(message, "method", message)))

    async def next(self, timeout: float = 15.0) -> str:
        return await asyncio.wait_for(self.methods.get(), timeout)


@asynccontextmanager
async def listening_client() -> AsyncIterator[tuple[ClientSession, Notified]]:
    """The SDK client through Tollgate in front of echo upstream `a`, keeping the notifications it gets."""
    notified = Notified()
    async with running_gateway(gateway_config(echo_upstream("a"))) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], message_handler=notified) as client:
        await client.initialize()
        yield client, notified


async def test_a_tool_whose_description_changed_is_announced_and_listed_anew_though_no_name_changed() -> None:
    async with listening_client() as (client, notified):
        before = {tool.name: tool.description for tool in (await client.list_tools()).tools}
        await client.call_tool("a__describe_whoami", {"description": "Name the server, described anew."})
        announced = await notified.next()
        after = {tool.name: tool.description for tool in (await client.list_tools()).tools}
    assert announced == TOOLS_CHANGED
    assert before["a__whoami"] == "Return this server's name (tells two upstreams apart)."
    assert after["a__whoami"] == "Name the server, described anew."
    assert after.keys() == before.keys()


async def test_an_upstreams_new_prompt_is_announced_as_prompts_list_changed_and_listed() -> None:
    async with listening_client() as (client, notified):
        await client.call_tool("a__add_prompt", {"name": "greet"})
        announced = await notified.next()
        prompts = {prompt.name: prompt.description for prompt in (await client.list_prompts()).prompts}
        got = await client.get_prompt("a__greet", {})
    assert announced == PROMPTS_CHANGED
    assert prompts == {"a__greet": "added greet"}
    assert got.messages[0].content == TextContent(type="text", text="prompt greet")


async def test_an_upstreams_new_resource_is_announced_as_resources_list_changed_and_listed() -> None:
    async with listening_client() as (client, notified):
        before = [str(resource.uri) for resource in (await client.list_resources()).resources]
        await client.call_tool("a__add_resource", {"uri": "fixture://added/notes"})
        announced = await notified.next()
        uris = [str(resource.uri) for resource in (await client.list_resources()).resources]
        read = await client.read_resource("fixture://added/notes")
    assert announced == RESOURCES_CHANGED
    assert "fixture://added/notes" not in before and sorted(uris) == sorted([*before, "fixture://added/notes"])
    assert read.contents[0].text == "text of fixture://added/notes"  # type: ignore[union-attr]


async def test_a_list_changed_that_changes_nothing_is_not_relayed() -> None:
    async with listening_client() as (client, notified):
        await client.call_tool("a__notify_tools_changed", {})  # the upstream says so, but its tools are the same
        await client.call_tool("a__add_prompt", {"name": "after"})
        first = await notified.next()
    assert first == PROMPTS_CHANGED


async def test_calling_a_tool_the_upstream_dropped_answers_is_error_saying_it_dropped_it() -> None:
    async with listening_client() as (client, notified):
        listed = [tool.name for tool in (await client.list_tools()).tools]
        await client.call_tool("a__drop_tool", {"name": "whoami"})
        announced = await notified.next()
        relisted = [tool.name for tool in (await client.list_tools()).tools]
        answer = await client.call_tool("a__whoami", {})
    assert "a__whoami" in listed and "a__whoami" not in relisted
    assert announced == TOOLS_CHANGED
    assert answer.is_error
    assert answer.content == [TextContent(
        type="text", text="Tool 'a__whoami' is no longer offered by upstream 'a' (it dropped it).")]
