"""`store.queries_turns` over the real s4 capture (one process, two turns) replayed through the OTLP routes,
with gateway call rows carrying the capture's tool_use_ids; also with prompt.id stripped (turn order) and with
every batch delivered twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.app import RAW_BODY_HANDLER_ARGS, OtlpSettings, add_otlp_routes
from store.client import Store
from store.queries_turns import list_sessions, session_detail, turns
from store.writer import Writer

DATA = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s4_two_turns_stream" / "otlp"
BATCHES = ("0002_logs", "0004_logs", "0005_logs")
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
          "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cost_usd_micros")
Post = Callable[[bytes], Awaitable[None]]


def capture_events(name: str) -> list[dict[str, Any]]:
    """The capture's log records as {attribute: value} (int64 strings to int), from its decoded JSON."""
    doc = orjson.loads((DATA / f"{name}.json").read_bytes())
    out = []
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for r in sl["logRecords"]:
                attrs = {kv["key"]: next(iter(kv["value"].values())) for kv in r["attributes"]}
                attrs["time"] = int(r["timeUnixNano"])
                out.append(attrs)
    return out


def expected_turns() -> list[dict[str, int]]:
    """Per prompt.id in order: request count and token sums, straight from the capture."""
    sums: dict[str, dict[str, int]] = {}
    for name in BATCHES:
        for e in capture_events(name):
            if e.get("event.name") == "api_request":
                row = sums.setdefault(e["prompt.id"], {"requests": 0, **dict.fromkeys(TOKENS, 0)})
                row["requests"] += 1
                for kind in TOKENS:
                    row[kind] += int(e[kind])
    return list(sums.values())


def at(ns: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)


def expected_turn_fields() -> list[dict[str, Any]]:
    """Per prompt.id in order, from the capture: its first and last event (prompt or request), the models and
    query sources of its requests in order of first use, total tokens (input, output, cache read and creation)
    and cost summed in event order."""
    events = sorted((e for name in BATCHES for e in capture_events(name)
                     if e.get("event.name") in ("user_prompt", "api_request")),
                    key=lambda e: (e["time"], int(e["event.sequence"])))
    turns: dict[str, dict[str, Any]] = {}
    for e in events:
        turn = turns.setdefault(e["prompt.id"], {"started_at": at(e["time"]), "models": [], "query_sources": [],
                                                 "total_tokens": 0, "cost_usd": 0.0})
        turn["ended_at"] = at(e["time"])
        if e["event.name"] != "api_request":
            continue
        for key, value in (("models", e["model"]), ("query_sources", e["query_source"])):
            if value not in turn[key]:
                turn[key].append(value)
        turn["total_tokens"] += sum(int(e[k]) for k in TOKENS[:4])
        turn["cost_usd"] += float(e["cost_usd"])
    return list(turns.values())


def without_prompt_ids(body: bytes) -> bytes:
    request = ExportLogsServiceRequest.FromString(body)
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                kept = [kv for kv in record.attributes if kv.key != "prompt.id"]
                del record.attributes[:]
                record.attributes.extend(kept)
    return request.SerializeToString()


@pytest.fixture
async def writer(store: Store, tmp_path: Path) -> AsyncIterator[Writer]:
    real = Writer(store, tmp_path / "spill", flush_seconds=3600.0)
    await real.start()
    try:
        yield real
    finally:
        await real.stop()


@pytest.fixture
async def post(aiohttp_client: Any, writer: Writer) -> Post:
    app = web.Application(handler_args=RAW_BODY_HANDLER_ARGS)
    add_otlp_routes(app, writer, OtlpSettings())
    client = await aiohttp_client(app)

    async def send(body: bytes) -> None:
        response = await client.post("/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"})
        assert response.status == 200

    return send


