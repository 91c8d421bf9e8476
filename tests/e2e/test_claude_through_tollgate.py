"""The real Claude Code CLI through Tollgate: two stdio upstreams, telemetry to Tollgate's own OTLP routes.

Asserts the per-turn join from the store and the API: one session, two turns with the fake API's token
numbers and Claude Code's cost, every tool call tied by tool_use_id to its turn, bytes as the upstream sent.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway import jsonrpc
from gateway.cli import Service, open_service
from gateway.config import Config, ServerConfig, StoreConfig, UpstreamConfig
from gateway.mcp import META_TOOL_USE_ID
from tests.fixtures.claude_cli import require_claude, run_claude
from tests.fixtures.fake_anthropic import FakeAnthropic, Usage, call, say, serve, tool_search
from tests.fixtures.http_tap import HttpTap, recording_proxy
from tests.gateway.taps import Wire, teed

ROOT = Path(__file__).resolve().parents[2]
ECHO_SERVER = ROOT / "tests" / "fixtures" / "servers" / "echo_server.py"
NAME = "tollgate"
A_ECHO, A_BLOB = f"mcp__{NAME}__alpha__echo", f"mcp__{NAME}__alpha__blob"
B_ECHO, B_WHOAMI = f"mcp__{NAME}__beta__echo", f"mcp__{NAME}__beta__whoami"
TOKEN_FIELDS = (
    ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"), ("cache_creation_input_tokens", "cache_creation_tokens"),
    ("cache_5m", "cache_creation_5m_tokens"), ("cache_1h", "cache_creation_1h_tokens"),
)
TOOLS = [A_ECHO, A_BLOB, B_ECHO, B_WHOAMI]
BLOB_N = 200_000
SCRIPT = [
    [
        tool_search(TOOLS, Usage(120, 25, 5000, 2000)),
        call(Usage(140, 30, 6000), (A_ECHO, {"text": "hi from turn 1"}), (B_WHOAMI, {})),
        call(Usage(150, 20, 6500), (A_BLOB, {"n": BLOB_N})),
        say("Turn one done.", Usage(160, 12, 7000)),
    ],
    [
        call(Usage(200, 25, 5000, 2000, cache_5m=500, cache_1h=1500), (B_ECHO, {"text": "hi from turn 2"})),
        say("Turn two done.", Usage(240, 12, 7000)),
    ],
]
PROMPTS = ["call the echo, whoami and blob tools", "call beta echo"]
TELEMETRY_TIMEOUT_S = 20.0


def stdio_upstream(name: str) -> UpstreamConfig:
    return UpstreamConfig(name=name, type="stdio", command=sys.executable, args=(str(ECHO_SERVER), "--name", name))


@asynccontextmanager
async def tollgate(tmp_path: Path, upstreams: tuple[UpstreamConfig, ...] = ()) -> AsyncIterator[tuple[str, Service]]:
    """`open_service` on a real loopback port 0 with a fresh chDB directory; yields (base URL, service).

    Upstreams: `upstreams`, by default the echo server as alpha and beta.
    """
    config = Config(
        server=ServerConfig(listen="127.0.0.1:0", registered_name=NAME),
        store=StoreConfig(dsn=f"chdb://{tmp_path / 'chdb'}", flush_seconds=0.2),
        upstreams=upstreams or (stdio_upstream("alpha"), stdio_upstream("beta")),
    )
    service = await open_service(config)
    runner = web.AppRunner(service.app, access_log=None, auto_decompress=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", service
    finally:
        await runner.cleanup()
        await service.close()


async def wait_for_rows(service: Service, sql: str, want: int, timeout: float) -> list[dict[str, Any]]:
    """Flush the writer and re-read until `sql` returns `want` rows (bounded; wakes on writer progress)."""
    async with asyncio.timeout(timeout):
        while True:
            await service.writer.flush()
            rows: list[dict[str, Any]] = await service.store.query(sql)
            if len(rows) >= want:
                return rows
            await service.writer.wait_progress(timeout)


async def get_json(base: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(base + path) as response:
        assert response.status == 200, await response.text()
        return orjson.loads(await response.read())


@pytest.fixture
def claude_bin() -> Path:
    return require_claude()


def tool_call_with_id(tool_use_id: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a JSON-RPC message is the tools/call Claude Code sent for its tool_use block `tool_use_id`."""
    def matches(message: dict[str, Any]) -> bool:
        meta = (message.get("params") or {}).get("_meta") or {}
        return message.get("method") == "tools/call" and meta.get(META_TOOL_USE_ID) == tool_use_id
    return matches


