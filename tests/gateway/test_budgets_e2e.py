"""Budgets end to end: the real `mcp` client, Tollgate on port 0, real upstream processes and real chDB.

Every limit and action, C09 (huge results) and C12 (batches) with budgets on, spend across a restart,
reload without dropping sessions, and what `/api/budgets` and `tollgate report budgets` show.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp import ClientSession as Http
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, GetPromptResult, ReadResourceResult, TextContent, TextResourceContents

import gateway.records
from gateway import jsonrpc
from gateway.budget_cli import budgets_report
from gateway.budget_report import render_budgets
from gateway.budgets import ENVELOPE_BYTES
from gateway.cli import open_service
from gateway.config import BudgetConfig, Config, StoreConfig, UpstreamConfig, load_config
from gateway.relay import INTERNAL_ERROR_TEXT
from gateway.truncation import META_KEY
from tests.fixtures.servers.budget_server import MULTIBYTE, RESOURCE_URI
from tests.gateway.conftest import ROOT, gateway_config, mcp_session
from tests.gateway.service import Running, running_service, serve_app
from tests.gateway.test_downstream import open_session, post

BUDGET_SERVER = ROOT / "tests" / "fixtures" / "servers" / "budget_server.py"
MIB = 1024 * 1024


def budget_upstream(name: str, budget: BudgetConfig | None = None) -> UpstreamConfig:
    return UpstreamConfig(name=name, type="stdio", command=sys.executable,
                          args=(str(BUDGET_SERVER), "--name", name), budget=budget)


def texts(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


async def budget_view(svc: Running, upstream: str) -> dict[str, Any]:
    async with Http() as http, http.get(svc.base_url + "/api/budgets") as response:
        assert response.status == 200
        body = await response.json()
    return next(u for u in body["upstreams"] if u["upstream"] == upstream)


async def call_rows(svc: Running, upstream: str) -> list[dict[str, Any]]:
    return await svc.query("SELECT * FROM calls FINAL WHERE upstream = {u:String} ORDER BY started_at",
                           {"u": upstream})


async def test_twenty_concurrent_calls_against_five_session_calls_let_exactly_five_through(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(session_calls=5)))
    async with running_service(config, tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            results = await asyncio.gather(*(client.call_tool("b__echo", {"text": f"n{i}"}) for i in range(20)))
        allowed = [r for r in results if not r.is_error]
        denied = [r for r in results if r.is_error]
        assert len(allowed) == 5 and len(denied) == 15
        text = texts(denied[0])[0]
        assert "'b'" in text and "session_calls" in text and "used 5 of 5 calls" in text
        assert "resets when this client session ends" in text
        async with mcp_session(svc.mcp_url) as fresh:  # a new session has its own budget
            served = await fresh.call_tool("b__served_calls", {})
        assert texts(served) == ["6"]  # the 5 admitted calls and this one: no denied call reached it
        rows = await call_rows(svc, "b")
        statuses = sorted(r["status"] for r in rows)
        assert statuses == ["denied"] * 15 + ["ok"] * 6
        for row in (r for r in rows if r["status"] == "denied"):
            assert (row["budget_action"], row["budget_limit"]) == ("deny", "session_calls")
            assert row["req_bytes_client"] > 0 and row["resp_bytes_client"] > 0 and row["req_bytes_upstream"] == 0
        events = await svc.query("SELECT * FROM budget_events FINAL WHERE upstream = 'b'")
        assert len(events) == 15 and {e["limit_name"] for e in events} == {"session_calls"}
        view = await budget_view(svc, "b")
        assert view["day"]["calls"] == 6 and view["day"]["denied"] == 15


async def test_max_request_bytes_denies_before_anything_reaches_the_upstream(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_request_bytes=500)))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        denied = await client.call_tool("b__echo", {"text": "x" * 1000})
        assert denied.is_error
        assert "max_request_bytes" in texts(denied)[0] and "smaller request" in texts(denied)[0]
        assert texts(await client.call_tool("b__echo", {"text": "short"})) == ["short"]
        assert texts(await client.call_tool("b__served_calls", {})) == ["2"]
        (row,) = [r for r in await call_rows(svc, "b") if r["status"] == "denied"]
        assert row["req_bytes_client"] > 1000 and row["req_bytes_upstream"] == 0 and row["resp_bytes_upstream"] == 0


async def test_truncation_of_multibyte_text_stays_valid_utf8_and_records_both_sizes(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_result_bytes=1000, action="truncate")))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        result = await client.call_tool("b__multibyte", {"repeat": 500})
        assert not result.is_error
        kept, marker = texts(result)
        assert len(kept.encode("utf-8")) <= 1000 and ("é—🙂漢" * 500).startswith(kept)
        assert marker.startswith("[Tollgate: result truncated from ") and "upstream 'b'" in marker
        meta = (result.meta or {})[META_KEY]
        assert meta["limit"] == 1000 and meta["original_bytes"] > 6000 and meta["delivered_bytes"] <= 1000
        (row,) = await call_rows(svc, "b")
        assert (row["status"], row["budget_action"], row["budget_limit"]) == (
            "truncated", "truncate", "max_result_bytes")
        assert row["resp_bytes_upstream"] > 6000 > row["resp_bytes_client"]
        assert row["text_bytes"] <= 1000 + len(marker.encode())


async def test_truncation_drops_image_blocks_whole_with_a_note(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_result_bytes=1000, action="truncate")))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        result = await client.call_tool("b__picture", {"size": 3000})
        assert [block.type for block in result.content] == ["text", "text", "text"]
        assert texts(result)[:2] == ["caption", "after the image"]
        assert "dropped 1 image block(s)" in texts(result)[2]
        (row,) = await call_rows(svc, "b")
        assert row["image_bytes_encoded"] == 0 and row["status"] == "truncated"


async def test_c09_huge_results_pass_truncate_or_deny_as_configured(tmp_path: Path) -> None:
    config = gateway_config(
        budget_upstream("pass"),
        budget_upstream("cut", BudgetConfig(max_result_bytes=MIB, action="truncate")),
        budget_upstream("deny", BudgetConfig(max_result_bytes=MIB)),
        max_body_bytes=64 * MIB,
    )
    one_block = {"count": 1, "size": 5 * MIB}
    twenty_blocks = {"count": 20, "size": 300 * 1024}
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        whole = await client.call_tool("pass__blocks", one_block)
        assert len(texts(whole)[0]) == 5 * MIB
        for args in (one_block, twenty_blocks):
            cut = await client.call_tool("cut__blocks", args)
            *kept, marker = texts(cut)
            assert sum(len(t) for t in kept) <= MIB and "truncated from" in marker
            assert (cut.meta or {})[META_KEY]["original_bytes"] >= 5 * MIB
            if args is twenty_blocks:
                assert [len(t) for t in kept[:3]] == [300 * 1024] * 3 and len(kept) == 4
            refused = await client.call_tool("deny__blocks", args)
            assert refused.is_error and "max_result_bytes" in texts(refused)[0]
            size_named = r"is [56],\d{3},\d{3} bytes, over its max_result_bytes limit of 1,048,576 bytes"
            assert re.search(size_named, texts(refused)[0])
        rows = {r["upstream"]: r for r in await svc.query("SELECT * FROM calls FINAL ORDER BY started_at")}
        assert rows["pass"]["resp_bytes_client"] > 5 * MIB and rows["pass"]["status"] == "ok"
        assert rows["cut"]["resp_bytes_upstream"] > 5 * MIB > MIB + 4096 > rows["cut"]["resp_bytes_client"]
        assert rows["deny"]["status"] == "denied" and rows["deny"]["resp_bytes_upstream"] > 5 * MIB
        assert rows["deny"]["resp_bytes_client"] < 4096
        cut_day = (await budget_view(svc, "cut"))["day"]
        assert cut_day["truncated"] == 2 and cut_day["bytes"] < 2 * MIB + 8192  # charged what was delivered
        deny_day = (await budget_view(svc, "deny"))["day"]
        assert (deny_day["calls"], deny_day["bytes"], deny_day["denied"]) == (0, 0, 2)


async def test_warn_lets_calls_through_and_records_the_decision(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(day_calls=1, action="warn")))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        for text in ("one", "two"):
            assert texts(await client.call_tool("b__echo", {"text": text})) == [text]
        rows = await call_rows(svc, "b")
        assert [(r["status"], r["budget_action"]) for r in rows] == [("ok", ""), ("ok", "warn")]
        (event,) = await svc.query("SELECT * FROM budget_events FINAL")
        assert (event["action"], event["limit_name"], event["used"], event["limit"]) == ("warn", "day_calls", 1, 1)
        assert (await budget_view(svc, "b"))["day"]["warned"] == 1


@pytest.mark.parametrize(("limit", "allowed", "measure"), [
    ("session_bytes", 1000, "bytes"), ("day_bytes", 1000, "bytes"),
    ("session_tokens", 100, "tokens"), ("day_tokens", 100, "tokens"),
])
async def test_warn_on_a_byte_or_token_window_passes_the_call_whole_and_records_a_warn_event(
    tmp_path: Path, limit: str, allowed: int, measure: str
) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(**{limit: allowed}, action="warn")))
    whole = MULTIBYTE * 200  # 2,400 bytes of text, 600 estimated tokens: past either limit after one call
    async with running_service(config, tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            first = await client.call_tool("b__multibyte", {"repeat": 200})
            if limit.startswith("session_"):
                second = await client.call_tool("b__multibyte", {"repeat": 200})
        if limit.startswith("day_"):  # the day's spend warns a session that has spent nothing itself
            async with mcp_session(svc.mcp_url) as other:
                second = await other.call_tool("b__multibyte", {"repeat": 200})
        rows = await call_rows(svc, "b")
        events = await svc.query("SELECT * FROM budget_events FINAL")
        view = await budget_view(svc, "b")
    assert texts(first) == texts(second) == [whole] and not second.is_error  # through, nothing cut
    assert [(r["status"], r["budget_action"], r["budget_limit"]) for r in rows] == [
        ("ok", "", ""), ("ok", "warn", limit)]
    spent = {"bytes": rows[0]["req_bytes_client"] + rows[0]["resp_bytes_client"], "tokens": rows[0]["est_tokens"]}
    assert spent[measure] > allowed and rows[1]["resp_bytes_client"] == rows[1]["resp_bytes_upstream"]
    (event,) = events
    assert (event["action"], event["limit_name"], event["used"], event["limit"], event["window"]) == (
        "warn", limit, spent[measure], allowed, limit.split("_")[0])
    assert event["mcp_session_id"] == rows[1]["mcp_session_id"] and event["tool"] == "multibyte"
    assert (event["reset_at"] is None) == limit.startswith("session_")  # a day resets at midnight, a session never
    assert (view["day"]["calls"], view["day"]["warned"], view["day"]["denied"]) == (2, 1, 0)


async def test_a_per_limit_action_warns_on_its_limit_while_the_budget_still_denies_on_the_others(
    tmp_path: Path
) -> None:
    path = tmp_path / "tollgate.toml"
    path.write_text(f'[upstreams.b]\ncommand = {orjson.dumps(sys.executable).decode()}\n'
                    f'args = [{orjson.dumps(str(BUDGET_SERVER)).decode()}, "--name", "b"]\n'
                    '[upstreams.b.budget]\naction = "deny"\nday_calls = 1\nsession_calls = 2\n'
                    '[upstreams.b.budget.actions]\nday_calls = "warn"\n')
    async with running_service(load_config(path), tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            results = [await client.call_tool("b__echo", {"text": f"call {n}"}) for n in (1, 2, 3)]
        async with mcp_session(svc.mcp_url) as fresh:  # a session of its own: only the day's calls warn it
            served = texts(await fresh.call_tool("b__served_calls", {}))
        rows = await call_rows(svc, "b")
        events = await svc.query("SELECT * FROM budget_events FINAL ORDER BY at")
        view = await budget_view(svc, "b")
    assert [texts(r) for r in results[:2]] == [["call 1"], ["call 2"]]  # past day_calls: warned, through
    assert results[2].is_error and "session_calls" in texts(results[2])[0]  # the block's deny still applies
    assert served == ["3"]  # calls 1 and 2 and this one: the denied call never reached the upstream
    assert [(r["status"], r["budget_action"], r["budget_limit"]) for r in rows] == [
        ("ok", "", ""), ("ok", "warn", "day_calls"), ("denied", "deny", "session_calls"), ("ok", "warn", "day_calls")]
    assert [(e["action"], e["limit_name"], e["used"], e["limit"]) for e in events] == [
        ("warn", "day_calls", 1, 1), ("deny", "session_calls", 2, 2), ("warn", "day_calls", 2, 1)]
    assert view["limits"] == {"day_calls": {"allowed": 1, "action": "warn"},
                              "session_calls": {"allowed": 2, "action": "deny"}}


async def test_byte_and_token_limits_deny_once_spent(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("tokens", BudgetConfig(session_tokens=100)),
                            budget_upstream("bytes", BudgetConfig(day_bytes=2000)))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        assert not (await client.call_tool("tokens__multibyte", {"repeat": 200})).is_error  # ~600 tokens
        refused = await client.call_tool("tokens__multibyte", {"repeat": 1})
        assert refused.is_error and "session_tokens" in texts(refused)[0]
        assert not (await client.call_tool("bytes__echo", {"text": "x" * 1500})).is_error
        refused = await client.call_tool("bytes__echo", {"text": "y"})
        assert refused.is_error and "day_bytes" in texts(refused)[0] and "narrower queries" in texts(refused)[0]
        view = await budget_view(svc, "bytes")
        assert view["day"]["bytes"] > 2000 and view["usage"][0]["limit"] == "day_bytes"


async def test_c12_a_batch_is_refused_before_any_dispatch_or_spend(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(session_calls=5)))
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url, "2025-06-18")
        batch = [jsonrpc.request_body(i, "tools/call", {"name": "b__served_calls", "arguments": {}})
                 for i in range(50)]
        status, _, body = await post(http, svc.mcp_url, batch, session_id, **{"MCP-Protocol-Version": "2025-06-18"})
        assert status == 400 and body["error"]["code"] == jsonrpc.INVALID_REQUEST
        assert (await budget_view(svc, "b"))["day"]["calls"] == 0
        answers = []
        for i in range(6):
            _, _, answer = await post(http, svc.mcp_url, jsonrpc.request_body(100 + i, "tools/call", {
                "name": "b__served_calls", "arguments": {}}), session_id, **{"MCP-Protocol-Version": "2025-06-18"})
            answers.append(answer["result"]["content"][0]["text"])
        assert answers[:5] == ["1", "2", "3", "4", "5"]  # no call of the batch reached the upstream
        assert "session_calls" in answers[5]
        assert len(await call_rows(svc, "b")) == 6


@dataclass
class FrozenClock:
    """One instant, moved by the test: the budgets' clock and the call records' (started_at, ended_at)."""

    at: float

    def __call__(self) -> float:
        return self.at

    def local(self, day: dt.date, clock_time: str, zone: str) -> float:
        """Stop at `clock_time` (HH:MM:SS) of `day` in `zone`; returns the instant."""
        self.at = dt.datetime.combine(day, dt.time.fromisoformat(clock_time), tzinfo=ZoneInfo(zone)).timestamp()
        return self.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock(time.time())
    monkeypatch.setattr(gateway.records, "time", SimpleNamespace(time=frozen))  # CallRecord has no clock seam
    return frozen


async def test_a_restart_in_the_middle_of_the_day_keeps_the_spend(tmp_path: Path, clock: FrozenClock) -> None:
    zone = "Asia/Kolkata"
    today = dt.datetime.now(ZoneInfo(zone)).date()
    config = gateway_config(budget_upstream("b", BudgetConfig(day_calls=3, timezone=zone)))
    clock.local(today, "12:00:00", zone)
    async with running_service(config, tmp_path / "db", now=clock) as svc, mcp_session(svc.mcp_url) as client:
        for _ in range(2):
            assert not (await client.call_tool("b__echo", {"text": "before"})).is_error
    restart = clock.local(today, "12:00:01", zone)
    async with running_service(config, tmp_path / "db", now=clock) as svc, mcp_session(svc.mcp_url) as client:
        assert not (await client.call_tool("b__echo", {"text": "after"})).is_error
        refused = await client.call_tool("b__echo", {"text": "one too many"})
        assert refused.is_error
        text = texts(refused)[0]
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0), tzinfo=ZoneInfo(zone))
        assert "'b'" in text and "day_calls" in text and "used 3 of 3 calls" in text
        assert f"resets at {midnight.isoformat()} ({zone}), in 720 min." in text  # 11:59:59 left, rounded up
        view = await budget_view(svc, "b")
        assert view["day"]["reset_at"] == midnight.isoformat()
        assert view["day"]["resets_in_seconds"] == int(midnight.timestamp() - restart)
        assert (view["day"]["calls"], view["day"]["denied"]) == (3, 1)
        assert view["limits"] == {"day_calls": {"allowed": 3, "action": "deny"}} and view["timezone"] == zone
    # with no server answering, the report is rebuilt from the store (on the real clock: today's rows only
    # when the frozen day is the real one, so the CLI report test covers it on the real clock instead)


async def test_a_restart_rebuilds_the_days_spend_but_no_session_spend(tmp_path: Path) -> None:
    """Session windows are the client session's: a restart forgets every session (a client initializes anew), so
    no past session's spend comes back as a live one, in /api/budgets or in `report budgets` from the store;
    the day's spend does."""
    config = gateway_config(budget_upstream("b", BudgetConfig(session_calls=5, day_calls=10)))
    async with (running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as first,
                mcp_session(svc.mcp_url) as second):
        for client, calls in ((first, 3), (second, 1)):
            for n in range(calls):
                assert not (await client.call_tool("b__echo", {"text": f"{n}"})).is_error
        before = await budget_view(svc, "b")  # both sessions still open
    assert (before["sessions"]["count"], before["sessions"]["busiest"]["calls"], before["day"]["calls"]) == (2, 3, 4)

    def session_windows(view: dict[str, Any]) -> tuple[Any, ...]:
        return (view["day"]["calls"], view["sessions"]["count"], view["sessions"]["busiest"]["calls"],
                [(u["limit"], u["used"]) for u in view["usage"]])

    stored = replace(config, store=StoreConfig(dsn=f"chdb://{tmp_path / 'db'}"))
    (offline,) = (await budgets_report(stored))["upstreams"]
    assert session_windows(offline) == (4, 0, 0, [("session_calls", 0), ("day_calls", 4)])
    async with running_service(config, tmp_path / "db") as svc:
        assert session_windows(await budget_view(svc, "b")) == (4, 0, 0, [("session_calls", 0), ("day_calls", 4)])
        async with mcp_session(svc.mcp_url) as client:
            assert not (await client.call_tool("b__echo", {"text": "after"})).is_error
            assert session_windows(await budget_view(svc, "b")) == (
                5, 1, 1, [("session_calls", 1), ("day_calls", 5)])


