"""The Claude Code harness, proved against a plain MCP server (the SDK's Streamable HTTP server).

Real CLI + scripted fake Anthropic API + echo fixture server + OTLP sink; Tollgate is not involved.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import web

from tests.fixtures import claude_cli
from tests.fixtures.claude_cli import require_claude, run_claude
from tests.fixtures.fake_anthropic import FakeAnthropic, Reply, Usage, call, say, serve, tool_search
from tests.fixtures.otlp_capture import OtlpCapture
from tests.fixtures.servers.echo_server import build_server

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVER = "tollgate"
ECHO, BLOB = f"mcp__{SERVER}__echo", f"mcp__{SERVER}__blob"
TOKEN_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_creation_tokens"),
    ("cache_5m", "cache_creation_5m_tokens"),
    ("cache_1h", "cache_creation_1h_tokens"),
)
TELEMETRY_TIMEOUT_S = 15.0

SCRIPT = [
    [
        tool_search([ECHO, BLOB], Usage(120, 25, 5000, 2000)),
        call(Usage(140, 30, 6000), (ECHO, {"text": "hi from turn 1"}), (BLOB, {"n": 3000})),
        say("Turn one done.", Usage(160, 12, 7000)),
    ],
    [
        call(Usage(200, 25, 5000, 2000, cache_5m=500, cache_1h=1500), (ECHO, {"text": "hi from turn 2"})),
        say("Turn two done.", Usage(240, 12, 7000)),
    ],
]
PROMPTS = ["call echo and blob", "call echo again"]


@dataclass
class McpRecorder:
    """ASGI wrapper keeping every JSON-RPC body the MCP server received."""

    inner: Callable[[Scope, Receive, Send], Awaitable[None]]
    bodies: list[Any] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        chunks: list[bytes] = []

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body") and (raw := b"".join(chunks)):
                    self.bodies.append(json.loads(raw))
            return message

        await self.inner(scope, recording_receive, send)

    def tool_calls(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if isinstance(b, dict) and b.get("method") == "tools/call"]


@asynccontextmanager
async def echo_mcp_server() -> AsyncIterator[tuple[str, McpRecorder]]:
    """The echo fixture server in-process (uvicorn on a pre-bound port-0 socket)."""
    recorder = McpRecorder(build_server("echo").streamable_http_app())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(recorder, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:  # the socket already listens: early connections wait in its backlog until uvicorn accepts
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", recorder
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
def claude_bin() -> Path:
    return require_claude()


def usage_row(usage: Usage) -> dict[str, int]:
    return {otel: getattr(usage, attr) or 0 for attr, otel in TOKEN_FIELDS}


def event_row(event: dict[str, Any]) -> dict[str, int]:
    return {otel: int(event[otel]) for _, otel in TOKEN_FIELDS}


def by_prompt(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Events grouped by prompt.id, groups and members in `event.sequence` order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(events, key=lambda e: int(e["event.sequence"])):
        groups.setdefault(event["prompt.id"], []).append(event)
    return list(groups.values())


async def test_two_turns_drive_mcp_tools_and_telemetry_matches_the_script(
    claude_bin: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fake, sink = FakeAnthropic(SCRIPT), OtlpCapture()
    async with echo_mcp_server() as (mcp_url, mcp), serve(fake.app()) as api, serve(sink.app()) as otlp:
        run = await run_claude(
            PROMPTS, mcp_url=mcp_url, mcp_name=SERVER, otlp_endpoint=otlp, anthropic_url=api,
            allowed_tools=[ECHO, BLOB], home=tmp_path / "home", timeout=90,
        )
        at_exit = len(sink.events_named("api_request"))
        request.node.user_properties += [("claude_wall_s", round(run.wall_s, 2)), ("api_requests_at_exit", at_exit)]
        print(f"claude wall time {run.wall_s:.2f}s; api_request events already in at exit: {at_exit}/5")
        await sink.wait_for(lambda s: len(s.events_named("api_request")) >= 5, TELEMETRY_TIMEOUT_S)

    assert (fake.errors, fake.unexpected()) == ([], [])
    assert [(r.turn, r.step) for r in fake.main_requests()] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [r["result"] for r in run.results] == ["Turn one done.", "Turn two done."]

    issued = {i.tool_use_id: i for i in fake.issued.values() if i.name.startswith(f"mcp__{SERVER}__")}
    calls = mcp.tool_calls()
    seen_ids = [c["params"]["_meta"]["claudecode/toolUseId"] for c in calls]
    assert sorted(seen_ids) == sorted(issued)
    for c, tool_use_id in zip(calls, seen_ids, strict=True):
        assert f"mcp__{SERVER}__{c['params']['name']}" == issued[tool_use_id].name
        assert c["params"]["arguments"] == issued[tool_use_id].input
    model_saw = fake.tool_results()
    for tool_use_id, use in issued.items():
        if use.name == ECHO:
            assert json.loads(model_saw[tool_use_id]) == {"result": use.input["text"]}
        else:
            assert model_saw[tool_use_id] == [{"type": "text", "text": "x" * use.input["n"]}]

    turns = by_prompt(sink.events_named("api_request"))
    expected = [[usage_row(reply.usage) for reply in turn] for turn in SCRIPT]
    assert [[event_row(e) for e in turn] for turn in turns] == expected
    costs = [sum(float(e["cost_usd"]) for e in turn) for turn in turns]
    assert run.total_cost_usd == pytest.approx(sum(costs), abs=1e-9)
    assert [r["total_cost_usd"] for r in run.results] == pytest.approx([costs[0], costs[0] + costs[1]])

    results = {e["tool_use_id"]: e["prompt.id"] for e in sink.events_named("tool_result")}
    turn_prompt_ids = [turn[0]["prompt.id"] for turn in turns]
    assert {i: results[i] for i in issued} == {i: turn_prompt_ids[issued[i].turn] for i in issued}


async def test_one_prompt_runs_in_json_mode(claude_bin: Path, tmp_path: Path) -> None:
    script = [[say("Hello.", Usage(100, 10))]]
    fake = FakeAnthropic(script)
    async with echo_mcp_server() as (mcp_url, _), serve(fake.app()) as api:
        run = await run_claude(
            ["say hello"], mcp_url=mcp_url, otlp_endpoint=None, anthropic_url=api,
            allowed_tools=[ECHO], home=tmp_path / "home", timeout=60,
        )
    assert [r["result"] for r in run.results] == ["Hello."]
    assert run.results[0]["usage"]["input_tokens"] == 100
    assert fake.errors == []


async def test_a_hung_api_times_out_and_leaves_no_process(claude_bin: Path, tmp_path: Path) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    async with echo_mcp_server() as (mcp_url, _), serve(app) as api:
        run = await run_claude(
            ["anything", "never sent"], mcp_url=mcp_url, otlp_endpoint=None, anthropic_url=api,
            allowed_tools=[ECHO], home=tmp_path / "home", timeout=2, check=False,
        )
        never.set()
    assert run.timed_out and run.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pid, 0)


def test_a_missing_cli_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claude_cli, "CLAUDE_BIN", Path("/nonexistent/claude"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_claude()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        require_claude()



CAPTURE = Path(__file__).parent / "captures" / "s4_main_requests.json"
SSE_ORDER = ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
             "message_delta", "message_stop"]


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_the_fake_follows_captured_conversations_and_answers_aux_requests() -> None:
    captured = json.loads(CAPTURE.read_text())["requests"]
    usage = Usage(1, 2, 3, 4)
    fake = FakeAnthropic([[say(f"t0s{i}", usage) for i in range(4)], [say(f"t1s{i}", usage) for i in range(3)]])
    async with serve(fake.app()) as api, aiohttp.ClientSession() as http:
        for body in captured:
            headers = {"x-claude-code-session-id": body["x-claude-code-session-id"]}
            async with http.post(f"{api}/v1/messages?beta=true", json=body, headers=headers) as resp:
                events = sse_events(await resp.text())
            assert [name for name, _ in events] == SSE_ORDER
            assert events[4][1]["usage"]["output_tokens"] == 2
        async with http.post(f"{api}/v1/messages", json={"model": "m", "messages": []}) as resp:
            aux = await resp.json()
        async with http.post(f"{api}/v1/messages/count_tokens", json={"messages": []}) as resp:
            counted = await resp.json()
    assert [(r.turn, r.step) for r in fake.main_requests()] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert (aux["content"], aux["usage"]["input_tokens"]) == ([{"type": "text", "text": fake.aux_text}], 10)
    assert counted["input_tokens"] > 0
    assert [r.kind for r in fake.requests[-2:]] == ["aux", "count_tokens"] and fake.errors == []


def per_session_script(first_prompt: str) -> list[list[Reply]]:
    n = int(first_prompt.split()[-1])
    return [[tool_search([ECHO], Usage(100 + n, 10)), call(Usage(200 + n, 10), (ECHO, {"text": f"session {n}"})),
             say(f"done {n}", Usage(300 + n, 5))]]


async def test_concurrent_sessions_each_follow_their_own_script(claude_bin: Path, tmp_path: Path) -> None:
    fake = FakeAnthropic(per_session_script)
    async with echo_mcp_server() as (mcp_url, mcp), serve(fake.app()) as api:
        runs = await asyncio.gather(*(
            run_claude([f"session {n}"], mcp_url=mcp_url, mcp_name=SERVER, otlp_endpoint=None, anthropic_url=api,
                       allowed_tools=[ECHO], home=tmp_path / f"home{n}", timeout=90)
            for n in range(3)
        ))
    assert [run.results[0]["result"] for run in runs] == ["done 0", "done 1", "done 2"]
    assert [run.results[0]["usage"]["input_tokens"] for run in runs] == [600, 603, 606]
    echoed = {c["params"]["_meta"]["claudecode/toolUseId"]: c["params"]["arguments"]["text"] for c in mcp.tool_calls()}
    issued = {i.tool_use_id: i for i in fake.issued.values() if i.name == ECHO}
    assert echoed == {i: use.input["text"] for i, use in issued.items()}
    assert {use.input["text"]: use.session_id for use in issued.values()} == {
        f"session {n}": run.session_id for n, run in enumerate(runs)
    }