def client_exchange(tap: HttpTap, tool_use_id: str) -> tuple[bytes, bytes]:
    """The POST body Claude Code sent for `tool_use_id`, and the JSON-RPC answer Tollgate delivered to it, raw."""
    (exchange,) = [e for e in tap.exchanges if e.method == "POST" and e.request.startswith(b"{")
                   and tool_call_with_id(tool_use_id)(orjson.loads(e.request))]
    request_id = orjson.loads(exchange.request)["id"]
    (answer,) = [m for m in exchange.messages() if orjson.loads(m).get("id") == request_id]
    return exchange.request, answer


def result_bytes(answer: bytes) -> bytes:
    """The `result` of a JSON-RPC answer exactly as its bytes were written."""
    raw = jsonrpc.result_slice(answer, orjson.loads(answer))
    assert raw is not None, answer[:200]
    return bytes(raw)


async def test_two_turns_through_tollgate_are_tied_by_tool_use_id(claude_bin: Path, tmp_path: Path) -> None:
    fake = FakeAnthropic(SCRIPT)
    wire_dir = tmp_path / "wire"
    wire_dir.mkdir()
    upstreams = (teed(stdio_upstream("alpha"), wire_dir), teed(stdio_upstream("beta"), wire_dir))
    async with tollgate(tmp_path, upstreams) as (base, service), serve(fake.app()) as api, \
            recording_proxy(base) as (proxied, tap):
        run = await run_claude(  # MCP through the recording proxy; telemetry straight to Tollgate
            PROMPTS, mcp_url=f"{proxied}/mcp", mcp_name=NAME, otlp_endpoint=base, anthropic_url=api,
            allowed_tools=TOOLS, home=tmp_path / "home", timeout=120,
        )
        db = service.store.database
        issued = {i.tool_use_id: i for i in fake.issued.values() if i.name.startswith(f"mcp__{NAME}__")}
        await wait_for_rows(service, f"SELECT 1 FROM {db}.cc_api_requests FINAL", 6, TELEMETRY_TIMEOUT_S)
        await wait_for_rows(service, f"SELECT 1 FROM {db}.cc_tool_results FINAL WHERE tool_name = 'mcp_tool'",
                            len(issued), TELEMETRY_TIMEOUT_S)
        bound = await wait_for_rows(
            service, f"SELECT cc_session_id, client_name, client_version FROM {db}.sessions FINAL "
                     "WHERE cc_session_id != ''", 1, TELEMETRY_TIMEOUT_S)
        page = await get_json(base, "/api/sessions")
        detail = await get_json(base, f"/api/sessions/{run.session_id}")
        from ui.cli_report import render_session

        print("\n" + render_session(detail))

    assert (fake.errors, fake.unexpected()) == ([], [])
    assert [r["result"] for r in run.results] == ["Turn one done.", "Turn two done."]
    assert [(s["session_id"], s["kind"]) for s in page["sessions"]] == [(run.session_id, "claude_code")]
    assert [b["cc_session_id"] for b in bound] == [run.session_id]  # bound inline by the first exact tie
    # The list names the client from telemetry; Claude Code's MCP clientInfo says the same name and version.
    (client,) = [s["client"] for s in page["sessions"]]
    assert client == {"name": bound[0]["client_name"], "version": bound[0]["client_version"],
                      "terminal_type": "non-interactive"} and client["name"] == "claude-code" and client["version"]

    turns = [t for t in detail["turns"] if t["turn_index"] > 0]
    assert [t["match_method"] for t in turns] == ["prompt_id", "prompt_id"]
    assert all(t["requests"] == 0 for t in detail["turns"] if t["turn_index"] == 0)
    for turn, replies in zip(turns, SCRIPT, strict=True):
        assert turn["requests"] == len(replies)
        for attr, column in TOKEN_FIELDS:
            assert turn[column] == sum(getattr(r.usage, attr) or 0 for r in replies), column
    costs = [t["cost_usd"] for t in turns]
    assert [r["total_cost_usd"] for r in run.results] == pytest.approx([costs[0], costs[0] + costs[1]], abs=1e-9)
    assert detail["session"]["cost_usd"] == pytest.approx(run.total_cost_usd, abs=1e-9)
    assert detail["session"]["cost_usd_micros"] == sum(t["cost_usd_micros"] for t in turns)

    calls = {c["tool_use_id"]: (turn["turn_index"], c) for turn in turns for c in turn["calls"]}
    assert detail["calls_outside_turns"] == []
    assert sorted(calls) == sorted(issued)
    for tool_use_id, (turn_index, c) in calls.items():
        use = issued[tool_use_id]
        assert (c["tie"], c["tie_candidates"]) == ("tool_use_id", 1)
        assert turn_index == use.turn + 1 and c["prompt_id"] == turns[use.turn]["prompt_id"]
        assert f"mcp__{NAME}__{c['exposed_name']}" == use.name
        assert c["status"] == "ok"

    # Bytes as they crossed each wire, captured during the run: the client's side by the proxy Claude Code talked
    # through, the upstream's by tee on its stdin and stdout (complete once the service, and so each upstream, ended).
    wires = {name: Wire.of(wire_dir, name) for name in ("alpha", "beta")}
    for tool_use_id, (_, c) in calls.items():
        sent, delivered = client_exchange(tap, tool_use_id)
        forwarded, answered = wires[c["upstream"]].exchange(tool_call_with_id(tool_use_id))
        assert (c["req_bytes_client"], c["req_bytes_upstream"], c["resp_bytes_upstream"], c["resp_bytes_client"]) \
            == (len(sent), len(forwarded), len(answered), len(delivered)), c["exposed_name"]
        assert result_bytes(delivered) == result_bytes(answered), c["exposed_name"]  # the upstream's, untouched

    blob = next(c for _, c in calls.values() if c["exposed_name"] == "alpha__blob")
    assert blob["text_bytes"] == BLOB_N and blob["resp_bytes_upstream"] > BLOB_N
    cost = next(t for t in detail["tool_costs"] if t["tool_use_id"] == blob["tool_use_id"])
    assert cost["resp_bytes_upstream"] == blob["resp_bytes_upstream"]
    # The blob's result is consumed by the reply after the blob call: observed = that request's context growth
    # over the one before it (one query_source chain), carried by every later request of the session.
    replies = [r for turn in SCRIPT for r in turn]
    at = next(i for i, r in enumerate(replies) if any(c.name == A_BLOB for c in r.tool_calls)) + 1
    assert cost["observed_tokens"] == context(replies[at].usage) - context(replies[at - 1].usage) > 0
    assert (cost["later_requests"], cost["carried_tokens"]) == (
        len(replies) - at - 1, cost["observed_tokens"] * (len(replies) - at - 1))

    # Startup overhead: the requests that finished before the first MCP tool call started (ToolSearch is not one).
    # The reply asking for that call is not among them: Claude Code starts a tool as soon as its tool_use block
    # has streamed in, and logs the request once the whole reply has.
    first_mcp = next(i for i, r in enumerate(replies) if any(c.name in TOOLS for c in r.tool_calls))
    startup = detail["startup"]
    assert startup["requests"] == first_mcp
    for attr, column in TOKEN_FIELDS[:4]:
        assert startup[column] == sum(getattr(r.usage, attr) for r in replies[:first_mcp]), column
    assert 0 < startup["cost_usd"] < turns[0]["cost_usd"]
    assert {c["upstream"] for c in detail["tool_list_context"]} == {"alpha", "beta"}


def context(usage: Usage) -> int:
    """Tokens of context a request read: input plus cache reads and writes (as store/costs.py counts them)."""
    return usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