async def test_spend_after_a_restart_equals_spend_before_it_with_calls_refused_before_routing(
    tmp_path: Path,
) -> None:
    """A call to an unknown tool leaves a protocol_error row with no upstream; live budgets charge it to no one,
    so the spend rebuilt from the store (by a restarted server and by `report budgets` without one) must not
    either: no upstream with a blank name, the same day spend per upstream and tool."""
    config = gateway_config(budget_upstream("b", BudgetConfig(day_calls=10)))

    def spend(snapshot: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(u["upstream"], u["day"]["calls"], u["day"]["bytes"], u["day"]["tokens"],
                 [(t["tool"], t["day"]) for t in u["tools"]]) for u in snapshot["upstreams"]]

    async def snapshot(svc: Running) -> dict[str, Any]:
        async with Http() as http, http.get(svc.base_url + "/api/budgets") as response:
            return dict(await response.json())

    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        assert not (await client.call_tool("b__echo", {"text": "routed"})).is_error
        for unknown in ("bogus", "nonexist__echo", "b__bogus"):
            with pytest.raises(MCPError):
                await client.call_tool(unknown, {})
        assert not (await client.call_tool("b__echo", {"text": "routed again"})).is_error
        live = spend(await snapshot(svc))
        unrouted = await svc.query("SELECT count() AS n FROM calls FINAL WHERE upstream = ''")
    assert unrouted == [{"n": 3}]  # the refused calls are stored, so the rebuild does read them
    assert [u[0] for u in live] == ["b"] and live[0][1] == 2
    async with running_service(config, tmp_path / "db") as svc:
        assert spend(await snapshot(svc)) == live
    stored = replace(config, store=StoreConfig(dsn=f"chdb://{tmp_path / 'db'}"))
    offline = await budgets_report(stored)
    assert spend(offline) == live
    assert "\n: " not in render_budgets(offline)


