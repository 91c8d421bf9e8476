"""Budget arithmetic with an injected clock, truncation of results, and the policy's texts and records."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.budget_store import SpendLoader, load_spend
from gateway.budgets import Budgets, Spend, day_bounds
from gateway.config import BudgetConfig, Config, UpstreamConfig
from gateway.enforcement import SPEND_UNKNOWN, BudgetPolicy, denial_text, unknown_tools_warning
from gateway.records import CallRecord, ToolListSnapshot
from gateway.truncation import META_KEY, cut_text, json_size, truncate

NY = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t

    def set(self, at: dt.datetime) -> None:
        self.t = at.timestamp()


def local(zone: ZoneInfo, *parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=zone)  # type: ignore[misc]


def budgets(clock: Clock, **limits: Any) -> Budgets:
    return Budgets({"up": BudgetConfig(**limits)}, clock)


def spend_calls(b: Budgets, n: int, tool: str = "t", session: str = "s1", request_bytes: int = 10,
                result: Spend | None = None) -> list[bool]:
    admitted = []
    for _ in range(n):
        admission = b.admit("up", tool, session, request_bytes)
        admitted.append(admission.denial is None)
        if admission.reservation is not None:
            b.settle(admission.reservation, result or Spend(calls=1, bytes=request_bytes), b.now())
    return admitted


# ----- windows ---------------------------------------------------------------------------------------


def test_session_calls_deny_after_the_limit_and_other_sessions_are_separate() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), session_calls=3)
    assert spend_calls(b, 4) == [True, True, True, False]
    denial = b.admit("up", "t", "s1", 10).denial
    assert denial is not None and (denial.limit, denial.used, denial.allowed, denial.window) == (
        "session_calls", 3, 3, "session")
    assert spend_calls(b, 1, session="s2") == [True]
    b.forget_session("s1")
    assert spend_calls(b, 1, session="s1") == [True]


def test_twenty_concurrent_admissions_against_five_calls_admit_exactly_five() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), day_calls=5)
    admissions = [b.admit("up", "t", f"s{i}", 10) for i in range(20)]  # none settled yet: all in flight
    assert sum(a.reservation is not None for a in admissions) == 5
    for a in admissions:
        if a.reservation is not None:
            b.settle(a.reservation, Spend(calls=1), b.now())
    assert b.day_spend("up")[0].calls == 5
    assert b.admit("up", "t", "s0", 10).denial is not None


def test_a_settled_denied_call_releases_its_reservation() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), day_calls=1)
    first = b.admit("up", "t", "s", 10)
    assert first.reservation is not None
    assert b.admit("up", "t", "s", 10).denial is not None
    b.settle(first.reservation, Spend(denied=1), b.now())  # e.g. refused on the result side
    assert b.admit("up", "t", "s", 10).denial is None


def test_day_bytes_reserve_the_request_and_settle_request_plus_result() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), day_bytes=1000)
    assert spend_calls(b, 1, request_bytes=100, result=Spend(calls=1, bytes=700)) == [True]
    assert b.admit("up", "t", "s", 301).denial is not None  # 700 + 301 > 1000
    assert b.admit("up", "t", "s", 300).denial is None


@pytest.mark.parametrize("action", ["truncate", "deny"])
def test_a_bounded_result_is_held_at_admission_so_concurrent_calls_pass_a_byte_window_by_one_result_at_most(
    action: str
) -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), session_bytes=5000, max_result_bytes=1000,
                action=action)
    admissions = [b.admit("up", "t", "s", 100) for _ in range(20)]  # all in flight together
    held = [a.reservation for a in admissions if a.reservation is not None]
    # each holds 100 request + 1,000 result + 64 envelope bytes: the 5th sees 4 x 1,164 + 100 = 4,756 <= 5,000
    assert len(held) == 5 and held[0].spend == Spend(calls=1, bytes=1164, tokens=250)
    assert [a.denial.used for a in admissions[5:7] if a.denial] == [5820, 5820]
    for reservation in held:  # each delivers its whole bound
        b.settle(reservation, Spend(calls=1, bytes=1164, tokens=250), b.now())
    assert b.session_spends("up")["s"].bytes == 5820 <= 5000 + 1164  # past the limit by one result at most


def test_an_unbounded_result_holds_nothing_so_calls_in_flight_together_may_each_overshoot() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), session_bytes=5000, session_tokens=100,
                max_result_bytes=1000, action="warn")
    admissions = [b.admit("up", "t", "s", 100) for _ in range(20)]
    assert all(a.reservation is not None and a.reservation.spend == Spend(calls=1, bytes=100) for a in admissions)


def test_tokens_deny_once_the_estimate_reaches_the_limit() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), session_tokens=500)
    assert spend_calls(b, 2, result=Spend(calls=1, tokens=250)) == [True, True]
    denial = b.admit("up", "t", "s1", 10).denial
    assert denial is not None and denial.limit == "session_tokens" and denial.used == 500


def test_max_request_bytes_deny_and_warn() -> None:
    clock = Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    assert budgets(clock, max_request_bytes=100).admit("up", "t", "s", 101).denial is not None
    assert budgets(clock, max_request_bytes=100).admit("up", "t", "s", 100).denial is None
    warned = budgets(clock, max_request_bytes=100, action="warn").admit("up", "t", "s", 101)
    assert warned.reservation is not None and [d.action for d in warned.decisions] == ["warn"]


def test_result_limits_map_to_truncate_deny_and_warn() -> None:
    clock = Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    assert budgets(clock, max_result_bytes=100).check_result("up", "t", 100) is None
    for action in ("truncate", "deny", "warn"):
        decision = budgets(clock, max_result_bytes=100, action=action).check_result("up", "t", 101)
        assert decision is not None and decision.action == action and decision.used == 101


def test_per_limit_actions_and_a_block_wide_truncate_denies_window_limits() -> None:
    clock = Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    b = budgets(clock, max_result_bytes=100, session_calls=1, action="truncate", actions={"session_calls": "warn"})
    assert spend_calls(b, 2) == [True, True]
    b = budgets(clock, max_result_bytes=100, session_calls=1, action="truncate")
    assert spend_calls(b, 2) == [True, False]


def test_tool_overrides_count_their_own_calls_and_inherited_limits_count_the_upstream() -> None:
    clock = Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    upstream = BudgetConfig(day_calls=3)
    upstream = replace(upstream, tools={"search": replace(upstream, day_calls=1), "get": upstream})
    b = Budgets({"up": upstream}, clock)
    assert spend_calls(b, 2, tool="search") == [True, False]
    assert spend_calls(b, 3, tool="get") == [True, True, False]  # 1 search + 2 get = the upstream's 3
    assert b.day_spend("up")[0].calls == 3 and b.day_spend("up", "search")[0].calls == 1


def test_warn_admits_and_reports_each_limit_passed() -> None:
    b = budgets(Clock(dt.datetime(2025, 3, 1, tzinfo=dt.UTC)), day_calls=1, session_calls=1, action="warn")
    spend_calls(b, 1)
    admission = b.admit("up", "t", "s1", 10)
    assert admission.reservation is not None
    assert sorted(d.limit for d in admission.decisions) == ["day_calls", "session_calls"]


# ----- the day boundary ------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", [NY, KOLKATA])
def test_day_spend_resets_at_local_midnight(zone: ZoneInfo) -> None:
    clock = Clock(local(zone, 2025, 3, 1, 23, 59, 59))
    b = Budgets({"up": BudgetConfig(day_calls=2, timezone=str(zone))}, clock)
    assert spend_calls(b, 3) == [True, True, False]
    denial = b.admit("up", "t", "s", 10).denial
    assert denial is not None and denial.reset_at == local(zone, 2025, 3, 2).timestamp()
    clock.set(local(zone, 2025, 3, 2, 0, 0, 0))
    assert spend_calls(b, 3) == [True, True, False]
    assert b.day_spend("up")[0].calls == 2


@pytest.mark.parametrize("zone", [NY, KOLKATA])
def test_spend_from_the_previous_local_day_does_not_count_even_when_the_utc_date_is_the_same(zone: ZoneInfo) -> None:
    clock = Clock(local(zone, 2025, 6, 10, 23, 30))
    b = Budgets({"up": BudgetConfig(day_calls=1, timezone=str(zone))}, clock)
    b.record("up", "t", "s", clock(), Spend(calls=1))
    assert b.admit("up", "t", "s", 1).denial is not None
    clock.set(local(zone, 2025, 6, 11, 0, 30))
    assert b.admit("up", "t", "s", 1).denial is None


def test_day_bounds_in_non_utc_zones_and_across_a_dst_change() -> None:
    start, end = day_bounds(local(KOLKATA, 2025, 1, 1, 0, 0, 1).timestamp(), "Asia/Kolkata")
    assert dt.datetime.fromtimestamp(start, dt.UTC) == dt.datetime(2024, 12, 31, 18, 30, tzinfo=dt.UTC)
    assert end - start == 86400
    start, end = day_bounds(local(NY, 2025, 3, 9, 12).timestamp(), "America/New_York")  # spring forward
    assert end - start == 23 * 3600
    assert dt.datetime.fromtimestamp(end, NY) == local(NY, 2025, 3, 10)


# ----- truncation ------------------------------------------------------------------------------------


def test_cut_text_never_splits_a_multibyte_character() -> None:
    text = "é—🙂漢" * 50
    for room in range(0, 120):
        cut = cut_text(text, room)
        assert json_size(cut) <= room or cut == ""
        assert text.startswith(cut)
        cut.encode("utf-8")  # valid


def test_truncate_keeps_text_within_the_limit_and_marks_it() -> None:
    result = {"content": [{"type": "text", "text": "é—🙂漢" * 1000}]}
    original = json_size(result)
    cut = truncate(result, 1000, original, "[cut from {delivered}{dropped}]", key="content")
    text = cut.result["content"][0]["text"]
    assert len(text.encode()) <= 1000 and ("é—🙂漢" * 1000).startswith(text)
    assert cut.delivered_bytes <= 1000
    assert cut.result["content"][-1]["text"] == f"[cut from {cut.delivered_bytes}]"
    assert cut.result["_meta"][META_KEY] == {"original_bytes": original, "delivered_bytes": cut.delivered_bytes,
                                             "limit": 1000, "dropped": []}


MARKER = ("[Tollgate: result truncated from 9999999 to {delivered} bytes by the budget of upstream 'docs' "
          "(max_result_bytes 200000){dropped}. Ask for a narrower result to see the rest.]")


@pytest.mark.parametrize("limit", [600, 2_000, 200_000])
def test_a_truncated_result_with_its_marker_and_meta_fits_the_limit(limit: int) -> None:
    image = {"type": "image", "data": "QUJD" * 100_000, "mimeType": "image/png"}
    result = {"content": [{"type": "text", "text": "é—🙂漢" * 60_000}, image, {"type": "text", "text": "tail"}],
              "structuredContent": {"rows": list(range(50_000))}}
    cut = truncate(result, limit, json_size(result), MARKER, key="content")
    assert json_size(cut.result) <= limit
    assert cut.result["content"][0]["text"]  # the cut text is kept, not all dropped to make room
    assert cut.result["_meta"][META_KEY]["limit"] == limit


def test_truncate_drops_an_image_that_does_not_fit_but_keeps_later_text_that_does() -> None:
    image = {"type": "image", "data": "QUJD" * 500, "mimeType": "image/png"}
    result = {"content": [{"type": "text", "text": "caption"}, image, {"type": "text", "text": "after"}],
              "structuredContent": {"x": "y" * 5000}, "_meta": {"keep": 1}}
    cut = truncate(result, 300, json_size(result), "{dropped}", key="content")
    texts = [b.get("text") for b in cut.result["content"]]
    assert texts[:2] == ["caption", "after"] and all(b["type"] == "text" for b in cut.result["content"])
    assert "structuredContent" not in cut.result
    assert cut.dropped == ("1 image block(s)", "structuredContent")
    assert cut.result["_meta"]["keep"] == 1


def test_truncate_resource_contents_puts_the_marker_in_the_text() -> None:
    result = {"contents": [{"uri": "file:///a", "mimeType": "text/plain", "text": "z" * 5000}]}
    cut = truncate(result, 500, json_size(result), "[MARK]", key="contents")
    (item,) = cut.result["contents"]
    assert item["uri"] == "file:///a" and item["text"].endswith("\n[MARK]") and len(item["text"]) < 520


def test_truncate_prompt_messages_cuts_inside_a_message_drops_an_image_message_and_keeps_the_shape() -> None:
    image = {"type": "image", "data": "QUJD" * 500, "mimeType": "image/png"}
    embedded = {"type": "resource", "resource": {"uri": "file:///a", "text": "é—🙂漢" * 500}}
    result = {"description": "d", "messages": [
        {"role": "user", "content": {"type": "text", "text": "intro"}}, {"role": "user", "content": image},
        {"role": "assistant", "content": embedded}, {"role": "user", "content": {"type": "text", "text": "tail"}}]}
    cut = truncate(result, 800, json_size(result), "[cut{dropped}]", key="messages")
    assert set(cut.result) == {"description", "messages", "_meta"}
    intro, kept, marker = cut.result["messages"]
    assert intro == result["messages"][0]
    assert kept["role"] == "assistant" and kept["content"]["resource"]["uri"] == "file:///a"
    assert ("é—🙂漢" * 500).startswith(kept["content"]["resource"]["text"]) and kept["content"]["resource"]["text"]
    assert marker == {"role": "assistant", "content": {"type": "text", "text": "[cut; dropped 1 image block(s), "
                                                                              "1 text block(s)]"}}
    assert json_size(cut.result) <= 800 and cut.dropped == ("1 image block(s)", "1 text block(s)")


# ----- the policy --------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def submit(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.rows += [(table, row) for row in rows]


class Counts:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.seen.append({"name": name, **labels})


def policy_for(budget: BudgetConfig, clock: Clock) -> tuple[BudgetPolicy, Sink, Counts]:
    sink, counts = Sink(), Counts()
    config = Config(upstreams=(UpstreamConfig(name="docs", type="stdio", command="x", budget=budget),))
    return BudgetPolicy(config, sink=sink, metrics=counts, now=clock, gateway_id="g"), sink, counts


def call(tool: str = "search", request_bytes: int = 50, at: float | None = None) -> CallRecord:
    record = CallRecord(method="tools/call", upstream="docs", tool=tool, exposed_name=f"docs__{tool}",
                        mcp_session_id="sess-1", req_bytes_client=request_bytes)
    record.started_at = at if at is not None else record.started_at
    return record


async def test_a_day_denial_names_server_limit_usage_and_reset_time_and_is_recorded() -> None:
    clock = Clock(local(NY, 2025, 3, 1, 22, 0))
    policy, sink, counts = policy_for(BudgetConfig(day_calls=1, timezone="America/New_York"), clock)
    first = call(at=clock())
    assert await policy.admit(first, {}) is None
    first.resp_bytes_client = 100
    policy.call_finished(first)
    second = call()
    text = await policy.admit(second, {})
    assert text is not None
    assert "'docs'" in text and "day_calls" in text and "used 1 of 1" in text
    assert "2025-03-02T00:00:00-05:00 (America/New_York), in 120 min" in text
    assert "Instead:" in text
    assert (second.budget_action, second.budget_limit) == ("deny", "day_calls")
    (table, row), = sink.rows
    assert table == "budget_events" and row["limit_name"] == "day_calls" and row["window"] == "day"
    assert row["reset_at"] == int(local(NY, 2025, 3, 2).timestamp() * 1000)
    assert counts.seen == [{"name": "tollgate_budget_decisions_total", "upstream": "docs", "action": "deny",
                            "limit": "day_calls"}]


async def test_result_side_truncate_finishes_the_call_as_truncated_with_both_sizes() -> None:
    policy, sink, _ = policy_for(BudgetConfig(max_result_bytes=200, action="truncate"), Clock(dt.datetime.now()))
    record = call()
    assert await policy.admit(record, {}) is None
    result = {"content": [{"type": "text", "text": "x" * 5000}]}
    delivered = policy.settle(record, result, 5100)
    assert record.status == "truncated" and record.budget_action == "truncate"
    assert record.text_bytes <= 200 + 300  # kept text plus the marker
    assert delivered["_meta"][META_KEY]["original_bytes"] == json_size(result)
    assert "[Tollgate: result truncated from" in delivered["content"][-1]["text"]
    assert sink.rows[0][1]["action"] == "truncate"


async def test_result_side_deny_refuses_the_result_with_a_text_naming_its_size() -> None:
    policy, _, _ = policy_for(BudgetConfig(max_result_bytes=200), Clock(dt.datetime.now()))
    record = call()
    await policy.admit(record, {})
    text = policy.settle(record, {"content": [{"type": "text", "text": "x" * 5000}]}, 5100)
    assert isinstance(text, str) and "is 5,0" in text and "over its max_result_bytes limit of 200 bytes" in text
    assert (record.budget_action, record.budget_limit) == ("deny", "max_result_bytes")
    record.finish("denied", text)  # as the relay does with a refusal
    policy.call_finished(record)
    assert policy.budgets.day_spend("docs")[0] == Spend(denied=1)


def test_denial_text_for_a_session_limit_says_when_it_resets() -> None:
    policy_clock = Clock(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    b = budgets(policy_clock, session_calls=1)
    spend_calls(b, 1)
    denial = b.admit("up", "t", "s1", 1).denial
    assert denial is not None
    assert "resets when this client session ends" in denial_text(denial, policy_clock())


async def test_apply_config_swaps_rules_and_keeps_spend() -> None:
    clock = Clock(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    policy, _, _ = policy_for(BudgetConfig(day_calls=1), clock)
    first = call(at=clock())
    await policy.admit(first, {})
    policy.call_finished(first)
    assert await policy.admit(call(), {}) is not None
    new = Config(upstreams=(UpstreamConfig(name="docs", type="stdio", command="x",
                                           budget=BudgetConfig(day_calls=2)),))
    assert policy.apply_config(new) == ["docs: day_calls 1 (deny) -> day_calls 2 (deny)"]
    assert await policy.admit(call(), {}) is None


def test_the_unknown_tools_warning_names_them_and_lists_the_real_tools_closest_first_within_a_bound() -> None:
    budget = BudgetConfig(tools={"echo": BudgetConfig(), "ech": BudgetConfig(), "no_such_tool": BudgetConfig()})
    assert unknown_tools_warning("b", budget, ["blocks", "echo", "picture"]) == (
        "upstream 'b': the budget has limits for tools it does not list, which never apply: ech, no_such_tool; "
        "its tools, closest first: echo, blocks, picture")
    many = [f"tool_{i:02}" for i in range(25)]
    assert unknown_tools_warning("b", budget, many, shown=3) == (
        "upstream 'b': the budget has limits for tools it does not list, which never apply: ech, echo, "
        "no_such_tool; its tools, closest first: tool_00, tool_01, tool_02, ... (22 more)")
    assert unknown_tools_warning("b", BudgetConfig(tools={"echo": BudgetConfig()}), ["echo"]) is None
    assert unknown_tools_warning("b", None, ["echo"]) is None


def test_the_policy_warns_of_unknown_budget_tools_once_per_upstream_until_the_config_is_applied_again(
    caplog: pytest.LogCaptureFixture
) -> None:
    budget = BudgetConfig(tools={"serch": BudgetConfig(day_calls=1)})
    policy, _, _ = policy_for(budget, Clock(dt.datetime(2025, 1, 1, tzinfo=dt.UTC)))
    listed = ToolListSnapshot("docs", 0.0, [("search", "docs__search", 10), ("fetch", "docs__fetch", 10)])
    text = ("upstream 'docs': the budget has limits for tools it does not list, which never apply: serch; "
            "its tools, closest first: search, fetch")
    with caplog.at_level(logging.WARNING, logger="tollgate.budgets"):
        policy.tool_list_changed(listed)
        policy.tool_list_changed(listed)  # a refreshed list: already told
        assert [r.getMessage() for r in caplog.records] == [text]
        policy.apply_config(policy.config)
        assert [r.getMessage() for r in caplog.records] == [text, text]
        fixed = UpstreamConfig(name="docs", type="stdio", command="x",
                               budget=BudgetConfig(tools={"search": BudgetConfig(day_calls=1)}))
        policy.apply_config(Config(upstreams=(fixed,)))
        policy.tool_list_changed(listed)
    assert [r.getMessage() for r in caplog.records] == [text, text]


# ----- spend from the store ----------------------------------------------------------------------------


class BrokenStore:
    database = "tollgate"

    def __init__(self) -> None:
        self.attempts = 0
        self.answer: list[dict[str, Any]] | None = None
        self.asked = asyncio.Event()

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.attempts += 1
        self.asked.set()
        if self.answer is None:
            raise ConnectionError("store down")
        return self.answer


async def test_fail_closed_refuses_calls_until_the_store_answers() -> None:
    clock = Clock(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))
    policy, sink, counts = policy_for(BudgetConfig(day_calls=10, fail_open=False), clock)
    store = BrokenStore()
    loader = SpendLoader(store, policy.budgets, retry_seconds=0.01)
    await loader.start()
    try:
        record = call()
        text = await policy.admit(record, {})
        assert text is not None and "fail closed" in text and record.budget_limit == SPEND_UNKNOWN
        (table, row), = sink.rows  # the refusal is a decision like any other: recorded and counted
        assert table == "budget_events"
        assert {k: row[k] for k in ("upstream", "tool", "mcp_session_id", "limit_name", "action", "used", "limit",
                                    "window", "reset_at", "gateway_id")} == {
            "upstream": "docs", "tool": "search", "mcp_session_id": "sess-1", "limit_name": SPEND_UNKNOWN,
            "action": "deny", "used": 0.0, "limit": 0.0, "window": "", "reset_at": None, "gateway_id": "g"}
        assert counts.seen == [{"name": "tollgate_budget_decisions_total", "upstream": "docs", "action": "deny",
                                "limit": SPEND_UNKNOWN}]
        store.answer = [{"upstream": "docs", "method": "tools/call", "tool": "search", "bucket": clock() - 60,
                         "calls": 4, "bytes": 10, "tokens": 1, "denied": 0, "truncated": 0, "warned": 0}]
        await asyncio.wait_for(loader.loaded.wait(), 5)
        assert await policy.admit(call(), {}) is None
        assert policy.budgets.day_spend("docs")[0].calls == 4 + 1  # from the store, plus the one in flight
    finally:
        await loader.close()


async def test_fail_open_serves_from_zero_when_the_store_is_down() -> None:
    policy, _, _ = policy_for(BudgetConfig(day_calls=10), Clock(dt.datetime(2025, 1, 1, tzinfo=dt.UTC)))
    loader = SpendLoader(BrokenStore(), policy.budgets, retry_seconds=60)
    await loader.start()
    try:
        assert policy.budgets.unknown_spend == {"docs"}
        assert await policy.admit(call(), {}) is None
    finally:
        await loader.close()


async def test_load_spend_charges_days_and_no_session() -> None:
    clock = Clock(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))
    store = BrokenStore()
    store.answer = [{"upstream": "docs", "method": "tools/call", "tool": "a", "bucket": clock() - 86400,
                     "calls": 2, "bytes": 5, "tokens": 1, "denied": 1, "truncated": 0, "warned": 0},
                    {"upstream": "docs", "method": "tools/call", "tool": "a", "bucket": clock() - 900,
                     "calls": 3, "bytes": 7, "tokens": 2, "denied": 0, "truncated": 1, "warned": 0}]
    b = Budgets({"docs": BudgetConfig()}, clock)
    assert await load_spend(store, b) == 5
    assert b.day_spend("docs")[0] == Spend(calls=3, bytes=7, tokens=2, truncated=1)
    assert b.day_spend("docs", "a")[0] == Spend(calls=3, bytes=7, tokens=2, truncated=1)
    assert b.session_spends("docs") == {} and b.session_spends("docs", "a") == {}  # those sessions ended
