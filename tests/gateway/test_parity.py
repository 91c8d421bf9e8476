"""Every scenario runs directly against an upstream and through Tollgate: the results must match."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import PromptReference

from tests.gateway.conftest import (
    ECHO_SERVER,
    EVERYTHING,
    echo_upstream,
    everything_upstream,
    gateway_config,
    mcp_session,
    running_gateway,
)


async def _no_sampling(*_: Any) -> Any:
    raise AssertionError("not used")


@asynccontextmanager
async def direct_stdio(command: str, *args: str) -> AsyncIterator[ClientSession]:
    """A direct SDK client declaring what Tollgate declares upstream (roots, sampling, elicitation)."""
    params = StdioServerParameters(command=command, args=list(args))
    async with stdio_client(params) as (read, write), ClientSession(
            read, write, sampling_callback=_no_sampling, elicitation_callback=_no_sampling,
            list_roots_callback=_no_sampling) as session:
        await session.initialize()
        yield session


def dump(result: Any) -> Any:
    return result.model_dump(mode="json", exclude_none=True)


async def test_echo_server_tools_behave_the_same_direct_and_through_tollgate() -> None:
    calls = [("echo", {"text": "hello"}), ("blob", {"n": 5000}), ("utf8", {}), ("whoami", {}),
             ("slow", {"ms": 10, "text": "late"})]
    async with direct_stdio(sys.executable, str(ECHO_SERVER), "--name", "a") as direct:
        direct_tools = {t.name: dump(t) for t in (await direct.list_tools()).tools}
        expected = [dump(await direct.call_tool(name, args)) for name, args in calls]
    async with running_gateway(gateway_config(echo_upstream("a"))) as url, mcp_session(url) as via:
        via_tools = {t.name: dump(t) for t in (await via.list_tools()).tools}
        got = [dump(await via.call_tool(f"a__{name}", args)) for name, args in calls]
    assert {f"a__{name}" for name in direct_tools} == set(via_tools)
    for name, definition in direct_tools.items():
        assert via_tools[f"a__{name}"] == {**definition, "name": f"a__{name}"}
    assert got == expected


async def test_progress_notifications_reach_the_client_under_its_own_token() -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with running_gateway(gateway_config(echo_upstream("a"))) as url, mcp_session(url) as via:
        result = await via.call_tool("a__progress", {"steps": 3, "ms": 5}, progress_callback=on_progress)
    assert not result.is_error
    assert [p for p, _ in seen] == [1.0, 2.0, 3.0]


async def test_server_everything_catalog_and_calls_match_direct() -> None:
    everything_upstream()  # fails clearly when npm deps are missing
    async with direct_stdio(str(EVERYTHING), "stdio") as direct:
        direct_tools = sorted(t.name for t in (await direct.list_tools()).tools)
        direct_prompts = sorted(p.name for p in (await direct.list_prompts()).prompts)
        direct_echo = dump(await direct.call_tool("echo", {"message": "hi"}))
        direct_sum = dump(await direct.call_tool("get-sum", {"a": 2, "b": 3}))
        resources = (await direct.list_resources()).resources
        direct_read = dump(await direct.read_resource(resources[0].uri))
        direct_prompt = dump(await direct.get_prompt("simple-prompt", {}))
    async with running_gateway(gateway_config(everything_upstream())) as url, mcp_session(url) as via:
        via_tools = sorted(t.name for t in (await via.list_tools()).tools)
        via_prompts = sorted(p.name for p in (await via.list_prompts()).prompts)
        via_echo = dump(await via.call_tool("everything__echo", {"message": "hi"}))
        via_sum = dump(await via.call_tool("everything__get-sum", {"a": 2, "b": 3}))
        via_read = dump(await via.read_resource(resources[0].uri))
        via_prompt = dump(await via.get_prompt("everything__simple-prompt", {}))
    assert via_tools == [f"everything__{name}" for name in direct_tools]
    assert via_prompts == [f"everything__{name}" for name in direct_prompts]
    assert (via_echo, via_sum, via_read, via_prompt) == (direct_echo, direct_sum, direct_read, direct_prompt)


@pytest.mark.parametrize("tool", ["echo", "whoami"])
async def test_two_upstreams_with_the_same_tool_each_get_their_own_calls(tool: str) -> None:
    config = gateway_config(echo_upstream("a"), echo_upstream("b"))
    async with running_gateway(config) as url, mcp_session(url) as via:
        names = [t.name for t in (await via.list_tools()).tools]
        a = await via.call_tool(f"a__{tool}", {"text": "x"} if tool == "echo" else {})
        b = await via.call_tool(f"b__{tool}", {"text": "x"} if tool == "echo" else {})
    assert names == sorted(names) and f"a__{tool}" in names and f"b__{tool}" in names
    if tool == "whoami":
        assert (a.content[0].text, b.content[0].text) == ("a", "b")  # type: ignore[union-attr]


async def test_prompt_argument_completion_reaches_the_owning_upstream_under_its_own_prompt_name() -> None:
    async with running_gateway(gateway_config(everything_upstream())) as url, mcp_session(url) as via:
        prompt = PromptReference(type="ref/prompt", name="everything__completable-prompt")
        departments = await via.complete(prompt, {"name": "department", "value": "S"})
        leads = await via.complete(prompt, {"name": "name", "value": ""}, context_arguments={"department": "Sales"})
    assert departments.completion.values == ["Sales", "Support"]
    assert leads.completion.values == ["David", "Eve", "Frank"]