async def test_restarts_at_one_second_to_midnight_and_at_midnight_rebuild_the_right_day(
    tmp_path: Path, clock: FrozenClock
) -> None:
    zone = "Asia/Kolkata"
    day = dt.datetime.now(ZoneInfo(zone)).date() - dt.timedelta(days=1)
    config = gateway_config(budget_upstream("b", BudgetConfig(day_calls=3, timezone=zone)))
    clock.local(day, "23:59:50", zone)
    async with running_service(config, tmp_path / "db", now=clock) as svc, mcp_session(svc.mcp_url) as client:
        for _ in range(3):
            assert not (await client.call_tool("b__echo", {"text": "late"})).is_error
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=ZoneInfo(zone))

    clock.local(day, "23:59:59", zone)  # restart: the spend is rebuilt from the store, same local day
    async with running_service(config, tmp_path / "db", now=clock) as svc, mcp_session(svc.mcp_url) as client:
        refused = await client.call_tool("b__echo", {"text": "still today"})
        assert refused.is_error and "used 3 of 3 calls" in texts(refused)[0]
        assert f"resets at {next_midnight.isoformat()} ({zone}), in 1 min." in texts(refused)[0]
        view = await budget_view(svc, "b")
        assert (view["day"]["calls"], view["day"]["denied"], view["day"]["resets_in_seconds"]) == (3, 1, 1)
        assert view["day"]["reset_at"] == next_midnight.isoformat()

    clock.local(day + dt.timedelta(days=1), "00:00:00", zone)  # restart at midnight: a new day, from zero
    async with running_service(config, tmp_path / "db", now=clock) as svc, mcp_session(svc.mcp_url) as client:
        for _ in range(3):
            assert not (await client.call_tool("b__echo", {"text": "new day"})).is_error
        assert (await client.call_tool("b__echo", {"text": "over"})).is_error
        view = await budget_view(svc, "b")
        assert (view["day"]["calls"], view["day"]["denied"], view["day"]["resets_in_seconds"]) == (3, 1, 86400)
        following = dt.datetime.combine(day + dt.timedelta(days=2), dt.time(0), tzinfo=ZoneInfo(zone))
        assert view["day"]["reset_at"] == following.isoformat()


