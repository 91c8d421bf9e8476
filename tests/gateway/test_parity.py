"""Every scenario runs directly against an upstream and through Tollgate: the results must match."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import PromptReference

from gateway.config import UpstreamConfig
from tests.fixtures.procs import http_fixture
from tests.gateway.conftest import (
    EVERYTHING,
    echo_upstream,
    everything_upstream,
    gateway_config,
    mcp_session,
    raw_upstream,
    running_gateway,
)


async def _no_sampling(*_: Any) -> Any:
    raise AssertionError("not used")


@asynccontextmanager
async def direct_stdio(command: str, *args: str) -> AsyncIterator[ClientSession]:
    """A direct SDK client declaring what Tollgate declares upstream (roots, sampling, elicitation)."""
    async with direct(UpstreamConfig(name="direct", type="stdio", command=command, args=args)) as session:
        yield session


@asynccontextmanager
async def direct(upstream: UpstreamConfig) -> AsyncIterator[ClientSession]:
    """The SDK client connected straight to `upstream` over its own transport, declaring what Tollgate
    declares upstream (roots, sampling, elicitation)."""
    async with AsyncExitStack() as stack:
        if upstream.type == "stdio":
            params = StdioServerParameters(command=upstream.command or "", args=list(upstream.args))
            read, write = await stack.enter_async_context(stdio_client(params))
        elif upstream.type == "http":
            read, write = await stack.enter_async_context(streamable_http_client(upstream.url or ""))
        else:
            read, write = await stack.enter_async_context(sse_client(upstream.url or ""))
        session = await stack.enter_async_context(ClientSession(
            read, write, sampling_callback=_no_sampling, elicitation_callback=_no_sampling,
            list_roots_callback=_no_sampling))
        await session.initialize()
        yield session


@asynccontextmanager
async def echo_server_as(transport: str) -> AsyncIterator[UpstreamConfig]:
    """The SDK echo server named `a` over `transport` (stdio | http | sse), as Tollgate's upstream config;
    an HTTP one runs for the block and serves the direct client and Tollgate alike."""
    if transport == "stdio":
        yield echo_upstream("a")
        return
    async with http_fixture(transport, "a") as url:
        yield UpstreamConfig(name="a", type=transport, url=url)


def dump(result: Any) -> Any:
    return result.model_dump(mode="json", exclude_none=True)


CALLS = [("echo", {"text": "hello"}), ("blob", {"n": 5000}), ("utf8", {}), ("whoami", {}),
         ("slow", {"ms": 10, "text": "late"})]


async def scenario(client: ClientSession, prefix: str) -> dict[str, Any]:
    """Everything the echo server offers, as `client` sees it (tool names without `prefix`)."""
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    tools = {t.name.removeprefix(prefix): {**dump(t), "name": t.name.removeprefix(prefix)}
             for t in (await client.list_tools()).tools}
    results = [dump(await client.call_tool(prefix + name, args)) for name, args in CALLS]
    finished = dump(await client.call_tool(prefix + "progress", {"steps": 3, "ms": 5}, progress_callback=on_progress))
    return {
        "tools": tools, "results": results, "progress": (progress, finished),
        "resources": dump(await client.list_resources()),
        "templates": dump(await client.list_resource_templates()),
        "reads": [dump(await client.read_resource(uri)) for uri in ("echo://a/static", "echo://a/items/7")],
    }


@pytest.mark.parametrize("transport", ["stdio", "http", "sse"])
async def test_echo_server_behaves_the_same_direct_and_through_tollgate(transport: str) -> None:
    async with echo_server_as(transport) as upstream:
        async with direct(upstream) as client:
            expected = await scenario(client, "")
        async with running_gateway(gateway_config(upstream)) as url, mcp_session(url) as client:
            got = await scenario(client, "a__")
    assert set(expected["tools"]) >= {name for name, _ in CALLS}
    assert expected["progress"][0] == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
    assert [r["contents"][0]["text"] for r in expected["reads"]] == ["static of a", "item 7 of a"]
    assert got == expected


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


@pytest.mark.parametrize("server", ["sdk-whoami", "raw-search"])
async def test_two_upstreams_with_the_same_tool_each_get_their_own_calls(server: str) -> None:
    if server == "sdk-whoami":
        config, tool, args = gateway_config(echo_upstream("a"), echo_upstream("b")), "whoami", {}
    else:  # C03: both expose `search`, each answering with its own server name
        config = gateway_config(*(raw_upstream(name, "--name", name, "--tools-named", "search") for name in "ab"))
        tool, args = "search", {"q": "x"}
    async with running_gateway(config) as url, mcp_session(url) as via:
        names = [t.name for t in (await via.list_tools()).tools]
        a = (await via.call_tool(f"a__{tool}", args)).content[0].text  # type: ignore[union-attr]
        b = (await via.call_tool(f"b__{tool}", args)).content[0].text  # type: ignore[union-attr]
    assert names == sorted(names) and f"a__{tool}" in names and f"b__{tool}" in names
    if server == "sdk-whoami":
        assert (a, b) == ("a", "b")
    else:
        assert names == ["a__search", "b__search"]
        assert (json.loads(a), json.loads(b)) == ({"tool": "search", "server": "a", "arguments": args},
                                                  {"tool": "search", "server": "b", "arguments": args})


async def test_prompt_argument_completion_reaches_the_owning_upstream_under_its_own_prompt_name() -> None:
    async with running_gateway(gateway_config(everything_upstream())) as url, mcp_session(url) as via:
        prompt = PromptReference(type="ref/prompt", name="everything__completable-prompt")
        departments = await via.complete(prompt, {"name": "department", "value": "S"})
        leads = await via.complete(prompt, {"name": "name", "value": ""}, context_arguments={"department": "Sales"})
    assert departments.completion.values == ["Sales", "Support"]
    assert leads.completion.values == ["David", "Eve", "Frank"]
