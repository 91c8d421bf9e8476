"""`store.costs` over hand-made rows: observed and carried tokens of tool results, startup overhead, tool-list
context (its snapshot, whom it is charged to). Expected values are computed here from the rows' own numbers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from store import costs

BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PRICE = 3.0  # micro-USD per input token: every request's cost below is this times its price weight
MAIN, AUX = "repl_main_thread", "compact"


def at(seconds: float) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


def weight(r: dict[str, Any]) -> float:
    """Anthropic's price ratios, as costs.input_price_micros applies them (cache writes here are all 5-minute)."""
    return (r["input_tokens"] + costs.OUTPUT_RATIO * r["output_tokens"]
            + costs.CACHE_READ_RATIO * r["cache_read_tokens"] + costs.CACHE_5M_RATIO * r["cache_creation_tokens"])


def request(name: str, second: float, prompt: str, source: str, inp: int, out: int, read: int, write: int,
            tool: str = "") -> dict[str, Any]:
    row = {"request_id": name, "event_time": at(second), "seq": 0, "prompt_id": prompt, "query_source": source,
           "model": "claude-test", "mcp_server_name": "tollgate" if tool else "", "mcp_tool_name": tool,
           "input_tokens": inp, "output_tokens": out, "cache_read_tokens": read, "cache_creation_tokens": write,
           "cache_creation_5m_tokens": write, "cache_creation_1h_tokens": 0}
    row["cost_usd_micros"] = round(PRICE * weight(row))
    row["cost_usd"] = row["cost_usd_micros"] / 1e6
    return row


# A prompt p1 whose first request reads the tool list, one echo result consumed by r1, a blob and an echo result
# consumed together by r2 (which names only blob), an auxiliary request between them (another chain), and p2.
REQUESTS = [
    request("r-pre", 0, "p1", MAIN, 50, 20, 0, 4000),
    request("r0", 1, "p1", MAIN, 100, 40, 4000, 800),
    request("r1", 3, "p1", MAIN, 10, 60, 4800, 1200, tool="echo"),
    request("r-aux", 3.5, "p1", AUX, 9000, 10, 0, 0),
    request("r2", 5, "p1", MAIN, 20, 30, 6000, 2000, tool="blob"),
    request("r3", 7, "p2", MAIN, 30, 80, 8000, 400),
    request("r4", 8, "p2", MAIN, 40, 10, 8400, 120),
]
RESULTS = [  # (tool_use_id, second, tool, result bytes, duration ms)
    ("toolu_a", 2, "echo", 400, 600), ("toolu_b", 4, "blob", 3000, 300), ("toolu_c", 4, "echo", 1000, 200)]


def results() -> list[dict[str, Any]]:
    return [{"tool_use_id": use, "event_time": at(second), "seq": 0, "prompt_id": "p1", "tool_name": "mcp_tool",
             "mcp_server_name": "tollgate", "mcp_tool_name": tool, "tool_result_size_bytes": size,
             "duration_ms": ms} for use, second, tool, size, ms in RESULTS]