async def test_reload_swaps_budgets_without_dropping_sessions_and_keeps_them_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.toml"
    upstream = (f'[upstreams.b]\ncommand = "{sys.executable}"\nargs = ["{BUDGET_SERVER}", "--name", "b"]\n'
                "[upstreams.b.budget]\n")
    path.write_text(upstream + "session_calls = 1\n")
    async with running_service(load_config(path), tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        assert not (await client.call_tool("b__echo", {"text": "1"})).is_error
        assert (await client.call_tool("b__echo", {"text": "2"})).is_error
        path.write_text(upstream + "session_calls = 3\n")
        assert svc.service.reload()
        assert texts(await client.call_tool("b__echo", {"text": "3"})) == ["3"]  # same session, new limit
        path.write_text(upstream + "session_calls = -1\n")
        assert not svc.service.reload()
        assert texts(await client.call_tool("b__echo", {"text": "4"})) == ["4"]  # the old rules stayed
        assert (await client.call_tool("b__echo", {"text": "5"})).is_error
        assert (await budget_view(svc, "b"))["limits"]["session_calls"]["allowed"] == 3



async def test_a_budget_for_a_tool_the_upstream_does_not_list_is_warned_once_per_config_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tollgate.toml"
    upstream = f'[upstreams.b]\ncommand = "{sys.executable}"\nargs = ["{BUDGET_SERVER}", "--name", "b"]\n'
    path.write_text(upstream + '[upstreams.b.budget.tools."ech"]\nday_calls = 1\n'
                    '[upstreams.b.budget.tools."no_such_tool"]\nday_calls = 1\n')
    warning = ("upstream 'b': the budget has limits for tools it does not list, which never apply: ech, "
               "no_such_tool; its tools, closest first: echo, blocks, multibyte, picture, served_calls")

    def warnings() -> list[str]:
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        return [m for m in messages if "does not list" in m]

    with caplog.at_level(logging.WARNING, logger="tollgate.budgets"):
        async with running_service(load_config(path), tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
            assert warnings() == [warning]  # on the upstream's first tool list
            await client.list_tools()
            assert svc.service.reload()  # the same file again: a new load, told again
            assert warnings() == [warning, warning]
            path.write_text(upstream + '[upstreams.b.budget.tools."echo"]\nday_calls = 1\n')
            assert svc.service.reload()
    assert warnings() == [warning, warning]


async def read_until(stream: asyncio.StreamReader, needle: str, timeout: float = 30.0) -> str:
    async def scan() -> str:
        while line := (await stream.readline()).decode():
            if needle in line:
                return line
        raise AssertionError(f"stream ended before {needle!r}")

    return await asyncio.wait_for(scan(), timeout)


async def test_tollgate_serve_writes_a_pid_file_and_tollgate_reload_applies_new_budgets(tmp_path: Path) -> None:
    import socket

    from gateway.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "tollgate.toml"
    body = (f'[server]\nlisten = "127.0.0.1:{port}"\n[store]\ndsn = "chdb://{tmp_path / "db"}"\n'
            f'[upstreams.b]\ncommand = "{sys.executable}"\nargs = ["{BUDGET_SERVER}", "--name", "b"]\n'
            "[upstreams.b.budget]\nday_calls = {calls}\n")
    path.write_text(body.format(calls=1))
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                                  cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    assert server.stderr is not None
    try:
        await read_until(server.stderr, "Tollgate listening")
        assert (tmp_path / "db" / "tollgate.pid").read_text().splitlines() == [str(server.pid), f"127.0.0.1:{port}"]
        async with mcp_session(f"http://127.0.0.1:{port}/mcp") as client:
            assert not (await client.call_tool("b__echo", {"text": "1"})).is_error
            assert (await client.call_tool("b__echo", {"text": "2"})).is_error
            path.write_text(body.format(calls=5))
            assert main(["reload", "--config", str(path)]) == 0
            await read_until(server.stderr, "re-read, 1 budget change(s)")
            assert not (await client.call_tool("b__echo", {"text": "3"})).is_error  # same session, new limit
        report = await budgets_report(load_config(path))
        assert report["source"] == f"http://127.0.0.1:{port}/api/budgets"
        (view,) = report["upstreams"]
        assert view["limits"]["day_calls"]["allowed"] == 5 and view["day"]["calls"] == 2
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    assert not (tmp_path / "db" / "tollgate.pid").exists()


def reload_test_config(port: int, db: Path, *, idle: int, name_arg: str, token: str, env: str, init: int,
                       more: str, calls: int) -> str:
    """A config for the reload test: the values it changes are parameters."""
    upstream = f'command = "{sys.executable}"\nargs = ["{BUDGET_SERVER}", "--name", "{name_arg}"]\n'
    return (f'[server]\nlisten = "127.0.0.1:{port}"\nsession_idle_seconds = {idle}\nauth_tokens = ["{token}"]\n'
            f'[store]\ndsn = "chdb://{db}"\n[upstreams.b]\n{upstream}timeouts.init_seconds = {init}\n'
            f'env = {{ KEY = "{env}" }}\n[upstreams.b.budget]\nday_calls = {calls}\n{more}')


async def test_tollgate_reload_names_every_setting_it_does_not_apply_and_shows_no_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from gateway.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path, db = tmp_path / "tollgate.toml", tmp_path / "db"
    first = {"idle": 3600, "name_arg": "${TG_TEST_NAME}", "token": "${TG_TEST_TOKEN}", "env": "env-old-secret",
             "init": 30, "more": "", "calls": 1}
    path.write_text(reload_test_config(1, db, **first))  # served on --listen: a reload must not see it as changed
    secrets = {"TG_TEST_NAME": "name-secret", "TG_TEST_TOKEN": "tok-old-secret", "TG_TEST_TOKEN2": "tok-new-secret"}
    for name, value in secrets.items():  # the server's and `tollgate reload`'s (which reads the config too)
        monkeypatch.setenv(name, value)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--listen", f"127.0.0.1:{port}",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    assert server.stderr is not None
    added = f'[upstreams.c]\ncommand = "{sys.executable}"\nargs = ["{BUDGET_SERVER}"]\n'
    try:
        await read_until(server.stderr, "Tollgate listening")
        path.write_text(reload_test_config(1, db, **{
            **first, "idle": 60, "name_arg": "x${TG_TEST_NAME}", "token": "${TG_TEST_TOKEN2}",
            "env": "env-new-secret", "init": 45, "more": added, "calls": 2}))
        assert main(["reload", "--config", str(path), "--data-dir", str(db)]) == 0
        said = [await read_until(server.stderr, "reload: ")]
        while "upstreams.b.timeouts" not in said[-1]:  # the last line, as they are sorted
            said.append(await read_until(server.stderr, "reload: "))
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    lines = [line.split("reload: ", 1)[1].strip() for line in said]
    assert lines[0].startswith("budget b: ") and lines[1].endswith("re-read, 1 budget change(s)")
    assert lines[2:] == [
        "upstream c added: takes effect after a restart",
        "server.auth_tokens changed (value not shown): takes effect after a restart",
        "server.session_idle_seconds changed (3600 -> 60): takes effect after a restart",
        "upstreams.b.args changed (value not shown): takes effect after a restart",
        "upstreams.b.env changed (value not shown): takes effect after a restart",
        "upstreams.b.timeouts.init_seconds changed (30 -> 45): takes effect after a restart"]
    assert not any("secret" in line for line in lines)  # nor server.listen, which --listen kept as served


async def test_session_bytes_deny_once_a_session_spent_them_and_a_new_session_starts_from_zero(
    tmp_path: Path
) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(session_bytes=3000)))
    async with running_service(config, tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            assert not (await client.call_tool("b__echo", {"text": "x" * 1500})).is_error  # ~3 kB both ways
            refused = await client.call_tool("b__echo", {"text": "y"})
        async with mcp_session(svc.mcp_url) as fresh:
            assert texts(await fresh.call_tool("b__echo", {"text": "y"})) == ["y"]
        first = (await call_rows(svc, "b"))[0]
    charged = first["req_bytes_client"] + first["resp_bytes_client"]
    assert refused.is_error and charged > 3000
    text = texts(refused)[0]
    assert f"reached its session_bytes limit (bytes per client session): used {charged:,} of 3,000 bytes" in text
    assert "resets when this client session ends" in text


async def test_day_tokens_deny_every_session_once_the_day_spent_them(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(day_tokens=100)))
    async with running_service(config, tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            assert not (await client.call_tool("b__multibyte", {"repeat": 200})).is_error  # 2,400 bytes of text
        async with mcp_session(svc.mcp_url) as other:
            refused = await other.call_tool("b__multibyte", {"repeat": 1})
        (spent,) = [r for r in await call_rows(svc, "b") if r["status"] == "ok"]
        view = await budget_view(svc, "b")
    assert spent["est_tokens"] == 600  # 200 x 12 bytes / 4
    assert refused.is_error
    assert "reached its day_tokens limit (estimated tokens per day): used 600 of 100 estimated tokens" in (
        texts(refused)[0])
    assert (view["day"]["tokens"], view["day"]["denied"]) == (600, 1)


async def test_warn_on_request_and_result_size_passes_the_call_whole_and_records_both(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_request_bytes=500, max_result_bytes=1000,
                                                              action="warn")))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        assert texts(await client.call_tool("b__echo", {"text": "x" * 2000})) == ["x" * 2000]  # both over
        assert texts(await client.call_tool("b__blocks", {"count": 1, "size": 3000})) == ["a" * 3000]
        rows = await call_rows(svc, "b")
        events = await svc.query("SELECT * FROM budget_events FINAL ORDER BY at, limit_name")
        view = await budget_view(svc, "b")
    assert [(r["status"], r["budget_action"], r["budget_limit"]) for r in rows] == [
        ("ok", "warn", "max_request_bytes"), ("ok", "warn", "max_result_bytes")]
    assert rows[0]["resp_bytes_client"] == rows[0]["resp_bytes_upstream"] > 2000  # nothing cut
    assert sorted((e["action"], e["limit_name"], e["mcp_session_id"] == rows[0]["mcp_session_id"]) for e in events) == [
        ("warn", "max_request_bytes", True), ("warn", "max_result_bytes", True), ("warn", "max_result_bytes", True)]
    request_event = next(e for e in events if e["limit_name"] == "max_request_bytes")
    assert (request_event["used"], request_event["limit"]) == (rows[0]["req_bytes_client"], 500)
    assert (view["day"]["calls"], view["day"]["warned"], view["day"]["denied"]) == (2, 2, 0)