async def replay(post: Post, writer: Writer, store: Store, *, strip: bool = False, times: int = 1,
                 call_ids: bool = True) -> str:
    """Post the capture (optionally without prompt.id, optionally twice) and one gateway call per MCP tool
    result, as Tollgate would have recorded it (with `call_ids=False`, as from a client that sends no
    tool_use_id); returns the session id."""
    for _ in range(times):
        for name in BATCHES:
            body = (DATA / f"{name}.bin").read_bytes()
            await post(without_prompt_ids(body) if strip else body)
    calls = []
    for name in BATCHES:
        for e in capture_events(name):
            if e.get("event.name") == "tool_result" and e["tool_name"] == "mcp_tool":
                ended = dt.datetime.fromtimestamp(e["time"] / 1e9, dt.UTC) - dt.timedelta(milliseconds=3)
                params = orjson.loads(e["tool_parameters"])
                calls.append({
                    "call_id": e["tool_use_id"][-12:], "method": "tools/call", "upstream": "capture",
                    "tool": params["mcp_tool_name"], "exposed_name": params["mcp_tool_name"],
                    "mcp_session_id": "mcp-1", "tool_use_id": e["tool_use_id"] if call_ids else "", "status": "ok",
                    "started_at": ended - dt.timedelta(milliseconds=int(e["duration_ms"]) - 6), "ended_at": ended,
                    "resp_bytes_upstream": 1000, "text_bytes": 900, "est_tokens": 225,
                })
    for _ in range(times):
        writer.submit("calls", calls)
    await writer.flush()
    return str(capture_events(BATCHES[0])[0]["session.id"])


def token_view(turn: dict[str, Any]) -> dict[str, int]:
    return {"requests": turn["requests"], **{k: turn[k] for k in TOKENS}}


async def test_turns_by_prompt_id_carry_the_capture_numbers_and_calls_tie_exactly(
    post: Post, writer: Writer, store: Store
) -> None:
    session_id = await replay(post, writer, store)
    detail = await session_detail(store, session_id)
    assert detail is not None
    real = [t for t in detail["turns"] if t["turn_index"] > 0]
    assert [t["match_method"] for t in real] == ["prompt_id", "prompt_id"]
    assert [token_view(t) for t in real] == expected_turns()
    fields = ("started_at", "ended_at", "models", "query_sources", "total_tokens", "cost_usd")
    assert [{k: t[k] for k in fields} for t in real] == [{k: t[k] for k in fields} for t in expected_turn_fields()]
    assert all(t["prompt_length"] > 0 and t["prompt"] == "" for t in real)  # text kept only when configured
    calls = [(t["turn_index"], c["tie"], c["tool"]) for t in real for c in t["calls"]]
    assert calls == [(1, "tool_use_id", "echo"), (1, "tool_use_id", "big_payload"),
                     (2, "tool_use_id", "echo"), (2, "tool_use_id", "big_payload")]
    assert detail["session"]["ties"] == {"tool_use_id": 4, "telemetry_window": 0, "unmatched": 0}
    assert all(c["observed_tokens"] >= 0 for c in detail["tool_costs"])
    assert {c["consumed_by_request_id"] is not None for c in detail["tool_costs"]} == {True}


