"""Tie accuracy under concurrency: 8 MCP sessions call the same tools at once through Tollgate while synthetic
Claude Code telemetry (tool_result events as the CLI sends them) reports each call, each session over two prompts.

With tool_use_ids every tie is exact and right (session and prompt); with the ids stripped from the MCP requests
the telemetry window method's correct share (right result, session and prompt) is measured and reported (a line
in the run's summary, see conftest.py), and nothing it ties is labelled exact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from store import ties
from store.queries_turns import tied_calls
from tests.e2e.conftest import MEASURED
from tests.e2e.test_claude_through_tollgate import tollgate
from tests.gateway.conftest import mcp_session

SESSIONS = 8
CALLS_PER_SESSION = 8
PROMPTS_PER_SESSION = 2  # each session's calls are split between two turns, in order
NAME = "tollgate"


@dataclass
class Sent:
    """One call as the client made it, and the telemetry Claude Code would log for it."""

    cc_session: str
    prompt_id: str
    tool_use_id: str
    exposed: str
    started: float
    ended: float
    sequence: int


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=str(value))


def tool_result_body(sent: list[Sent], rng: random.Random) -> bytes:
    """One OTLP logs export with a claude_code.tool_result record per call, shaped like the CLI's."""
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    request.resource_logs[0].resource.attributes.append(KeyValue(key="service.name", value=any_value("claude-code")))
    for s in sent:
        logged = s.ended + rng.uniform(0.001, 0.030)  # the CLI logs after it has processed the answer
        record = scope_logs.log_records.add()
        record.time_unix_nano = int(logged * 1e9)
        record.body.string_value = "claude_code.tool_result"
        attrs = {
            "event.name": "tool_result", "session.id": s.cc_session, "prompt.id": s.prompt_id,
            "event.sequence": s.sequence, "event.timestamp": dt.datetime.fromtimestamp(logged, dt.UTC).isoformat(),
            "tool_name": "mcp_tool", "tool_use_id": s.tool_use_id, "success": "true",
            "duration_ms": str(round((logged - s.started) * 1000)), "tool_result_size_bytes": "40",
            "tool_parameters": orjson.dumps({"mcp_server_name": NAME, "mcp_tool_name": s.exposed}).decode(),
        }
        record.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in attrs.items())
    return request.SerializeToString()