def calls() -> list[dict[str, Any]]:
    """Gateway calls tied to results a and b (c has none), each starting when its result's duration began."""
    return [{"call_id": f"call-{use}", "telemetry_tool_use_id": use, "upstream": "up", "tool": tool,
             "started_at": at(second - ms / 1000), "resp_bytes_upstream": size + 90, "est_tokens": size // 4}
            for use, second, tool, size, ms in RESULTS if use != "toolu_c"]


def by_id(name: str) -> dict[str, Any]:
    return next(r for r in REQUESTS if r["request_id"] == name)


def growth(name: str, previous: str) -> int:
    return costs.context_tokens(by_id(name)) - costs.context_tokens(by_id(previous))


def later_in_chain(name: str) -> int:
    me = by_id(name)
    return sum(1 for r in REQUESTS if r["query_source"] == me["query_source"] and r["event_time"] > me["event_time"])


def test_observed_tokens_are_the_consumers_context_growth_shared_by_result_size_and_carried_by_its_chain() -> None:
    made = calls()
    rows = {r["tool_use_id"]: r for r in costs.tool_costs(REQUESTS, results(), made)}
    shared = {use: size for use, _, _, size, _ in RESULTS if use != "toolu_a"}
    expected = {  # r1 consumed a alone; r2 consumed b and c, over r1 (r-aux is another chain)
        "toolu_a": ("r1", growth("r1", "r0"), later_in_chain("r1")),
        "toolu_b": ("r2", round(growth("r2", "r1") * shared["toolu_b"] / sum(shared.values())), later_in_chain("r2")),
        "toolu_c": ("r2", round(growth("r2", "r1") * shared["toolu_c"] / sum(shared.values())), later_in_chain("r2")),
    }
    assert {use: (r["consumed_by_request_id"], r["observed_tokens"], r["later_requests"])
            for use, r in rows.items()} == expected
    for use, (_, observed, later) in expected.items():
        assert rows[use]["carried_tokens"] == observed * later
        assert rows[use]["est_carried_cost_usd"] == pytest.approx(observed * later * PRICE * costs.CACHE_READ_RATIO
                                                                  / 1e6)
    assert later_in_chain("r1") == 3 and expected["toolu_b"][1] > expected["toolu_c"][1] > 0  # the rows mean this
    for call in made:
        _, observed, later = expected[call["telemetry_tool_use_id"]]
        assert (call["observed_tokens"], call["carried_tokens"]) == (observed, observed * later)
        use = call["telemetry_tool_use_id"]
        assert rows[use]["resp_bytes_upstream"] == call["resp_bytes_upstream"]
    assert rows["toolu_c"]["call_id"] is None


def test_startup_overhead_is_the_requests_before_the_first_tool_call_started() -> None:
    first = min(c["started_at"] for c in calls())
    before = [r for r in REQUESTS if r["event_time"] < first]
    startup = costs.startup_overhead(REQUESTS, results(), calls())
    kinds = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
    assert startup["first_tool_call_at"] == first.timestamp()
    assert {k: startup[k] for k in ("requests", *kinds, "total_tokens", "cost_usd_micros")} == {
        "requests": len(before), **{k: sum(r[k] for r in before) for k in kinds},
        "total_tokens": sum(r[k] for r in before for k in kinds),
        "cost_usd_micros": sum(r["cost_usd_micros"] for r in before)}
    assert startup["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in before))
    assert [r["request_id"] for r in before] == ["r-pre", "r0"]  # the rows mean this


def test_a_result_starting_before_any_gateway_call_moves_the_startup_boundary_earlier() -> None:
    early = [{**results()[0], "event_time": at(1.5), "duration_ms": 1000}]  # started at 0.5 s: before r0
    startup = costs.startup_overhead(REQUESTS, early, calls())
    assert startup["requests"] == 1 and startup["input_tokens"] == by_id("r-pre")["input_tokens"]


def snapshot(upstream: str, snapshot_id: str, second: float, server_bytes: int) -> dict[str, Any]:
    return {"upstream": upstream, "snapshot_id": snapshot_id, "taken_at": at(second), "server_bytes": server_bytes,
            "tool_count": 3, "est_tokens": -(-server_bytes // costs.BYTES_PER_TOKEN)}


def test_a_connected_sessions_tool_list_context_costs_its_tokens_in_every_request_at_cache_read_price() -> None:
    lists = [snapshot("up", "s-up", 0, 4001), snapshot("idle", "s-idle", 0, 40)]
    rows = {r["upstream"]: r for r in costs.tool_list_context(lists, REQUESTS, {"up"}, connected=True)}
    for t in lists:
        row = rows[t["upstream"]]
        assert row["used_in_session"] == (t["upstream"] == "up")
        assert (row["snapshot_id"], row["taken_at"]) == (t["snapshot_id"], t["taken_at"])
        assert row["est_session_tokens"] == t["est_tokens"] * len(REQUESTS)
        assert row["est_session_cost_usd"] == pytest.approx(t["est_tokens"] * len(REQUESTS) * PRICE
                                                            * costs.CACHE_READ_RATIO / 1e6)


def test_a_session_not_known_to_be_connected_gets_no_tool_list_cost_and_says_why() -> None:
    """Unknown is null, not 0: the gateway's tool lists may never have been in that session's context."""
    lists = [snapshot("up", "s-up", 0, 4001)]
    (row,) = costs.tool_list_context(lists, REQUESTS, set(), connected=False)
    assert (row["est_tokens"], row["est_session_tokens"], row["est_session_cost_usd"]) == (1001, None, None)
    attribution = costs.tool_list_attribution(None, results())
    assert attribution == {"connected_by": None, "tools_deferred": False, "note": costs.NOT_CONNECTED}


def test_the_snapshot_in_effect_is_the_latest_by_the_last_request_else_the_first_after_the_start() -> None:
    snaps = [snapshot("a", "a-old", 0, 100), snapshot("a", "a-mid", 5, 200), snapshot("a", "a-new", 20, 300),
             snapshot("b", "b-late", 30, 400), snapshot("b", "b-later", 40, 500)]
    chosen = {s["upstream"]: s["snapshot_id"] for s in costs.tool_lists_in_effect(snaps, at(2), at(8))}
    assert chosen == {"a": "a-mid", "b": "b-late"}
    assert [s["snapshot_id"] for s in costs.tool_lists_in_effect(snaps, at(2), at(5))] == ["a-mid", "b-late"]
    assert [s["snapshot_id"] for s in costs.tool_lists_in_effect(snaps, at(50), at(60))] == ["a-new", "b-later"]


def test_a_session_is_connected_by_a_bound_or_exactly_tied_mcp_session_or_by_telemetry_naming_the_gateway() -> None:
    exact, window = {"tie": "tool_use_id"}, {"tie": "telemetry_window"}
    named = [*REQUESTS, *results()]  # their MCP rows name "tollgate"
    assert costs.connected_by([], ["mcp-1"], [], ()) == costs.BY_MCP_SESSION
    assert costs.connected_by([window, exact], [], [], ()) == costs.BY_MCP_SESSION
    assert costs.connected_by([window], [], named, ("tollgate",)) == costs.BY_TELEMETRY
    assert costs.connected_by([window], [], named, ("other",)) is None
    assert costs.connected_by([window], [], named, ()) is None


def test_a_session_that_loaded_deferred_tools_says_its_tool_list_figure_is_an_upper_bound() -> None:
    search = {**results()[0], "tool_use_id": "toolu_s", "tool_name": costs.TOOL_SEARCH, "mcp_server_name": "",
              "mcp_tool_name": ""}
    assert costs.tool_list_attribution(costs.BY_MCP_SESSION, [search, *results()]) == {
        "connected_by": costs.BY_MCP_SESSION, "tools_deferred": True, "note": costs.DEFERRED}
    assert costs.tool_list_attribution(costs.BY_TELEMETRY, results())["note"] == costs.UPPER_BOUND
