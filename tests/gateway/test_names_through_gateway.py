"""Cases C01 and C02 through the running gateway: legal exposed names that route to the original names."""

from __future__ import annotations

import json
import logging
import re

import pytest

from gateway import naming
from tests.gateway.conftest import gateway_config, mcp_session, raw_upstream, running_gateway

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