async def one_session(url: str, rng: random.Random, send_ids: bool) -> list[Sent]:
    """A client session making CALLS_PER_SESSION sequential calls to tools every session uses, over two prompts."""
    cc_session, prompt_ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(PROMPTS_PER_SESSION)]
    sent: list[Sent] = []
    async with mcp_session(url) as client:
        for sequence in range(CALLS_PER_SESSION):
            prompt_id = prompt_ids[sequence * PROMPTS_PER_SESSION // CALLS_PER_SESSION]
            exposed, args = rng.choice([("alpha__echo", {"text": "hi"}), ("beta__echo", {"text": "hi"}),
                                        ("alpha__slow", {"ms": rng.randint(1, 40), "text": "x"}),
                                        ("beta__blob", {"n": rng.randint(10, 5000)})])
            tool_use_id = "toolu_01" + secrets.token_hex(11)
            meta = {"claudecode/toolUseId": tool_use_id} if send_ids else None
            started = time.time()
            await client.call_tool(exposed, args, meta=meta)  # type: ignore[arg-type]
            sent.append(Sent(cc_session, prompt_id, tool_use_id, exposed, started, time.time(), sequence))
            await asyncio.sleep(rng.uniform(0, 0.02))  # the model "thinks" between calls
    return sent


async def run_phase(base: str, service: Any, send_ids: bool, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    since = dt.datetime.now(dt.UTC)
    outcomes = await asyncio.gather(*(one_session(f"{base}/mcp", random.Random(rng.random()), send_ids)
                                      for _ in range(SESSIONS)))
    sent = [s for calls in outcomes for s in calls]
    async with aiohttp.ClientSession() as http:
        for calls in outcomes:  # each CLI exports its own batch
            body = tool_result_body(calls, rng)
            async with http.post(f"{base}/v1/logs", data=body,
                                 headers={"Content-Type": "application/x-protobuf"}) as response:
                assert response.status == 200
    await service.writer.flush()
    calls = await tied_calls(service.store, since, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    return {"sent": sent, "calls": [c for c in calls if c["started_at"] >= since]}


def expected_sent(sent: list[Sent], calls: list[dict[str, Any]]) -> dict[str, Sent]:
    """call_id -> the call as really sent, whose telemetry describes it (same session, same position)."""
    by_cc: dict[str, list[Sent]] = {}
    for s in sent:
        by_cc.setdefault(s.cc_session, []).append(s)
    by_mcp: dict[str, list[dict[str, Any]]] = {}
    for c in sorted(calls, key=lambda c: c["started_at"]):
        by_mcp.setdefault(c["mcp_session_id"], []).append(c)
    expected: dict[str, Sent] = {}
    for mcp_calls in by_mcp.values():  # a session's tool sequence (8 picks of 4) identifies its client
        names = [c["exposed_name"] for c in mcp_calls]
        owners = [ss for ss in by_cc.values() if [s.exposed for s in ss] == names]
        assert len(owners) == 1, names
        for call, s in zip(mcp_calls, owners[0], strict=True):
            expected[call["call_id"]] = s
    return expected


async def test_ties_under_concurrency_exact_with_ids_and_measured_without(
    tmp_path: Path, record_property: Any
) -> None:
    async with tollgate(tmp_path) as (base, service):
        with_ids = await run_phase(base, service, send_ids=True, seed=1)
        without_ids = await run_phase(base, service, send_ids=False, seed=2)

    calls = with_ids["calls"]
    truth = {s.tool_use_id: s for s in with_ids["sent"]}
    assert len(calls) == SESSIONS * CALLS_PER_SESSION
    assert all(c["tie"] == ties.EXACT for c in calls)
    assert all(c["telemetry_tool_use_id"] == c["tool_use_id"] for c in calls)
    assert all(c["turn_session_id"] == truth[c["tool_use_id"]].cc_session for c in calls)
    assert all(c["prompt_id"] == truth[c["tool_use_id"]].prompt_id for c in calls)
    assert len({c["prompt_id"] for c in calls}) == SESSIONS * PROMPTS_PER_SESSION

    calls = without_ids["calls"]
    assert len(calls) == SESSIONS * CALLS_PER_SESSION and all(c["tool_use_id"] == "" for c in calls)
    expected = expected_sent(without_ids["sent"], calls)
    assert not [c for c in calls if c["tie"] == ties.EXACT]  # never labelled exact without an id
    correct = sum(1 for c in calls if c["tie"] == ties.WINDOW
                  and c["telemetry_tool_use_id"] == expected[c["call_id"]].tool_use_id
                  and (c["turn_session_id"], c["prompt_id"]) == (expected[c["call_id"]].cc_session,
                                                                 expected[c["call_id"]].prompt_id))
    right_session = sum(1 for c in calls if c["turn_session_id"] and c["telemetry_tool_use_id"]
                        and any(s.tool_use_id == c["telemetry_tool_use_id"] for s in without_ids["sent"]))
    share = correct / len(calls)
    single = sum(1 for c in calls if c["tie_candidates"] == 1)
    record_property(MEASURED, f"telemetry_window ties: {correct}/{len(calls)} correct ({share:.1%}, goal >= 99%); "
                    f"{single} chosen among a single candidate; unmatched "
                    f"{sum(1 for c in calls if c['tie'] == ties.UNMATCHED)}; tied at all {right_session}")
    record_property("window_correct_share", share)  # the figure alone, for a JUnit report
    assert share >= 0.99

