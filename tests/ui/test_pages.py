"""The web UI end to end: the real service, seeded through its real endpoints, viewed in a real headless Chromium.

MCP calls go through the gateway with the `mcp` SDK client (tied by `claudecode/toolUseId`); a real Claude Code
OTLP capture, moved to the present, is POSTed to /v1/logs. Each page's figures are compared with the API's.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
import pytest_asyncio
from aiohttp import ClientSession as Http
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation

from gateway.config import BudgetConfig, Config, TelemetryConfig
from tests.gateway.conftest import echo_upstream, gateway_config
from tests.gateway.service import Running, running_service
from tests.ui.seed import (
    BLOB_USE_ID,
    CC_SESSION,
    ECHO_USE_ID,
    SPREAD,
    TURN_ORDER_SESSION,
    failing_call,
    otlp_logs_now,
    spread_calls,
    turn_order_logs_now,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("TOLLGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 15_000
TOKEN = "ui-test-token"
BLOB_BYTES = 200_000
RESULT_LIMIT = 50_000
KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _require_browser() -> Any:
    """Playwright's async API, or skip (locally) / fail (in CI) when it or Chromium is missing."""
    missing = None if Path(CHROMIUM).exists() or shutil.which(CHROMIUM) else f"{CHROMIUM} not found"
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing = missing or "the playwright package is not installed"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"UI tests need Chromium and Playwright in CI: {missing}")
        pytest.skip(f"UI tests need Chromium and Playwright: {missing}")
    return async_playwright


def _config() -> Config:
    config = gateway_config(
        echo_upstream("alpha", budget=BudgetConfig(max_request_bytes=400)),
        echo_upstream("beta", budget=BudgetConfig(max_result_bytes=RESULT_LIMIT, day_calls=10,
                                                  actions={"max_result_bytes": "truncate"})),
        auth_tokens=(TOKEN,))
    return replace(config, telemetry=TelemetryConfig(store_prompt_text=True))


AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER_CLIENT = Implementation(name="agent-sdk", version="0.9.1")
CAPTURE_CLIENT = {"name": "claude-code", "version": "2.1.332", "terminal_type": "dumb"}  # the capture's telemetry


@asynccontextmanager
async def mcp_session(url: str, client: Implementation | None = None, *,
                      terminate: bool = True) -> AsyncIterator[ClientSession]:
    """The real `mcp` SDK client over Streamable HTTP, sending the bearer token (and `client` as its clientInfo);
    `terminate=False` leaves the session open on the gateway when the client goes (no DELETE), as a live one."""
    async with create_mcp_http_client(headers=AUTH) as http, \
            streamable_http_client(url, http_client=http, terminate_on_close=terminate) as streams, \
            ClientSession(streams[0], streams[1], client_info=client) as session:
        await session.initialize()
        yield session


async def _seed(svc: Running) -> None:
    """Four calls (exact tie, exact tie and truncated, denied without an id, a tool error), then the session's
    telemetry; the telemetry of a session from a client that sends no prompt.id; and an MCP-only session, left
    live (its budget spend is the busiest session's), whose calls spread over seconds."""
    async with mcp_session(svc.mcp_url) as client:
        await client.call_tool("alpha__echo", {"text": "hello from mock request 2"},
                               meta={"claudecode/toolUseId": ECHO_USE_ID})
        await client.call_tool("beta__blob", {"n": BLOB_BYTES}, meta={"claudecode/toolUseId": BLOB_USE_ID})
        await client.call_tool("alpha__echo", {"text": "z" * 1000})
        await failing_call(client)
        async with Http() as http:
            for body in (otlp_logs_now(), turn_order_logs_now()):
                async with http.post(svc.base_url + "/v1/logs", data=body,
                                     headers={"Content-Type": "application/json", **AUTH}) as response:
                    assert response.status == 200, await response.text()
    async with mcp_session(svc.mcp_url, OTHER_CLIENT, terminate=False) as other:  # sends no ids: MCP-only
        await other.call_tool("beta__echo", {"text": "from another client"})
        await spread_calls(other)
    await svc.flushed()


class Browser:
    """One Chromium context; records every URL any page requests."""

    def __init__(self, context: Any, base_url: str) -> None:
        self.context = context
        self.base_url = base_url
        self.requested: list[str] = []
        context.on("request", lambda request: self.requested.append(request.url))

    async def open(self, path: str, token: str | None = TOKEN) -> Any:
        """A new tab at `path`, given the token in its address (as a link from an operator would)."""
        page = await self.context.new_page()
        await page.goto(self.base_url + path + (("&" if "?" in path else "?") + f"token={token}" if token else ""))
        await page.wait_for_selector("html[data-state=ready]", timeout=WAIT_MS)
        assert await page.locator(".error").count() == 0, await page.locator(".error").inner_text()
        return page


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser_factory(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """`await factory(base_url)` -> a Browser in a fresh profile; all closed at the end of the module."""
    async_playwright = _require_browser()
    async with async_playwright() as pw:
        contexts: list[Any] = []

        async def make(base_url: str) -> Browser:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=ARGS,
                headless=True, viewport={"width": 1360, "height": 900}, timezone_id="UTC")  # datetime-local = UTC
            contexts.append(context)
            return Browser(context, base_url)

        try:
            yield make
        finally:
            for context in contexts:
                await context.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory, browser_factory: Any) -> AsyncIterator[tuple[Running,
                                                                                                      Browser]]:
    async with running_service(_config(), tmp_path_factory.mktemp("ui-store")) as svc:
        await _seed(svc)
        yield svc, await browser_factory(svc.base_url)