def budget_toml(path: Path, body: str) -> Path:
    upstreams = "".join(f'[upstreams.{name}]\ncommand = {orjson.dumps(sys.executable).decode()}\n'
                        f'args = [{orjson.dumps(str(BUDGET_SERVER)).decode()}, "--name", "{name}"]\n'
                        for name in ("a", "b"))
    path.write_text(body + upstreams + "[upstreams.b.budget.tools.echo]\nsession_calls = 4\n")
    return path


async def test_a_default_budget_applies_to_each_upstream_and_a_tool_override_counts_its_own_calls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(budget_toml(tmp_path / "tollgate.toml", "[budget]\nsession_calls = 2\n"))
    outcomes: dict[str, list[bool]] = {}
    with caplog.at_level(logging.WARNING, logger="tollgate.budgets"):
        async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
            for tool, calls in (("a__echo", 3), ("b__multibyte", 3), ("b__echo", 5)):
                results = [await client.call_tool(tool, {"text": "t"} if "echo" in tool else {"repeat": 1})
                           for _ in range(calls)]
                outcomes[tool] = [r.is_error for r in results]
                if tool == "b__echo":
                    tool_denial = texts(results[-1])[0]
            session = (await call_rows(svc, "a"))[0]["mcp_session_id"]
            view = await budget_view(svc, "b")
    # a and b each get the default's 2 calls; b's echo has its own 4, not counted against b's other tools
    assert outcomes == {"a__echo": [False, False, True], "b__multibyte": [False, False, True],
                        "b__echo": [False] * 4 + [True]}
    assert "upstream 'b' (tool 'echo') reached its session_calls limit" in tool_denial
    assert "used 4 of 4 calls" in tool_denial
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget denied")] == [
        f"budget denied a/echo session {session[:8]}: session_calls used 2 of 2 (session window)",
        f"budget denied b/multibyte session {session[:8]}: session_calls used 2 of 2 (session window)",
        f"budget denied b/echo session {session[:8]}: session_calls used 4 of 4 (session window)"]
    assert view["limits"] == {"session_calls": {"allowed": 2, "action": "deny"}}
    tools = {t["tool"]: t for t in view["tools"]}
    assert tools["echo"]["limits"] == {"session_calls": {"allowed": 4, "action": "deny"}}
    assert tools["multibyte"]["limits"] is None  # inherits b's limit, counted on the whole upstream
    assert (tools["echo"]["day"]["calls"], tools["multibyte"]["day"]["calls"]) == (4, 2)