async def test_without_prompt_ids_turns_follow_user_prompts_in_order_and_say_so(
    post: Post, writer: Writer, store: Store
) -> None:
    session_id = await replay(post, writer, store, strip=True)
    detail = await session_detail(store, session_id)
    assert detail is not None
    real = [t for t in detail["turns"] if t["turn_index"] > 0]
    assert [t["match_method"] for t in real] == ["turn_order", "turn_order"]
    assert [t["turn_id"] for t in real] == ["turn-1", "turn-2"] and all(t["prompt_id"] == "" for t in real)
    assert [token_view(t) for t in real] == expected_turns()
    placed = [(t["turn_index"], c["match_method"], c["tie"]) for t in real for c in t["calls"]]
    assert placed == [(1, "turn_order", "tool_use_id")] * 2 + [(2, "turn_order", "tool_use_id")] * 2
    page = await list_sessions(store, since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert [(s["session_id"], s["match_method"], s["turns"]) for s in page["sessions"]] == [
        (session_id, "turn_order", 2)]


async def test_the_sessions_list_gives_a_claude_code_session_the_calls_its_page_ties_by_the_telemetry_window(
    post: Post, writer: Writer, store: Store
) -> None:
    """A client that sends no tool_use_id: its MCP session is tied only by the window, and the list must say what
    the session's page says (it listed the Claude Code session with no calls beside a separate `mcp` row)."""
    session_id = await replay(post, writer, store, call_ids=False)
    detail = await session_detail(store, session_id)
    assert detail is not None
    assert detail["session"]["ties"] == {"tool_use_id": 0, "telemetry_window": 4, "unmatched": 0}
    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    page = await list_sessions(store, since=since)
    rollup = detail["session"]
    assert [(s["session_id"], s["kind"], s["tool_calls"], s["resp_bytes_upstream"], s["servers"])
            for s in page["sessions"]] == [
        (session_id, "claude_code", 4, 4000, ["capture"])]
    assert (rollup["tool_calls"], rollup["resp_bytes_upstream"], rollup["servers"]) == (4, 4000, ["capture"])
    assert page["total"] == 1
    by_server = await list_sessions(store, since=since, server="capture")
    assert [(s["session_id"], s["tool_calls"]) for s in by_server["sessions"]] == [(session_id, 4)]
    assert by_server["total"] == 1
    user = capture_events(BATCHES[0])[0]["user.id"]  # the MCP session has no such user: it is bound all the same
    by_user = await list_sessions(store, since=since, user=user)
    assert [(s["session_id"], s["tool_calls"]) for s in by_user["sessions"]] == [(session_id, 4)]


async def test_duplicated_batches_and_call_rows_double_nothing(post: Post, writer: Writer, store: Store) -> None:
    session_id = await replay(post, writer, store, times=2)
    detail = await session_detail(store, session_id)
    assert detail is not None
    real = [t for t in detail["turns"] if t["turn_index"] > 0]
    assert [token_view(t) for t in real] == expected_turns()
    assert detail["session"]["tool_calls"] == 4
    page = await list_sessions(store, since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert [(s["turns"], s["tool_calls"], s["requests"]) for s in page["sessions"]] == [
        (2, 4, sum(t["requests"] for t in expected_turns()))]


async def test_the_turns_view_and_the_query_agree(post: Post, writer: Writer, store: Store) -> None:
    session_id = await replay(post, writer, store)
    from_view = await store.query("SELECT * FROM turns WHERE session_id = {s:String} ORDER BY turn_index",
                                  {"s": session_id})
    from_query = await turns(store, session_id)
    assert [{k: v for k, v in t.items() if k != "turn_id"} for t in from_query] == from_view


async def test_session_detail_reads_only_candidate_calls_and_ties_them_as_over_the_whole_window(
    post: Post, writer: Writer, store: Store
) -> None:
    """session_detail reads, of the calls in the session's window, only those that can tie; its calls and ties must
    equal those of tied_calls over the whole window plus the bound MCP sessions (what it computed before)."""
    from store import queries_turns as qt

    session_id = await replay(post, writer, store)
    rows = await qt.session_rows(store, session_id)
    times = [r["event_time"] for r in rows["requests"] + rows["prompts"] + rows["results"]]
    first, last = min(times), max(times)
    one = (await store.query("SELECT * FROM calls FINAL ORDER BY started_at LIMIT 1"))[0]
    extra = [  # a window-tied call of an unbound MCP session, that session's untied call, noise, an old bound call
        {**one, "call_id": "fit", "mcp_session_id": "other", "tool_use_id": ""},
        {**one, "call_id": "other-untied", "mcp_session_id": "other", "tool_use_id": "", "tool": "x",
         "exposed_name": "x", "started_at": last, "ended_at": last},
        {**one, "call_id": "noise", "mcp_session_id": "agent", "tool_use_id": "", "tool": "x", "exposed_name": "x"},
        {**one, "call_id": "old", "tool_use_id": "", "started_at": first - dt.timedelta(days=2),
         "ended_at": first - dt.timedelta(days=2)},
    ]
    await store.command("ALTER TABLE calls DELETE WHERE call_id = {c:String} SETTINGS mutations_sync = 2",
                        {"c": one["call_id"]})
    await store.insert("calls", [{k: v for k, v in c.items() if k != "inserted_at"} for c in extra])
    await store.insert("sessions", [{"mcp_session_id": "mcp-1", "started_at": first, "cc_session_id": session_id,
                                     "version": 1}])
    detail = await session_detail(store, session_id)
    assert detail is not None
    got = [(c["call_id"], c["tie"], c["turn_index"]) for t in detail["turns"] for c in t["calls"]]
    got += [(c["call_id"], c["tie"], None) for c in detail["calls_outside_turns"]]
    since, until = first - qt.PAD, last + qt.PAD
    reference = qt._calls_of(await qt.tied_calls(store, since, until, ["mcp-1"]), session_id, ["mcp-1"])
    assert sorted((c["call_id"], c["tie"]) for c in reference) == sorted((c, t) for c, t, _ in got)
    ties = {c: t for c, t, _ in got}
    assert ties["fit"] == "telemetry_window" and ties["other-untied"] == ties["old"] == "unmatched"
    assert "noise" not in ties and detail["session"]["mcp_sessions"] == ["mcp-1", "other"]