async def api(svc: Running, path: str) -> Any:
    async with Http() as http, http.get(svc.base_url + path, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        return orjson.loads(await response.read())


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


def publish(name: str) -> None:
    """Refresh the README's screenshot only when asked: a test run must not dirty the checkout."""
    if not os.environ.get("TOLLGATE_UPDATE_SCREENSHOTS"):
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ARTIFACTS / f"{name}.png", SCREENSHOTS / f"{name}.png")


def count(text: str) -> int:
    """'12,345 B (12.1 KiB)' -> 12345: the exact figure a page shows first."""
    return int(text.split()[0].replace(",", "").lstrip("$"))


def usd(value: float) -> str:
    return f"${value:.4f}"


async def accessible(page: Any) -> None:
    """Every form control has a label; every badge is a focusable button saying whether it is open."""
    unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.outerHTML)""")
    assert unlabelled == []
    badges = await page.evaluate("""() => [...document.querySelectorAll('.badge')].map(b => ({
        tag: b.tagName, expanded: b.getAttribute('aria-expanded'), tab: b.tabIndex,
        controls: !!document.getElementById(b.getAttribute('aria-controls'))}))""")
    assert all(b == {"tag": "BUTTON", "expanded": "false", "tab": 0, "controls": True} for b in badges), badges


# ----- sessions -------------------------------------------------------------------------------------------


async def test_sessions_page_lists_the_session_with_the_apis_figures(seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    listed = (await api(svc, "/api/sessions"))["sessions"]
    expected = next(s for s in listed if s["session_id"] == CC_SESSION)
    page = await browser.open("/ui/sessions")
    row = page.locator(f"#sessions tr[data-session='{CC_SESSION}']")
    for key in (*KINDS, "total_tokens"):
        assert await row.locator(f"[data-k={key}]").inner_text() == f"{expected[key]:,}", key
    assert expected["total_tokens"] == sum(expected[k] for k in KINDS) > 0
    assert await row.locator("[data-k=cost_usd]").inner_text() == usd(expected["cost_usd"])
    result_bytes = row.locator("[data-k=resp_bytes_upstream]")
    assert expected["resp_bytes_upstream"] > 0
    assert await result_bytes.get_attribute("title") == f"{expected['resp_bytes_upstream']:,} bytes"
    assert await page.locator("#sessions tbody tr").count() == len(listed)
    await accessible(page)
    await page.screenshot(path=shot("sessions"), full_page=True)
    publish("sessions")


async def test_sessions_page_names_each_sessions_client_as_the_api_does(seeded: tuple[Running, Browser]) -> None:
    """Claude Code sessions by their telemetry (the bound MCP session's clientInfo is the SDK's, not shown); the
    MCP-only session by the clientInfo it sent."""
    svc, browser = seeded
    listed = (await api(svc, "/api/sessions"))["sessions"]
    mcp_only = next(s["session_id"] for s in listed if s["kind"] == "mcp")
    assert {s["session_id"]: s["client"] for s in listed} == {
        CC_SESSION: CAPTURE_CLIENT, TURN_ORDER_SESSION: CAPTURE_CLIENT,
        mcp_only: {"name": OTHER_CLIENT.name, "version": OTHER_CLIENT.version, "terminal_type": ""}}
    page = await browser.open("/ui/sessions")
    cells = {s["session_id"]: await page.locator(f"#sessions tr[data-session='{s['session_id']}'] [data-k=client]")
             .inner_text() for s in listed}
    assert cells == {CC_SESSION: "claude-code 2.1.332\nterminal: dumb",
                     TURN_ORDER_SESSION: "claude-code 2.1.332\nterminal: dumb", mcp_only: "agent-sdk 0.9.1"}


def ms_shown(lasted: dt.timedelta) -> str:
    """A duration under a minute as the pages show it: whole milliseconds under a second, else tenths of seconds;
    halves rounded up."""
    assert dt.timedelta(0) < lasted < dt.timedelta(minutes=1)
    micros = lasted // dt.timedelta(microseconds=1)
    if lasted < dt.timedelta(seconds=1):
        return f"{(micros + 500) // 1000} ms"
    tenths = (micros + 50_000) // 100_000
    return f"{tenths // 10}.{tenths % 10} s"


def seconds_shown(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")  # the browser's zone is UTC


async def test_sessions_page_shows_the_last_activity_it_sorts_by_and_each_start(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    listed = (await api(svc, "/api/sessions"))["sessions"]
    assert [s["last_at"] for s in listed] == sorted((s["last_at"] for s in listed), reverse=True)
    page = await browser.open("/ui/sessions")
    assert await page.locator("#sessions caption").inner_text() == "Sessions, latest activity first"
    sorted_by = page.locator("#sessions thead th[aria-sort]")
    assert (await sorted_by.inner_text(), await sorted_by.get_attribute("aria-sort")) == ("Last activity ↓",
                                                                                         "descending")
    for s in listed:
        row = page.locator(f"#sessions tr[data-session='{s['session_id']}']")
        last, start = seconds_shown(s["last_at"]), seconds_shown(s["started_at"])
        assert await row.locator("[data-k=last_at]").inner_text() == last
        assert await row.locator("[data-k=last_at]").get_attribute("datetime") == s["last_at"]
        assert await row.locator("[data-k=started_at]").inner_text() == (start[11:] if start[:10] == last[:10]
                                                                          else start)
        lasted = dt.datetime.fromisoformat(s["last_at"]) - dt.datetime.fromisoformat(s["started_at"])
        assert await row.locator("[data-k=duration]").inner_text() == ms_shown(lasted)


async def test_a_duration_counts_the_microseconds_the_ends_carry(seeded: tuple[Running, Browser]) -> None:
    """Gateway times carry microseconds; Date keeps whole ms, which made a 2.2 ms call show as 3 ms (a flake of the
    test above, when the MCP-only session's ends fell so)."""
    _, browser = seeded
    page = await browser.open("/ui/sessions")
    spans = await page.evaluate("""() => import("/ui/static/format.js").then(({ span, ms }) => [
        ["2026-01-01T00:00:00.000900Z", "2026-01-01T00:00:00.003100Z"],
        ["2026-01-01T00:00:00.999Z", "2026-01-01T00:00:01.000500Z"],
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:02.250000Z"],
        ["2026-01-01 00:00:00", "2026-01-01T00:00:00.351Z"],
    ].map(([a, b]) => [span(a, b), ms(span(a, b))]))""")
    assert spans == [[2.2, "2 ms"], [1.5, "2 ms"], [2250, "2.3 s"], [351, "351 ms"]]
    # Past a minute the seconds carry into the minutes (5 min 59.6 s showed as "5 min 60 s", 59.97 s as "60.0 s").
    longer = await page.evaluate("""() => import("/ui/static/format.js").then(({ ms }) =>
        [59_940, 59_970, 359_600, 3_599_700, 3_600_000].map(ms))""")
    assert longer == ["59.9 s", "1 min 0 s", "6 min 0 s", "1 h 0 min", "1 h 0 min"]


async def shown(page: Any) -> list[str]:
    return [str(await r.get_attribute("data-session")) for r in await page.locator("#sessions tbody tr").all()]


async def test_sessions_pager_walks_the_apis_pages(seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    first, second = [await api(svc, f"/api/sessions?limit=1&offset={n}") for n in (0, 1)]
    assert first["total"] == second["total"] >= 2
    page = await browser.open("/ui/sessions?limit=1")
    assert await shown(page) == [s["session_id"] for s in first["sessions"]]
    assert await page.get_by_role("link", name="← Newer").count() == 0
    await page.get_by_role("link", name="Older →").click()
    await page.wait_for_url("**/ui/sessions?*offset=1*", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready]", timeout=WAIT_MS)
    assert await shown(page) == [s["session_id"] for s in second["sessions"]]
    assert await page.locator("#sessions-count").inner_text() == f"{first['total']} sessions, showing 2\N{EN DASH}2"
    await page.get_by_role("link", name="← Newer").click()
    await page.wait_for_url("**/ui/sessions?*offset=0*", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready]", timeout=WAIT_MS)
    assert await shown(page) == [s["session_id"] for s in first["sessions"]]


async def test_sessions_time_range_filter_lists_what_the_api_lists_for_that_range(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    since, until = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
    expected = await api(svc, f"/api/sessions?since={since:%Y-%m-%dT%H:%M}Z&until={until:%Y-%m-%dT%H:%M}Z")
    page = await browser.open("/ui/sessions")
    await page.get_by_label("From").fill(f"{since:%Y-%m-%dT%H:%M}")
    await page.get_by_label("To").fill(f"{until:%Y-%m-%dT%H:%M}")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url("**/ui/sessions?*since=*", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready]", timeout=WAIT_MS)
    assert await shown(page) == [s["session_id"] for s in expected["sessions"]] != []
    earlier = since - dt.timedelta(days=1)
    await page.get_by_label("From").fill(f"{earlier:%Y-%m-%dT%H:%M}")
    await page.get_by_label("To").fill(f"{since - dt.timedelta(hours=1):%Y-%m-%dT%H:%M}")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(f"**/ui/sessions?*since={earlier:%Y-%m-%dT%H}*", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready] .empty", timeout=WAIT_MS)


async def test_sessions_filters_are_labelled_and_narrow_the_list(seeded: tuple[Running, Browser]) -> None:
    _, browser = seeded
    page = await browser.open("/ui/sessions")
    await page.get_by_label("Server").select_option("beta")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url("**/ui/sessions?*server=beta*", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready]", timeout=WAIT_MS)
    assert await page.locator(f"#sessions tr[data-session='{CC_SESSION}']").count() == 1
    await page.get_by_label("User").fill("nobody-with-this-id")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url("**user=nobody-with-this-id*", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready] .empty", timeout=WAIT_MS)


# ----- one session ----------------------------------------------------------------------------------------


async def exact(cell: Any) -> int:
    """A byte figure shown rounded (KB/MB) by the exact count in its title."""
    return count(str(await cell.get_attribute("title")))


async def test_session_page_rollup_shows_the_apis_totals_servers_and_startup_overhead(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    detail = await api(svc, f"/api/sessions/{CC_SESSION}")
    s = detail["session"]
    calls = [c for t in detail["turns"] for c in t["calls"]] + detail["calls_outside_turns"]
    page = await browser.open(f"/ui/sessions/{CC_SESSION}")
    rollup = page.locator("#rollup")
    for key in (*KINDS, "total_tokens", "requests", "tool_calls"):
        assert count(await rollup.locator(f"[data-k={key}]").inner_text()) == s[key], key
    assert await rollup.locator("[data-k=cost_usd]").inner_text() == usd(s["cost_usd"])
    assert await rollup.locator("[data-k=models]").inner_text() == ", ".join(s["models"]) != ""
    for key in ("req_bytes_client", "resp_bytes_upstream"):
        assert await exact(rollup.locator(f"[data-k={key}]")) == s[key] == sum(c[key] for c in calls), key

    by_server = {r["upstream"]: r for r in s["by_server"]}  # the API's rows are the calls' sums
    assert by_server == {name: {
        "upstream": name, "calls": len(mine := [c for c in calls if c["upstream"] == name]),
        "errors": sum(c["status"] == "tool_error" for c in mine),
        **{k: sum(c[k] for c in mine) for k in ("req_bytes_client", "resp_bytes_upstream", "est_tokens")}}
        for name in ("alpha", "beta")}
    assert by_server["beta"]["errors"] == 1  # the seeded tool error; truncated and denied calls are no errors
    assert await page.locator("#by-server tbody tr").count() == len(by_server)
    for name, expected in by_server.items():
        row = page.locator(f"#by-server tr[data-server='{name}']")
        for key in ("calls", "errors", "est_tokens"):
            assert count(await row.locator(f"[data-k={key}]").inner_text()) == expected[key], (name, key)
        for key in ("req_bytes_client", "resp_bytes_upstream"):
            assert await exact(row.locator(f"[data-k={key}]")) == expected[key], (name, key)

    startup = page.locator("#startup")
    for key in ("total_tokens", "requests"):
        assert count(await startup.locator(f"[data-k={key}]").inner_text()) == detail["startup"][key] > 0, key
    assert await startup.locator("[data-k=cost_usd]").inner_text() == usd(detail["startup"]["cost_usd"])
    lists = detail["tool_list_context"]
    assert await page.locator("#tool-lists tbody tr").count() == len(lists) == 2
    for expected in lists:
        row = page.locator(f"#tool-lists tr[data-server='{expected['upstream']}']")
        for key in ("tool_count", "est_tokens"):
            assert count(await row.locator(f"[data-k={key}]").inner_text()) == expected[key], key
        assert await exact(row.locator("[data-k=server_bytes]")) == expected["server_bytes"]
        assert await row.locator("[data-k=used_in_session]").inner_text() == \
            ("yes" if expected["used_in_session"] else "no")


def sentence(note: str) -> str:
    """An API note as the session page shows it: capitalised, with a full stop."""
    return note[:1].upper() + note[1:] + "."


async def tool_list_cells(page: Any, upstream: str) -> tuple[str, str]:
    row = page.locator(f"#tool-lists tr[data-server='{upstream}']")
    return (await row.locator("[data-k=est_session_tokens]").inner_text(),
            await row.locator("[data-k=est_session_cost_usd]").inner_text())


async def test_a_connected_sessions_tool_list_cost_shows_as_up_to_the_apis_figures_with_its_note(
        seeded: tuple[Running, Browser]) -> None:
    """The capture's session is bound to the gateway's MCP session by its calls: each server's tool-list cost is
    known but an upper bound (Claude Code may defer MCP tools), so it reads 'up to' the API's figures, and the
    note under the table is the API's."""
    svc, browser = seeded
    detail = await api(svc, f"/api/sessions/{CC_SESSION}")
    attribution, lists = detail["tool_list_attribution"], detail["tool_list_context"]
    assert attribution["connected_by"] == "mcp_session" and attribution["note"].startswith("up to: ")
    assert {t["upstream"] for t in lists} == {"alpha", "beta"}
    page = await browser.open(f"/ui/sessions/{CC_SESSION}")
    for expected in lists:
        assert expected["est_session_tokens"] == expected["est_tokens"] * detail["session"]["requests"] > 0
        assert await tool_list_cells(page, expected["upstream"]) == (
            f"up to {expected['est_session_tokens']:,}", f"up to {usd(expected['est_session_cost_usd'])}")
    assert await page.locator("#tool-lists-note").inner_text() == sentence(attribution["note"])


async def test_a_session_not_known_to_be_connected_shows_its_tool_list_cost_as_unknown_and_why(
        seeded: tuple[Running, Browser]) -> None:
    """The turn-order session has telemetry only: no MCP session of the gateway is bound to it and its telemetry
    names no MCP server, so the API's tool-list cost is null, and the page says 'unknown' (not 0, not blank) and
    gives the API's reason; the definitions themselves still show."""
    svc, browser = seeded
    detail = await api(svc, f"/api/sessions/{TURN_ORDER_SESSION}")
    attribution, lists = detail["tool_list_attribution"], detail["tool_list_context"]
    assert attribution["connected_by"] is None
    assert "not connected through this Tollgate" in attribution["note"]
    assert {t["upstream"] for t in lists} == {"alpha", "beta"}
    page = await browser.open(f"/ui/sessions/{TURN_ORDER_SESSION}")
    for expected in lists:
        assert (expected["est_session_tokens"], expected["est_session_cost_usd"]) == (None, None)
        assert await tool_list_cells(page, expected["upstream"]) == ("unknown", "unknown")
        row = page.locator(f"#tool-lists tr[data-server='{expected['upstream']}']")
        assert count(await row.locator("[data-k=est_tokens]").inner_text()) == expected["est_tokens"] > 0
    assert await page.locator("#tool-lists-note").inner_text() == sentence(attribution["note"])


async def test_session_page_usage_badge_shows_the_turns_usage(seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    detail = await api(svc, f"/api/sessions/{CC_SESSION}")
    turn = next(t for t in detail["turns"] if t["turn_index"] == 1)
    page = await browser.open(f"/ui/sessions/{CC_SESSION}")
    await accessible(page)

    section = page.locator(f"section[data-turn='{turn['turn_id']}']")
    badge = section.locator("button[data-kind=usage]")
    await badge.click()
    assert await badge.get_attribute("aria-expanded") == "true"
    region = page.locator("#" + str(await badge.get_attribute("aria-controls")))
    await region.wait_for(state="visible", timeout=WAIT_MS)
    for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "requests"):
        assert count(await region.locator(f"[data-k={key}]").inner_text()) == turn[key], key
    assert await region.locator("[data-k=cost_usd]").inner_text() == usd(turn["cost_usd"])
    assert await region.locator("[data-k=models]").inner_text() == ", ".join(turn["models"])
    assert await region.locator("[data-k=match_method]").inner_text() == "by prompt id"
    lasted = dt.datetime.fromisoformat(turn["ended_at"]) - dt.datetime.fromisoformat(turn["started_at"])
    assert await region.locator("[data-k=duration]").inner_text() == ms_shown(lasted)
    # Open, the details cover none of the turn's call table (they opened over its Server and Tool columns).
    details, calls = await region.bounding_box(), await section.locator("table.calls").bounding_box()
    assert details["y"] + details["height"] <= calls["y"], (details, calls)
    await page.screenshot(path=shot("session"), full_page=True)
    publish("session")


async def test_a_prompt_shows_its_text_when_stored_else_its_length(seeded: tuple[Running, Browser]) -> None:
    """The service keeps prompt text: the capture's prompt shows as typed; the turn-order session's client sent
    its prompt's length only, which shows instead."""
    svc, browser = seeded
    for session, stored in ((CC_SESSION, True), (TURN_ORDER_SESSION, False)):
        turn = next(t for t in (await api(svc, f"/api/sessions/{session}"))["turns"] if t["turn_index"] == 1)
        assert turn["prompt_length"] > 0 and len(turn["prompt"]) == (turn["prompt_length"] if stored else 0)
        page = await browser.open(f"/ui/sessions/{session}")
        section = page.locator(f"section[data-turn='{turn['turn_id']}']")
        shown, hidden = ("prompt", "prompt_length") if stored else ("prompt_length", "prompt")
        assert await section.locator(f"[data-k={shown}]").inner_text() == (
            turn["prompt"] if stored else f"Prompt not stored ({turn['prompt_length']:,} characters)")
        assert await section.locator(f"[data-k={hidden}]").count() == 0


async def test_a_session_without_prompt_ids_says_its_turns_are_matched_by_turn_order(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    detail = await api(svc, f"/api/sessions/{TURN_ORDER_SESSION}")
    real = [t for t in detail["turns"] if t["turn_index"] > 0]
    assert [t["match_method"] for t in real] == ["turn_order"] and detail["session"]["match_methods"] == ["turn_order"]
    listing = await browser.open("/ui/sessions")
    turns_cell = listing.locator(f"#sessions tr[data-session='{TURN_ORDER_SESSION}'] [data-k=turns]")
    assert await turns_cell.inner_text() == f"{detail['session']['turns']} by turn order"
    assert await listing.locator(f"#sessions tr[data-session='{CC_SESSION}'] [data-k=turns]").inner_text() == "1"

    page = await browser.open(f"/ui/sessions/{TURN_ORDER_SESSION}")
    assert "turns matched by turn order" in await page.locator("p.muted").first.inner_text()
    section = page.locator(f"section[data-turn='{real[0]['turn_id']}']")
    assert await section.locator(".tag.method-turn_order").inner_text() == "by turn order"
    badge = section.locator("button[data-kind=usage]")
    await badge.click()
    region = page.locator("#" + str(await badge.get_attribute("aria-controls")))
    await region.wait_for(state="visible", timeout=WAIT_MS)
    assert await region.locator("[data-k=match_method]").inner_text() == "by turn order"


async def test_an_unknown_sessions_page_shows_the_apis_own_message(seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    page = await browser.context.new_page()
    await page.goto(f"{svc.base_url}/ui/sessions/nope?token={TOKEN}")
    await page.wait_for_selector("html[data-state=ready] .error", timeout=WAIT_MS)
    assert await page.locator(".error p").inner_text() == (  # the API's own words, not
        "no session 'nope' (an id prefix needs at least 6 characters)")  # "/api/sessions/nope: HTTP 404"


async def test_session_page_byte_badge_opens_with_enter_and_shows_the_calls_bytes(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    detail = await api(svc, f"/api/sessions/{CC_SESSION}")
    calls = [c for t in detail["turns"] for c in t["calls"]] + detail["calls_outside_turns"]
    blob = next(c for c in calls if c["tool_use_id"] == BLOB_USE_ID)
    assert blob["status"] == "truncated" and blob["tie"] == "tool_use_id"
    page = await browser.open(f"/ui/sessions/{CC_SESSION}")
    row = page.locator(f"tr[data-call='{blob['call_id']}']")
    badge = row.locator("button[data-kind=result]")
    await badge.focus()
    await page.keyboard.press("Enter")
    assert await badge.get_attribute("aria-expanded") == "true"
    region = page.locator("#" + str(await badge.get_attribute("aria-controls")))
    await region.wait_for(state="visible", timeout=WAIT_MS)
    assert count(await region.locator("[data-k=resp_bytes_upstream]").inner_text()) == blob["resp_bytes_upstream"]
    assert count(await region.locator("[data-k=resp_bytes_client]").inner_text()) == blob["resp_bytes_client"]
    assert blob["resp_bytes_upstream"] > BLOB_BYTES > blob["resp_bytes_client"] > RESULT_LIMIT
    assert "truncated" in await row.locator(".status").inner_text()
    assert await row.locator(".tie").inner_text() == "exact (tool_use_id)"
    await page.keyboard.press("Escape")
    assert await badge.get_attribute("aria-expanded") == "false"

    request = row.locator("button[data-kind=request]")
    await request.click()
    sent = page.locator("#" + str(await request.get_attribute("aria-controls")))
    assert count(await sent.locator("[data-k=req_bytes_client]").inner_text()) == blob["req_bytes_client"]
    denied = next(c for c in calls if c["status"] == "denied")
    assert "denied" in await page.locator(f"tr[data-call='{denied['call_id']}'] .status").inner_text()
    await page.keyboard.press("Escape")

    await badge.click()  # the result badge open again, for its screenshot: the turn and the details under the badge
    await region.wait_for(state="visible", timeout=WAIT_MS)
    await region.scroll_into_view_if_needed()
    shown = await region.evaluate("""r => { const b = r.getBoundingClientRect();
        return r.contains(document.elementFromPoint(b.left + b.width / 2, b.bottom - 4)); }""")
    assert shown, "the details' bottom is hidden (clipped by the table's box or covered)"
    turn, details = await row.locator("xpath=ancestor::section[1]").bounding_box(), await region.bounding_box()
    scrolled = await page.evaluate("window.scrollY")  # boxes are in the viewport, a full-page clip in the page
    top = scrolled + turn["y"] - 8
    bottom = scrolled + max(turn["y"] + turn["height"], details["y"] + details["height"]) + 8
    await page.screenshot(path=shot("session-bytes"), full_page=True,
                          clip={"x": 0, "y": top, "width": page.viewport_size["width"], "height": bottom - top})
    publish("session-bytes")


async def test_an_mcp_only_session_shows_its_calls_untied(seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    listed = (await api(svc, "/api/sessions"))["sessions"]
    mcp_only = next(s for s in listed if s["kind"] == "mcp")
    detail = await api(svc, f"/api/sessions/{mcp_only['session_id']}")
    page = await browser.open("/ui/sessions")
    await page.locator(f"#sessions tr[data-session='{mcp_only['session_id']}'] a").click()
    await page.wait_for_url(f"**/ui/sessions/{mcp_only['session_id']}", timeout=WAIT_MS)
    await page.wait_for_selector("html[data-state=ready] #outside", timeout=WAIT_MS)
    rows = page.locator("#outside tr[data-call]")
    assert await rows.count() == len(detail["calls_outside_turns"]) == 1 + len(SPREAD)
    assert await rows.locator(".tie").all_inner_texts() == ["unmatched"] * (1 + len(SPREAD))
    assert await page.locator("#turns section.turn").count() == 0


# ----- servers and budgets --------------------------------------------------------------------------------


LIMIT_LABELS = {"day_calls": "Calls per day"}  # budgetview.js's names of the UI tests' windowed limits


def budget_use(upstream: dict[str, Any]) -> str:
    """The servers list's budget cell: the windowed limit nearest its allowance, as a share of it."""
    if not upstream["usage"]:
        return "—"
    top = max(upstream["usage"], key=lambda u: u["used"] / u["allowed"])
    return f"{100 * top['used'] / top['allowed']:.0f}% of {LIMIT_LABELS[top['limit']].lower()}"


async def test_servers_page_shows_each_servers_calls_errors_bytes_and_budget_use(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    servers = (await api(svc, "/api/servers"))["servers"]
    budgets = {u["upstream"]: u for u in (await api(svc, "/api/budgets"))["upstreams"]}
    assert {s["upstream"]: s["errors"] for s in servers} == {"alpha": 0, "beta": 1}  # the seeded tool error
    page = await browser.open("/ui/servers")
    for server in servers:
        row = page.locator(f"#servers tr[data-server='{server['upstream']}']")
        assert count(await row.locator("[data-k=calls]").inner_text()) == server["calls"]
        assert count(await row.locator("[data-k=errors]").inner_text()) == server["errors"]
        for key in ("req_bytes_p50", "req_bytes_p95", "req_bytes_max", "resp_bytes_p50", "resp_bytes_p95",
                    "resp_bytes_max", "resp_bytes"):
            assert await exact(row.locator(f"[data-k={key}]")) == server[key], key
        tool_list = row.locator("[data-k=tool_list]")
        assert await tool_list.inner_text() == \
            f"{server['tool_list_tools']:,} tools, {server['tool_list_est_tokens']:,} tok"
        assert await exact(tool_list) == server["tool_list_bytes"] > 0
        shown = await row.locator("[data-k=budget_use]").inner_text()
        assert shown == budget_use(budgets[server["upstream"]]), server["upstream"]
    assert await page.locator("#servers tr[data-server='beta'] [data-k=budget_use]").inner_text() != "—"
    await accessible(page)
    await page.screenshot(path=shot("servers"), full_page=True)
    publish("servers")


async def test_server_page_charts_the_apis_buckets_of_every_call_and_lists_the_largest(
    seeded: tuple[Running, Browser]
) -> None:
    svc, browser = seeded
    detail = await api(svc, "/api/servers/beta")
    page = await browser.open("/ui/servers/beta")
    totals = page.locator("#server-totals")
    assert count(await totals.locator("[data-k=calls]").inner_text()) == detail["server"]["calls"]
    timeline = detail["timeline"]
    points = timeline["points"]
    assert sum(p["calls"] for p in points) == sum(b["count"] for b in detail["sizes"]) == detail["server"]["calls"]
    assert sum(p["resp_bytes"] for p in points) == detail["server"]["resp_bytes"]
    # The seeded calls span seconds (SPREAD): per-second buckets, several of them with calls, drawn as a line.
    assert timeline["bucket_seconds"] == 1 and len([p for p in points if p["calls"]]) >= 3
    assert "Result bytes per second" in await page.locator("#charts-title ~ figure figcaption").all_inner_texts()
    dots = await page.eval_on_selector_all("svg.chart circle.dot", """ds => ds.map(d => ({
        at: d.dataset.at, resp_bytes: Number(d.dataset.bytes), calls: Number(d.dataset.calls)}))""")
    assert [(dt.datetime.fromisoformat(d["at"]), d["resp_bytes"], d["calls"]) for d in dots] == [
        (dt.datetime.fromisoformat(p["at"]), p["resp_bytes"], p["calls"]) for p in points if p["calls"]]
    line = await page.get_attribute("svg.chart polyline.line", "points")
    assert len(str(line).split()) == len(points)  # every bucket, the empty ones at 0
    bars = await page.eval_on_selector_all("svg.chart rect.bar", """bs => bs.map(b => ({
        lo: Number(b.dataset.lo), hi: Number(b.dataset.hi), count: Number(b.dataset.count)}))""")
    assert bars == detail["sizes"]
    largest = detail["largest_results"][0]
    assert await page.locator(f"#largest tr[data-call='{largest['call_id']}'] th").inner_text() == largest["tool"]
    definitions = detail["tool_list_context"]["tools"]
    assert len(definitions) == detail["tool_list_context"]["tool_count"] > 0
    assert await page.locator("#context-tools tbody tr").count() == len(definitions)
    for tool in definitions:
        row = page.locator(f"#context-tools tr[data-tool='{tool['tool']}']")
        assert await exact(row.locator("[data-k=def_bytes]")) == tool["def_bytes"]
        assert count(await row.locator("[data-k=est_tokens]").inner_text()) == tool["est_tokens"] == \
            -(-tool["def_bytes"] // 4)
    await accessible(page)
    await page.screenshot(path=shot("server"), full_page=True)
    publish("server")


def shown_seconds(text: str) -> int:
    """'in 14 h 58 min (...)', 'in 5 min 3 s (...)', 'in 12.5 s (...)' -> seconds, as format.js ms() writes them."""
    words = text.removeprefix("in ").split(" (")[0].split()
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001}
    return int(sum(float(value) * units[unit] for value, unit in zip(words[::2], words[1::2], strict=True)))


async def test_budgets_page_shows_spend_per_window_denials_truncations_and_reset(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    budgets = {u["upstream"]: u for u in (await api(svc, "/api/budgets"))["upstreams"]}
    page = await browser.open("/ui/budgets")
    assert budgets["beta"]["day"]["truncated"] == 1 and budgets["alpha"]["day"]["denied"] == 1
    live = budgets["beta"]["sessions"]
    assert live["count"] == 1 and live["busiest"]["calls"] == 1 + len(SPREAD)  # the MCP-only session, left open
    for name in ("alpha", "beta"):
        section = page.locator(f"section[data-upstream='{name}']")
        for window, spend in (("day", budgets[name]["day"]), ("session", budgets[name]["sessions"]["busiest"])):
            row = section.locator(f"tr[data-window={window}]")
            for key in ("calls", "tokens", "denied", "truncated", "warned"):
                assert count(await row.locator(f"[data-k={key}]").inner_text()) == spend[key], (name, window, key)
            assert await exact(row.locator("[data-k=bytes]")) == spend["bytes"], (name, window)
        assert await section.locator("tr[data-window=session] th").inner_text() == \
            f"Busiest of {budgets[name]['sessions']['count']} live sessions"
        # The page's own call came later, and it shows minutes (or seconds) rounded down.
        resets = budgets[name]["day"]["resets_in_seconds"]
        reset = await section.locator("[data-k=resets_in]").inner_text()
        assert resets - 60 - 10 < shown_seconds(reset) <= resets, (reset, resets)
        assert reset.endswith(f"({budgets[name]['day']['reset_at']})")
    await accessible(page)
    await page.screenshot(path=shot("budgets"), full_page=True)


async def test_budgets_page_lists_each_upstreams_limits_and_actions_as_the_api_does(
        seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    budgets = {u["upstream"]: u for u in (await api(svc, "/api/budgets"))["upstreams"]}
    assert {name: u["limits"] for name, u in budgets.items()} == {
        "alpha": {"max_request_bytes": {"allowed": 400, "action": "deny"}},
        "beta": {"max_result_bytes": {"allowed": RESULT_LIMIT, "action": "truncate"},
                 "day_calls": {"allowed": 10, "action": "deny"}}}
    page = await browser.open("/ui/budgets")
    for name, upstream in budgets.items():
        rows = await page.locator(f"section[data-upstream='{name}'] table.limits tbody tr").all()
        shown = {str(await row.get_attribute("data-limit")): {
            "allowed": count(str(await row.locator("[data-k=allowed]").get_attribute("title"))),
            "action": await row.locator("[data-k=action]").inner_text()} for row in rows}
        assert shown == upstream["limits"], name
    labels = page.locator("section[data-upstream='beta'] table.limits tbody th")
    assert await labels.all_inner_texts() == ["Result size per call", "Calls per day"]
    assert await page.locator("section[data-upstream='beta'] tr[data-limit=max_result_bytes] [data-k=allowed]") \
        .inner_text() == "49 KiB"  # rounded: the exact figure is in the title


PAGES = ("/", "/ui/sessions", f"/ui/sessions/{CC_SESSION}", "/ui/servers", "/ui/servers/alpha", "/ui/budgets")


@pytest.mark.parametrize("path", PAGES)
async def test_no_page_requests_anything_off_the_machine(seeded: tuple[Running, Browser], browser_factory: Any,
                                                         path: str) -> None:
    """Each page on its own, in a fresh profile (nothing cached): every request it makes goes to this host."""
    svc, _ = seeded
    browser = await browser_factory(svc.base_url)
    try:
        await browser.open(path)
    finally:
        await browser.context.close()
    hosts = {urlparse(url).hostname for url in browser.requested if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, browser.requested
    assert any(urlparse(url).path.startswith("/api/") for url in browser.requested), browser.requested


def csp_sources(header: str) -> dict[str, list[str]]:
    return {directive.split()[0]: directive.split()[1:] for directive in header.split(";") if directive.strip()}


async def test_every_page_and_asset_sends_a_content_security_policy_of_self_only(
        seeded: tuple[Running, Browser]) -> None:
    svc, _ = seeded
    async with Http() as http:
        async with http.get(svc.base_url + "/ui/sessions") as response:
            shell = await response.text()
        assets = sorted(set(re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', shell)))
        assert any(a.endswith(".js") or ".js?" in a for a in assets) and any(".css" in a for a in assets)
        for path in (*PAGES, *assets):
            async with http.get(svc.base_url + path) as response:
                assert response.status == 200, path
                policy = csp_sources(response.headers["Content-Security-Policy"])
            assert policy["default-src"] == ["'none'"], path  # anything not named below: nowhere
            for directive in ("script-src", "style-src", "connect-src"):
                assert policy[directive] == ["'self'"], (path, directive)
            allowed = {source for sources in policy.values() for source in sources}
            assert allowed <= {"'self'", "'none'", "data:"}, (path, policy)  # no host, no *, no 'unsafe-inline'


# ----- bearer token ---------------------------------------------------------------------------------------


async def test_a_page_asks_for_the_token_then_keeps_it_for_the_tab(seeded: tuple[Running, Browser]) -> None:
    svc, browser = seeded
    page = await browser.open("/ui/budgets", token=None)
    assert await page.get_by_label("Token").count() == 1  # asked for, not an error
    await accessible(page)
    await page.goto(f"{svc.base_url}/ui/budgets?token={TOKEN}")
    await page.wait_for_selector("html[data-state=ready] section[data-upstream='alpha']", timeout=WAIT_MS)
    assert "token=" not in page.url
    await page.goto(svc.base_url + "/ui/servers")  # same tab, no token in the address: sessionStorage has it
    await page.wait_for_selector("html[data-state=ready] #servers", timeout=WAIT_MS)