async def test_a_request_and_a_result_denial_each_log_one_line_naming_server_limit_used_and_allowed_and_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token, env_secret = "tok-bearer-s3cret", "sk-upstream-env-s3cret"
    config = gateway_config(
        replace(budget_upstream("req", BudgetConfig(max_request_bytes=500)), env={"UPSTREAM_API_KEY": env_secret}),
        budget_upstream("res", BudgetConfig(max_result_bytes=300)), auth_tokens=(token,))
    asked = {"req": "password=hunter2-s3cret " + "x" * 1000, "res": "api_key=sk-result-s3cret " + "y" * 400}
    with caplog.at_level(logging.INFO, logger="tollgate"):
        async with running_service(config, tmp_path / "db") as svc, \
                Http(headers={"Authorization": f"Bearer {token}"}) as http:
            session_id = await open_session(http, svc.mcp_url)
            for index, upstream in enumerate(("req", "res")):
                body = jsonrpc.request_body(index + 1, "tools/call", {
                    "name": f"{upstream}__echo", "arguments": {"text": asked[upstream]}})
                _, _, answer = await post(http, svc.mcp_url, body, session_id)
                assert answer["result"]["isError"], answer
            events = {e["upstream"]: e for e in await svc.query("SELECT * FROM budget_events FINAL")}
            rows = {r["upstream"]: r for r in await svc.query("SELECT * FROM calls FINAL")}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget denied")]
    assert events["req"]["used"] == rows["req"]["req_bytes_client"] > 1000  # the request as the client sent it
    assert events["res"]["used"] > 400 and rows["res"]["resp_bytes_upstream"] > 400  # the result it was sent
    assert lines == [  # one line each: the server and tool, the session's first 8 characters, limit, used, allowed
        f"budget denied req/echo session {session_id[:8]}: max_request_bytes used {int(events['req']['used'])} "
        "of 500 (call window)",
        f"budget denied res/echo session {session_id[:8]}: max_result_bytes used {int(events['res']['used'])} "
        "of 300 (call window)"]
    for secret in (token, env_secret, "hunter2-s3cret", "sk-result-s3cret", session_id):
        assert not [line for line in lines if secret in line], secret
    for secret in (token, env_secret, "hunter2-s3cret", "sk-result-s3cret"):  # nor any other line logged
        assert secret not in caplog.text, secret


