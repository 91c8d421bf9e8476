"""Cases C01 and C02 through the running gateway: legal exposed names that route to the original names, and a
name a session was given that keeps reaching its tool when the upstream's list changes."""

from __future__ import annotations

import hashlib
import json
import logging
import re

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from gateway import naming
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session, raw_upstream, running_gateway
from tests.gateway.test_list_changed import TOOLS_CHANGED, Notified

FULL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
LONG_TOOL = "synchronize-all-customer-data-across-multiple-systems"
ODD_TOOLS = ["time.get-current-time", "a:b/c", "ünïcode_tool", "get_time"]


async def test_long_and_illegal_names_are_exposed_legally_and_each_call_reaches_its_original(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.hub")
    config = gateway_config(
        raw_upstream("enterprise-database-management", "--tools-named", LONG_TOOL),
        raw_upstream("odd", "--tools-named", ",".join(ODD_TOOLS)))
    async with running_gateway(config) as url, mcp_session(url) as client:
        tools = (await client.list_tools()).tools
        reached = {}
        for tool in tools:
            answer = json.loads((await client.call_tool(tool.name, {})).content[0].text)  # type: ignore[union-attr]
            reached[tool.name] = (answer["server"], answer["tool"])
    for tool in tools:
        assert FULL_NAME.match(f"mcp__tollgate__{tool.name}"), tool.name
    assert sorted(original for _, original in reached.values()) == sorted([LONG_TOOL, *ODD_TOOLS])
    assert "odd__get_time" in reached  # a legal name keeps its plain, namespaced form
    long_exposed = next(t for t in tools if reached[t.name][1] == LONG_TOOL)
    assert LONG_TOOL in (long_exposed.title or "") + (long_exposed.description or "")  # full name stays visible
    shortened = (f"exposed enterprise-database-management/{LONG_TOOL} as {long_exposed.name} "
                 f"({naming.SHORTENED})")
    logged = [r.getMessage() for r in caplog.records if r.name == "tollgate.hub"]
    assert logged.count(shortened) == 1  # C01's startup line, once however often the tool list changed


def text_of(answer: CallToolResult) -> str:
    assert not answer.is_error and isinstance(answer.content[0], TextContent), answer
    return answer.content[0].text


async def test_a_name_a_session_was_given_keeps_reaching_its_tool_when_a_new_tool_would_take_it(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.hub")
    newcomer = f"a__x_y_{hashlib.sha256(json.dumps(['a', 'x_y']).encode()).hexdigest()[:8]}"
    notified = Notified()
    async with running_gateway(gateway_config(echo_upstream("a"))) as url, \
            streamable_http_client(url) as streams, \
            ClientSession(streams[0], streams[1], message_handler=notified) as client:
        await client.initialize()
        await client.call_tool("a__add_tool", {"name": "x.y"})
        assert await notified.next() == TOOLS_CHANGED
        listed = {tool.name for tool in (await client.list_tools()).tools}
        first = text_of(await client.call_tool("a__x_y", {}))
        await client.call_tool("a__add_tool", {"name": "x_y"})  # plain `x_y` would take `a__x_y` in a new process
        assert await notified.next() == TOOLS_CHANGED
        again = text_of(await client.call_tool("a__x_y", {}))  # not listed again, as Claude Code does
        async with mcp_session(url) as other:
            fresh = {tool.name: tool for tool in (await other.list_tools()).tools}
            reached_newcomer = text_of(await other.call_tool(newcomer, {}))
            reached_old = text_of(await other.call_tool("a__x_y", {}))
        relisted = {tool.name for tool in (await client.list_tools()).tools}
    assert "a__x_y" in listed
    assert first == again == reached_old == "reached x.y"
    assert reached_newcomer == "reached x_y"
    assert (fresh["a__x_y"].title, fresh[newcomer].title) == ("a/x.y", "a/x_y")  # the originals stay visible
    assert fresh[newcomer].description == "[a/x_y] added x_y"
    assert relisted == set(fresh) == listed | {newcomer}
    logged = [r.getMessage() for r in caplog.records if r.name == "tollgate.hub"]
    assert f"exposed a/x_y as {newcomer} ({naming.TAKEN})" in logged