async def test_a_store_down_at_startup_logs_fail_open_and_fail_closed_and_applies_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = gateway_config(budget_upstream("opened", BudgetConfig(day_calls=5)),
                          budget_upstream("closed", BudgetConfig(day_calls=5, fail_open=False)))
    config = Config(server=base.server, upstreams=base.upstreams,
                    store=StoreConfig(dsn="http://default:pw@127.0.0.1:1/tollgate", spill_dir=str(tmp_path / "spill")))
    with caplog.at_level(logging.WARNING, logger="tollgate.budgets"):
        service = await open_service(config)
        try:
            async with serve_app(service.app) as base_url, mcp_session(base_url + "/mcp") as client:
                served = await client.call_tool("opened__echo", {"text": "ok"})
                refused = await client.call_tool("closed__echo", {"text": "no"})
        finally:
            await service.close()
    messages = [r.getMessage() for r in caplog.records]
    assert "budgets fail open for opened: spend starts from zero until the store answers" in messages
    assert "budgets fail closed for closed: calls are refused until the store answers" in messages
    assert "budget denied closed/echo: past spend unknown and the budget fails closed" in messages
    assert texts(served) == ["ok"]
    assert refused.is_error and "fail_open = false" in texts(refused)[0]


async def test_truncation_reports_the_exact_original_and_delivered_sizes_and_charges_what_was_delivered(
    tmp_path: Path
) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_result_bytes=1000, action="truncate")),
                            budget_upstream("twin"))
    call = {"name": "{}__multibyte", "arguments": {"repeat": 500}}
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        answers = {}
        for index, upstream in enumerate(("twin", "b")):
            body = jsonrpc.request_body(index + 1, "tools/call", {**call, "name": call["name"].format(upstream)})
            _, _, answers[upstream] = await post(http, svc.mcp_url, body, session_id)
        (row,) = await call_rows(svc, "b")
        view = await budget_view(svc, "b")
    untruncated, delivered = answers["twin"]["result"], answers["b"]["result"]
    meta = delivered["_meta"][META_KEY]
    assert meta["original_bytes"] == len(orjson.dumps(untruncated))  # the upstream's result, as JSON
    *kept, marker = delivered["content"]
    shown = {k: v for k, v in delivered.items() if k != "_meta"} | {"content": kept}
    assert meta["delivered_bytes"] == len(orjson.dumps(shown)) <= 1000  # without the marker and _meta
    assert f"truncated from {meta['original_bytes']} to {meta['delivered_bytes']} bytes" in marker["text"]
    assert row["resp_bytes_upstream"] > meta["original_bytes"] > row["resp_bytes_client"]
    assert view["day"]["bytes"] == row["req_bytes_client"] + row["resp_bytes_client"]  # charged as delivered


async def test_resources_read_and_prompts_get_are_refused_with_a_json_rpc_error_carrying_the_denial_text(
    tmp_path: Path
) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_result_bytes=1000, session_calls=2)))
    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        with pytest.raises(MCPError) as read:
            await client.read_resource(RESOURCE_URI)  # 6,000 bytes of text: refused on the result side
        with pytest.raises(MCPError) as prompt:
            await client.get_prompt("b__long_prompt", {"repeat": "1"})  # the image alone is over 1,000 bytes
        for _ in range(2):
            assert not (await client.call_tool("b__echo", {"text": "spend"})).is_error
        with pytest.raises(MCPError) as spent:  # refused before anything is sent upstream
            await client.get_prompt("b__long_prompt", {"repeat": "1"})
        rows = await call_rows(svc, "b")
    assert [e.value.code for e in (read, prompt, spent)] == [jsonrpc.BUDGET_EXCEEDED] * 3
    assert re.search(r"this result to upstream 'b' is 6,\d{3} bytes, over its max_result_bytes limit of 1,000 bytes",
                     read.value.message)
    assert "over its max_result_bytes limit" in prompt.value.message and "narrower result" in prompt.value.message
    assert "reached its session_calls limit (calls per client session): used 2 of 2 calls" in spent.value.message
    assert "resets when this client session ends" in spent.value.message
    denied = [r for r in rows if r["status"] == "denied"]
    assert [(r["method"], r["budget_limit"], r["error"]) for r in denied] == [
        ("resources/read", "max_result_bytes", read.value.message),
        ("prompts/get", "max_result_bytes", prompt.value.message),
        ("prompts/get", "session_calls", spent.value.message)]
    assert denied[0]["resp_bytes_upstream"] > 6000 and denied[2]["req_bytes_upstream"] == 0


async def test_resources_read_and_prompts_get_are_truncated_into_valid_results(tmp_path: Path) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(max_result_bytes=1000, action="truncate")))
    async with running_service(config, tmp_path / "db") as svc, Http() as http:
        session_id = await open_session(http, svc.mcp_url)
        _, _, read = await post(http, svc.mcp_url, jsonrpc.request_body(1, "resources/read", {"uri": RESOURCE_URI}),
                                session_id)
        _, _, prompt = await post(http, svc.mcp_url, jsonrpc.request_body(2, "prompts/get", {
            "name": "b__long_prompt", "arguments": {"repeat": "500"}}), session_id)
        rows = {r["method"]: r for r in await call_rows(svc, "b")}
    resource = ReadResourceResult.model_validate(read["result"])
    (item,) = resource.contents
    assert isinstance(item, TextResourceContents) and item.uri == RESOURCE_URI
    kept, marker = item.text.split("\n[Tollgate: result truncated from ")
    assert (MULTIBYTE * 500).startswith(kept) and len(kept.encode()) <= 1000 and "upstream 'b'" in marker

    assert set(prompt["result"]) == {"messages", "description", "_meta"}  # no content key added beside messages
    messages = GetPromptResult.model_validate(prompt["result"]).messages
    assert [m.role for m in messages] == ["user", "user", "user"]
    caption, cut, note = (m.content for m in messages)
    assert isinstance(caption, TextContent) and isinstance(cut, TextContent) and isinstance(note, TextContent)
    assert caption.text == "caption" and (MULTIBYTE * 500).startswith(cut.text) and len(cut.text) > 100
    assert note.text.startswith("[Tollgate: result truncated from ")
    assert "; dropped 1 image block(s), 1 text block(s)." in note.text
    for answer, row in ((read, rows["resources/read"]), (prompt, rows["prompts/get"])):
        meta = answer["result"]["_meta"][META_KEY]
        assert meta["limit"] == 1000 and meta["original_bytes"] > 6000 and meta["delivered_bytes"] <= 1000
        assert len(orjson.dumps(answer["result"])) <= 1000  # marker and _meta included
        assert (row["status"], row["budget_action"], row["budget_limit"]) == (
            "truncated", "truncate", "max_result_bytes")
        assert row["resp_bytes_upstream"] > 6000 > 1100 > row["resp_bytes_client"]
    assert rows["prompts/get"]["image_bytes_encoded"] == 0


async def test_an_unexpected_error_in_a_call_is_answered_recorded_and_releases_its_budget_hold(
    tmp_path: Path, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(day_calls=1)))
    async with running_service(config, tmp_path / "db", now=clock) as svc, mcp_session(svc.mcp_url) as client:
        policy = svc.service.policy
        settle = policy.settle

        def broken(*args: Any) -> Any:
            policy.settle = settle  # once
            raise RuntimeError("settle failed")

        policy.settle = broken
        with caplog.at_level(logging.ERROR, logger="tollgate"), pytest.raises(MCPError) as failed:
            await client.call_tool("b__echo", {"text": "boom"})
        refused = await client.call_tool("b__echo", {"text": "same day"})  # the failed call asked the upstream
        clock.at += 86400
        admitted = await client.call_tool("b__echo", {"text": "next day"})  # nothing of it is held any more
        rows = await call_rows(svc, "b")
    assert (failed.value.code, failed.value.message) == (jsonrpc.INTERNAL_ERROR, INTERNAL_ERROR_TEXT)
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "settle failed"
    assert refused.is_error and "used 1 of 1 calls" in texts(refused)[0]
    assert texts(admitted) == ["next day"]
    by_status = {r["status"]: r for r in rows}  # the first two share the frozen instant: no order among them
    assert len(rows) == 3 and {s: r["error"] for s, r in by_status.items()} == {
        "internal_error": "RuntimeError: settle failed", "denied": texts(refused)[0], "ok": ""}
    failed_row = by_status["internal_error"]
    assert failed_row["resp_bytes_client"] > 0 and failed_row["resp_bytes_upstream"] > 0


async def test_concurrent_calls_with_bounded_results_pass_a_session_bytes_limit_by_one_result_at_most(
    tmp_path: Path
) -> None:
    config = gateway_config(budget_upstream("b", BudgetConfig(session_bytes=1500, max_result_bytes=1000,
                                                              action="truncate")))
    async with running_service(config, tmp_path / "db") as svc:
        async with mcp_session(svc.mcp_url) as client:
            results = await asyncio.gather(*(client.call_tool("b__blocks", {"count": 1, "size": 100_000})
                                             for _ in range(20)))
        rows = await call_rows(svc, "b")
    served = [r for r in rows if r["status"] != "denied"]
    charged = sum(r["req_bytes_client"] + r["resp_bytes_client"] for r in served)
    largest = max(r["resp_bytes_client"] for r in served)
    # The first call holds ~1,170 bytes (request, 1,000 of result, envelope) until it ends, so only one more
    # request fits under 1,500 while it is in flight, as after it ended; without the hold, every call that
    # arrived while the first ones were in flight would pass too.
    assert len(served) == sum(not r.is_error for r in results) == 2
    assert {r["status"] for r in served} == {"truncated"} and largest <= 1000 + ENVELOPE_BYTES
    assert 1500 < charged <= 1500 + largest  # past the limit by the last admitted call's result at most
    assert {r["budget_limit"] for r in rows if r["status"] == "denied"} == {"session_bytes"}


async def test_servers_budgets_and_calls_count_resource_reads_and_prompts_alike_and_label_them(
    tmp_path: Path
) -> None:
    """tools/call, resources/read and prompts/get each leave one row and are one call in every view: the servers
    list and page, the budget spend (live and rebuilt from the store) and the calls list agree on the count; a
    resource or prompt is labelled as such, never shown as a tool."""
    config = gateway_config(budget_upstream("b", BudgetConfig(day_calls=100)))

    async def get(svc: Running, path: str) -> Any:
        async with Http() as http, http.get(svc.base_url + path) as response:
            assert response.status == 200, path
            return await response.json()

    async with running_service(config, tmp_path / "db") as svc, mcp_session(svc.mcp_url) as client:
        for text in ("one", "two"):
            assert not (await client.call_tool("b__echo", {"text": text})).is_error
        await client.read_resource(RESOURCE_URI)
        await client.get_prompt("b__long_prompt", {"repeat": "1"})
        await svc.flushed()
        (server,) = [s for s in (await get(svc, "/api/servers"))["servers"] if s["upstream"] == "b"]
        page = await get(svc, "/api/servers/b")
        listed = (await get(svc, "/api/calls?server=b"))["calls"]
        spent = await budget_view(svc, "b")
    labels = {"echo": 2, f"resource {RESOURCE_URI}": 1, "prompt long_prompt": 1}
    assert server["calls"] == page["server"]["calls"] == spent["day"]["calls"] == len(listed) == 4
    assert {t["tool"]: t["calls"] for t in page["tools"]} == labels
    assert {t["tool"]: t["day"]["calls"] for t in spent["tools"]} == labels
    assert sorted((c["kind"], c["tool"]) for c in listed) == [
        ("prompt", "long_prompt"), ("resource", RESOURCE_URI), ("tool", "echo"), ("tool", "echo")]
    assert {(r["kind"], r["tool"]) for r in page["largest_results"]} == {
        ("tool", "echo"), ("resource", f"resource {RESOURCE_URI}"), ("prompt", "prompt long_prompt")}
    assert sum(p["calls"] for p in page["timeline"]["points"]) == 4
    stored = replace(config, store=StoreConfig(dsn=f"chdb://{tmp_path / 'db'}"))
    (rebuilt,) = (await budgets_report(stored))["upstreams"]
    assert rebuilt["day"]["calls"] == 4 and {t["tool"]: t["day"]["calls"] for t in rebuilt["tools"]} == labels
