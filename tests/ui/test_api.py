"""The JSON API over the replayed s4 capture: every route answers, its OpenAPI description is valid and complete,
and bad input gets 400/404 rather than an error page."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from jsonschema import Draft202012Validator, ValidationError
from openapi_spec_validator import validate

from gateway.accounting import StoreRecorder
from gateway.budget_report import add_budget_routes
from gateway.budgets import Budgets
from gateway.config import BudgetConfig
from gateway.records import ToolListSnapshot
from store import costs
from store.client import Store
from store.writer import Writer
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session
from tests.gateway.service import running_service
from tests.store.test_queries_turns import Post, post, replay, writer  # noqa: F401 (fixtures)
from tests.ui.seed import CC_SESSION, ECHO_USE_ID, otlp_logs_now
from ui.api import ROUTES, add_api_routes
from ui.cli_report import render
from ui.openapi import SERVED_BY_GATEWAY, spec

SINCE = "since=2026-01-01T00:00:00Z"


def test_the_openapi_description_is_valid_and_describes_every_route() -> None:
    doc = spec()
    validate(doc)
    assert set(doc["paths"]) == {path for path, _ in ROUTES} | set(SERVED_BY_GATEWAY)
    app = web.Application()
    add_budget_routes(app, Budgets({}))
    assert {r.canonical for r in app.router.resources()} == set(SERVED_BY_GATEWAY)
    for path, item in doc["paths"].items():
        declared = {p["name"] for p in item["get"]["parameters"] if p["in"] == "path"} if "parameters" in item["get"] \
            else set()
        assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


@pytest.fixture
async def api(aiohttp_client: Any, post: Post, writer: Writer, store: Store) -> Any:  # noqa: F811
    session_id = await replay(post, writer, store)
    await store.insert("tool_lists", [  # a tool list, so the servers' tool-list context is not empty
        {"snapshot_id": "snap", "upstream": "capture", "taken_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
         "tool": tool, "exposed_name": f"capture__{tool}", "def_bytes": size, "server_bytes": 700, "tool_count": 2}
        for tool, size in (("echo", 300), ("big_payload", 400))])
    budgets = Budgets({"capture": BudgetConfig(day_calls=10, max_result_bytes=5000, tools={
        "big_payload": BudgetConfig(day_calls=2)})})
    budgets.admit("capture", "echo", "mcp-1", 120)  # some spend today
    app = web.Application()
    add_api_routes(app, store)
    add_budget_routes(app, budgets)
    client = await aiohttp_client(app)
    client.session_id = session_id
    return client


def validator(doc: dict[str, Any], path: str) -> Draft202012Validator:
    """JSON Schema (OpenAPI 3.1 uses 2020-12) of the route's 200 answer, its $refs resolved in `doc`."""
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": doc["components"]},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


async def test_every_route_answers_with_a_body_its_schema_accepts(api: Any) -> None:
    doc = spec()
    paths = {
        "/api/sessions": f"/api/sessions?{SINCE}", "/api/sessions/{id}": f"/api/sessions/{api.session_id}",
        "/api/usage": f"/api/usage?{SINCE}", "/api/servers": f"/api/servers?{SINCE}",
        "/api/servers/{name}": f"/api/servers/capture?{SINCE}", "/api/calls": f"/api/calls?{SINCE}&server=capture",
        "/api/openapi.json": "/api/openapi.json", "/api/budgets": "/api/budgets",
    }
    assert set(paths) == set(doc["paths"])
    bodies = {}
    for template, url in paths.items():
        response = await api.get(url)
        assert response.status == 200, (url, await response.text())
        body = await response.json()
        validator(doc, template).validate(body)
        bodies[template] = body
    assert bodies["/api/servers/{name}"]["tool_list_context"]["tools"]  # the nested schemas had rows to check
    assert bodies["/api/budgets"]["upstreams"][0]["tools"] and bodies["/api/sessions/{id}"]["startup"]
    assert [(s["session_id"], s["client"]) for s in bodies["/api/sessions"]["sessions"]] == [
        (api.session_id, {"name": "claude-code", "version": "2.1.332", "terminal_type": "dumb"})]
    detail = bodies["/api/sessions/{id}"]
    assert [t["match_method"] for t in detail["turns"] if t["turn_index"] > 0] == ["prompt_id", "prompt_id"]
    call = detail["turns"][-1]["calls"][0]
    for field in ("tool_use_id", "prompt_id", "upstream", "tool", "req_bytes_client", "resp_bytes_upstream",
                  "est_tokens", "observed_tokens", "carried_tokens", "status", "tie"):
        assert field in call, field
    assert bodies["/api/servers"]["servers"][0]["calls"] == 4
    assert bodies["/api/servers/{name}"]["largest_results"][0]["resp_bytes_upstream"] == 1000
    assert len(bodies["/api/calls"]["calls"]) == 4


async def test_every_tool_call_says_its_observed_tokens_and_an_untied_one_says_null(api: Any, store: Store) -> None:
    """Tied calls carry their tool result's observed and carried tokens (as in tool_costs); a call of the same MCP
    session tied to no result carries null for both, and the schema requires the two fields on every call."""
    one = (await store.query("SELECT * FROM calls FINAL ORDER BY started_at LIMIT 1"))[0]
    await store.insert("calls", [{**{k: v for k, v in one.items() if k != "inserted_at"}, "call_id": "untied",
                                  "tool_use_id": "", "tool": "x", "exposed_name": "x"}])
    detail = await (await api.get(f"/api/sessions/{api.session_id}")).json()
    validator(spec(), "/api/sessions/{id}").validate(detail)
    costs = {r["tool_use_id"]: (r["observed_tokens"], r["carried_tokens"]) for r in detail["tool_costs"]}
    calls = [c for t in detail["turns"] for c in t["calls"]] + detail["calls_outside_turns"]
    assert {c["call_id"]: (c["tie"], c["observed_tokens"], c["carried_tokens"]) for c in calls} == {
        **{c["call_id"]: ("tool_use_id", *costs[c["tool_use_id"]]) for c in calls if c["call_id"] != "untied"},
        "untied": ("unmatched", None, None)}
    assert len(calls) == 5 and all(isinstance(c["observed_tokens"], int) for c in calls if c["call_id"] != "untied")


# ----- the sessions list over hand-made rows: pages and filters -------------------------------------------

BASE = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


@dataclass(frozen=True)
class Seeded:
    """One session to store: Claude Code (two requests and one call tied by tool_use_id) or MCP-only (one call)."""

    session_id: str
    user: str
    upstream: str
    hour: int  # hours after BASE: sessions never overlap, so a time range holds whole sessions
    kind: str = "claude_code"

    @property
    def at(self) -> dt.datetime:
        return BASE + dt.timedelta(hours=self.hour)

    def requests(self) -> list[dict[str, Any]]:
        return [{"event_key": f"{self.session_id}-r{n}", "event_name": "api_request", "session_id": self.session_id,
                 "prompt_id": f"{self.session_id}-p", "user_email": self.user, "model": "claude-test",
                 "event_time": self.at + dt.timedelta(seconds=2 * n), "request_id": f"req-{self.session_id}-{n}",
                 "app_version": f"2.1.{330 + n}", "terminal_type": "vscode",  # updated between the two
                 "input_tokens": 100 * self.hour + n + 1, "output_tokens": 10 * self.hour + n,
                 "cache_read_tokens": 1000 * self.hour + 7 * n, "cache_creation_tokens": 50 + self.hour + n,
                 "cost_usd": 0.001 * (self.hour + 1) * (n + 1)} for n in range(2)] if self.kind == "claude_code" else []

    def result(self) -> list[dict[str, Any]]:
        return [{"event_key": f"{self.session_id}-t", "event_name": "tool_result", "session_id": self.session_id,
                 "prompt_id": f"{self.session_id}-p", "event_time": self.at + dt.timedelta(seconds=1),
                 "tool_name": "mcp_tool", "tool_use_id": f"toolu_{self.session_id}", "mcp_tool_name": "echo",
                 "mcp_server_name": "tollgate"}] if self.kind == "claude_code" else []

    def call(self) -> dict[str, Any]:
        start = self.at + dt.timedelta(milliseconds=500)
        return {"call_id": f"call-{self.session_id}", "method": "tools/call", "upstream": self.upstream,
                "tool": "echo", "exposed_name": f"{self.upstream}__echo", "mcp_session_id": f"m-{self.session_id}"
                if self.kind == "claude_code" else self.session_id,
                "tool_use_id": f"toolu_{self.session_id}" if self.kind == "claude_code" else "",
                "auth_identity": self.user, "status": "ok", "started_at": start, **self.client_info(),
                "ended_at": start + dt.timedelta(milliseconds=400), "resp_bytes_upstream": 100 * (self.hour + 1)}

    def client_info(self) -> dict[str, str]:
        """What the MCP client said in `initialize` (Claude Code's own is an older version than its telemetry's)."""
        return {"client_name": "claude-code", "client_version": "2.1.300"} if self.kind == "claude_code" else \
            {"client_name": "agent-sdk", "client_version": "0.9.1"}

    def last_at(self) -> dt.datetime:
        last: dt.datetime = max([r["event_time"] for r in self.requests()] or [self.call()["ended_at"]])
        return last

    def listed(self) -> dict[str, Any]:
        """The /api/sessions row this session should get, from the rows above."""
        requests = self.requests()
        return {"session_id": self.session_id, "kind": self.kind, "user": self.user, "servers": [self.upstream],
                "tool_calls": 1, "resp_bytes_upstream": self.call()["resp_bytes_upstream"],
                "requests": len(requests), "turns": 1 if requests else 0,
                **{k: sum(r[k] for r in requests) for k in KINDS},
                "total_tokens": sum(r[k] for r in requests for k in KINDS)}


SEEDED = (Seeded("cc-ann-1", "ann@example.com", "alpha", 0), Seeded("cc-bob", "bob@example.com", "beta", 1),
          Seeded("cc-ann-2", "ann@example.com", "beta", 2), Seeded("cc-cat", "cat@example.com", "alpha", 3),
          Seeded("mcp-agent", "agent", "beta", 4, kind="mcp"))


@pytest.fixture
async def many(aiohttp_client: Any, store: Store) -> Any:
    await store.insert("cc_api_requests", [r for s in SEEDED for r in s.requests()])
    await store.insert("cc_tool_results", [r for s in SEEDED for r in s.result()])
    await store.insert("calls", [s.call() for s in SEEDED])
    app = web.Application()
    add_api_routes(app, store)
    return await aiohttp_client(app)


def newest_first(sessions: Any) -> list[Seeded]:
    return sorted(sessions, key=lambda s: (-s.last_at().timestamp(), s.session_id))


def iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def listing(client: Any, **params: Any) -> Any:
    response = await client.get("/api/sessions", params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_the_sessions_list_pages_through_every_session_newest_first(many: Any) -> None:
    expected = [s.session_id for s in newest_first(SEEDED)]
    size = 2
    pages: list[list[str]] = []
    offset: int | None = 0
    while offset is not None:
        body = await listing(many, limit=size, offset=offset)
        assert (body["total"], body["limit"], body["offset"]) == (len(SEEDED), size, offset)
        pages.append([s["session_id"] for s in body["sessions"]])
        offset = body["next_offset"]
    assert pages == [expected[i:i + size] for i in range(0, len(expected), size)]
    past = await listing(many, limit=size, offset=len(SEEDED) + size)
    assert (past["sessions"], past["total"], past["next_offset"]) == ([], len(SEEDED), None)


async def test_the_sessions_list_sums_tokens_by_kind_per_session(many: Any) -> None:
    body = await listing(many)
    fields = ("session_id", "kind", "user", "servers", "tool_calls", "resp_bytes_upstream", "requests", "turns",
              *KINDS, "total_tokens")
    assert [{k: row[k] for k in fields} for row in body["sessions"]] == [s.listed() for s in newest_first(SEEDED)]


@pytest.mark.parametrize(("params", "keep"), [
    ({"user": "ann@example.com"}, lambda s: s.user == "ann@example.com"),
    ({"user": "agent"}, lambda s: s.user == "agent"),
    ({"server": "beta"}, lambda s: s.upstream == "beta"),
    ({"server": "alpha", "user": "cat@example.com"}, lambda s: s.upstream == "alpha" and s.user == "cat@example.com"),
    ({"since": iso(BASE + dt.timedelta(minutes=30)), "until": iso(BASE + dt.timedelta(hours=2, minutes=30))},
     lambda s: 1 <= s.hour <= 2),
    ({"since": iso(BASE + dt.timedelta(hours=3, minutes=30)), "limit": 1}, lambda s: s.hour >= 4),
])
async def test_the_sessions_list_filters_by_user_server_and_time_range(
        many: Any, params: dict[str, Any], keep: Any) -> None:
    body = await listing(many, **params)
    kept = [s.session_id for s in newest_first(SEEDED) if keep(s)]
    assert kept and [s["session_id"] for s in body["sessions"]] == kept[:params.get("limit", 50)]
    assert body["total"] == len(kept)


async def test_the_sessions_list_names_a_claude_code_sessions_client_from_its_latest_telemetry(many: Any) -> None:
    """A Claude Code session: app.version of its latest request and terminal.type, not its MCP clientInfo (which
    says nothing more, and only sessions with MCP calls have); an MCP session: its clientInfo."""
    body = await listing(many)
    validator(spec(), "/api/sessions").validate(body)
    assert {row["session_id"]: row["client"] for row in body["sessions"]} == {
        **{s.session_id: {"name": "claude-code", "version": "2.1.331", "terminal_type": "vscode"}
           for s in SEEDED if s.kind == "claude_code"},
        "mcp-agent": {"name": "agent-sdk", "version": "0.9.1", "terminal_type": ""}}


async def test_an_mcp_only_session_and_a_claude_code_session_both_fit_the_detail_schema(many: Any) -> None:
    check = validator(spec(), "/api/sessions/{id}")
    for seeded in (SEEDED[-1], SEEDED[0]):
        response = await many.get(f"/api/sessions/{seeded.session_id}")
        assert response.status == 200
        body = await response.json()
        check.validate(body)
        assert body["session"]["kind"] == seeded.kind
        if seeded.kind == "mcp":  # no telemetry: what the model saw of its result is unknown
            assert [(c["observed_tokens"], c["carried_tokens"]) for c in body["calls_outside_turns"]] == [(None, None)]


async def test_a_claude_code_session_starts_and_ends_in_the_list_where_its_page_says(api: Any) -> None:
    """From its first prompt (before any API request) to its last event, as the page's roll-up spans its turns."""
    (row,) = (await (await api.get(f"/api/sessions?{SINCE}")).json())["sessions"]
    detail = (await (await api.get(f"/api/sessions/{api.session_id}")).json())
    assert (row["started_at"], row["last_at"]) == (detail["session"]["started_at"], detail["session"]["ended_at"])
    assert row["started_at"] == detail["turns"][0]["started_at"] < detail["turns"][0]["ended_at"]


async def test_an_mcp_only_session_lasts_as_long_in_the_list_as_on_its_page(many: Any) -> None:
    seeded = SEEDED[-1]
    (row,) = [r for r in (await listing(many))["sessions"] if r["session_id"] == seeded.session_id]
    detail = (await (await many.get(f"/api/sessions/{seeded.session_id}")).json())["session"]
    call = seeded.call()
    assert (dt.datetime.fromisoformat(row["last_at"]) - dt.datetime.fromisoformat(row["started_at"])
            == call["ended_at"] - call["started_at"])
    assert (dt.datetime.fromisoformat(detail["ended_at"]) - dt.datetime.fromisoformat(detail["started_at"])
            == call["ended_at"] - call["started_at"])


async def test_the_sessions_list_counts_and_pages_past_the_per_query_row_cap(aiohttp_client: Any,
                                                                            store: Store) -> None:
    """More MCP-only sessions than one query may return (MAX_ROWS): the total and the last page are still right."""
    from store.queries_turns import MAX_ROWS

    n = MAX_ROWS + 7
    await store.command(f"""INSERT INTO calls (call_id, method, upstream, tool, mcp_session_id, status, started_at,
        ended_at) SELECT concat('c', toString(number)), 'tools/call', 'alpha', 'echo',
        concat('m', leftPad(toString(number), 6, '0')), 'ok', {{at:DateTime64(6, 'UTC')}} + number,
        {{at:DateTime64(6, 'UTC')}} + number FROM numbers({n})""", {"at": BASE})
    app = web.Application()
    add_api_routes(app, store)
    client = await aiohttp_client(app)
    tail = 3  # the last page holds the oldest sessions, newest first
    last = await listing(client, limit=5, offset=n - tail)
    assert last["total"] == n and last["next_offset"] is None
    assert [s["session_id"] for s in last["sessions"]] == [f"m{i:06d}" for i in reversed(range(tail))]


# ----- servers and calls over hand-made call rows: size quantiles and filters ---------------------------------

RESULT_SIZES = [100 * k for k in range(1, 21)] + [100_000]  # p50 = 1,100, p95 = 2,000 (not the max), max 100,000
REQUEST_SIZES = [10 * k for k in range(1, 22)]  # p50 = 110, p95 = 200, max 210


def sized_call(i: int) -> dict[str, Any]:
    """Call i of alpha, i seconds after BASE; sizes in a shuffled order (8 is prime to 21), so time order is not
    size order; every third call is MCP session m-1 (bound to Claude Code session cc-1), the rest m-2."""
    resp = RESULT_SIZES[i * 8 % 21]
    return {"call_id": f"sized-{i:02d}", "method": "tools/call", "upstream": "alpha",
            "tool": "big" if resp == 100_000 else "small", "exposed_name": "alpha__small",
            "mcp_session_id": "m-1" if i % 3 == 0 else "m-2", "cc_session_id": "cc-1" if i % 3 == 0 else "",
            "status": "ok", "started_at": BASE + dt.timedelta(seconds=i), "ended_at": BASE + dt.timedelta(seconds=i),
            "req_bytes_client": REQUEST_SIZES[i * 5 % 21], "resp_bytes_upstream": resp}


@pytest.fixture
async def sized(aiohttp_client: Any, store: Store) -> Any:
    beta = {**sized_call(0), "call_id": "beta-0", "upstream": "beta", "mcp_session_id": "m-3", "cc_session_id": "",
            "req_bytes_client": 7, "resp_bytes_upstream": 9}
    await store.insert("calls", [sized_call(i) for i in range(21)] + [beta])
    app = web.Application()
    add_api_routes(app, store)
    return await aiohttp_client(app)


async def test_the_servers_list_gives_sums_and_quantiles_of_request_and_result_sizes(sized: Any) -> None:
    body = await (await sized.get("/api/servers")).json()
    keys = ("upstream", "calls", "req_bytes", "req_bytes_p50", "req_bytes_p95", "req_bytes_max", "resp_bytes",
            "resp_bytes_p50", "resp_bytes_p95", "resp_bytes_max", "resp_bytes_max_tool", "sessions")
    assert [tuple(row[k] for k in keys) for row in body["servers"]] == [
        ("alpha", 21, 2_310, 110, 200, 210, 121_000, 1_100, 2_000, 100_000, "big", 2),
        ("beta", 1, 7, 7, 7, 7, 9, 9, 9, 9, "small", 1)]


@pytest.mark.parametrize(("query", "expected"), [
    ("session=m-1", [18, 15, 12, 9, 6, 3, 0]),
    ("session=cc-1", [18, 15, 12, 9, 6, 3, 0]),  # the bound Claude Code session finds the same calls
    ("session=m-2&limit=3", [20, 19, 17]),
    ("limit=2", [20, 19]),
    ("server=alpha&session=m-3", []),
    ("server=beta&session=m-3", ["beta-0"]),
])
async def test_the_calls_list_filters_by_server_and_either_session_id_newest_first_up_to_the_limit(
        sized: Any, query: str, expected: list[Any]) -> None:
    response = await sized.get(f"/api/calls?{query}")
    assert response.status == 200
    body = await response.json()
    assert [c["call_id"] for c in body["calls"]] == [e if isinstance(e, str) else f"sized-{e:02d}" for e in expected]


async def test_the_schemas_refuse_a_body_missing_a_field_or_with_a_wrong_type(api: Any) -> None:
    doc = spec()
    detail = await (await api.get(f"/api/sessions/{api.session_id}")).json()
    call = detail["turns"][-1]["calls"][0]
    broken = [
        {**detail, "turns": [{**detail["turns"][-1], "calls": [{k: v for k, v in call.items() if k != "tie"}]}]},
        {**detail, "calls_outside_turns": [{**call, "status": "exploded"}]},
        {**detail, "session": {**detail["session"], "tool_calls": "4"}},
        {**detail, "calls_outside_turns": [{k: v for k, v in call.items() if k != "observed_tokens"}]},
    ]
    for body in broken:
        with pytest.raises(ValidationError):
            validator(doc, "/api/sessions/{id}").validate(body)
    calls = await (await api.get(f"/api/calls?{SINCE}")).json()
    assert all(c["resp_bytes_client"] >= 0 for c in calls["calls"]) and calls["calls"]
    without_delivered = {"calls": [{k: v for k, v in calls["calls"][0].items() if k != "resp_bytes_client"}]}
    with pytest.raises(ValidationError):  # the delivered size is part of every call (`tollgate report calls`)
        validator(doc, "/api/calls").validate(without_delivered)
    listed = await (await api.get(f"/api/sessions?{SINCE}")).json()
    row = listed["sessions"][0]
    validator(doc, "/api/sessions").validate(listed)
    for bad in ({k: v for k, v in row.items() if k != "client"}, {**row, "client": {"name": "claude-code"}}):
        with pytest.raises(ValidationError):
            validator(doc, "/api/sessions").validate({**listed, "sessions": [bad]})


@pytest.mark.parametrize(("url", "status"), [
    ("/api/sessions/no-such-session", 404), ("/api/servers/no-such-server", 404),
    ("/api/sessions?limit=0", 400), ("/api/sessions?limit=x", 400), ("/api/calls?since=yesterday", 400),
    ("/api/servers/capture?largest=1000", 400), ("/api/calls?limit=0", 400), ("/api/calls?limit=1001", 400),
])
async def test_bad_requests_get_a_status_and_a_reason(api: Any, url: str, status: int) -> None:
    response = await api.get(url)
    assert response.status == status
    assert "error" in await response.json()


async def test_calls_of_a_server_that_is_none_is_a_404_as_the_servers_page_says(
        api: Any, aiohttp_client: Any, store: Store) -> None:
    for url in (f"/api/calls?server=nope&{SINCE}", f"/api/servers/nope?{SINCE}"):
        response = await api.get(url)
        assert (response.status, await response.json()) == (404, {"error": "no server 'nope'"}), url
    known = await api.get(f"/api/calls?server=capture&{SINCE}&until=2026-01-02T00:00:00Z")  # a server, no call then
    assert (known.status, await known.json()) == (200, {"calls": []})
    app = web.Application()
    add_api_routes(app, store, config=gateway_config(echo_upstream("configured")))  # configured, never called
    configured = await (await aiohttp_client(app)).get(f"/api/calls?server=configured&{SINCE}")
    assert (configured.status, await configured.json()) == (200, {"calls": []})


async def test_an_api_message_names_the_apis_parameter_not_a_cli_flag(api: Any) -> None:
    response = await api.get(f"/api/sessions/ffffff00?{SINCE}")
    error = (await response.json())["error"]
    assert response.status == 404
    assert error.endswith("(looked at sessions since 2026-01-01 00:00:00 UTC; an earlier `since` looks further back)")
    assert "--" not in error


async def test_assets_are_versioned_and_a_versioned_asset_is_kept_by_the_browser(aiohttp_client: Any) -> None:
    import re

    from ui.pages import add_page_routes

    app = web.Application()
    add_page_routes(app)
    client = await aiohttp_client(app)
    shell = await (await client.get("/ui/sessions/s-1")).text()
    version = re.search(r'src="/ui/static/app\.js\?v=(\w+)"', shell)
    assert version and f'href="/ui/static/session.js?v={version[1]}"' in shell
    assert '<link rel="preload" href="/api/sessions/s-1" as="fetch"' in shell
    app_js = await client.get(f"/ui/static/app.js?v={version[1]}")
    assert app_js.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert f'from "./session.js?v={version[1]}"' in await app_js.text()  # imports resolve to the preloaded URLs
    for stale in ("/ui/static/app.js", "/ui/static/app.js?v=old"):
        response = await client.get(stale)
        assert response.status == 200 and response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    assert (await client.get("/ui/static/app.js", headers={"If-None-Match": etag})).status == 304


async def test_an_unknown_api_path_or_method_answers_in_the_apis_json_error_shape(tmp_path: Any) -> None:
    from aiohttp import ClientSession as Http

    from tests.gateway.conftest import gateway_config
    from tests.gateway.service import running_service

    answers = []
    async with running_service(gateway_config(), tmp_path / "db") as svc, Http() as http:
        for method, path in (("GET", "/api/nope"), ("GET", "/api/sessions/x/y"), ("POST", "/api/sessions")):
            async with http.request(method, svc.base_url + path) as response:
                answers.append((response.status, response.content_type, await response.json(),
                                "GET" in response.headers.get("Allow", "")))
    assert answers == [
        (404, "application/json", {"error": "no API route '/api/nope' (see /api/openapi.json)"}, False),
        (404, "application/json", {"error": "no API route '/api/sessions/x/y' (see /api/openapi.json)"}, False),
        (405, "application/json", {"error": "POST is not allowed on '/api/sessions'"}, True),
    ]


async def test_the_served_api_refuses_every_method_but_get_and_head_with_405(tmp_path: Path) -> None:
    """Through the app `tollgate serve` runs (bearer guard, gateway routes, UI routes): read-only, so a write to any
    /api/* path is refused with 405 and `Allow: GET,HEAD`, while GET and HEAD of the same paths answer."""
    token = "api-test-token"
    paths = [path.replace("{id}", "no-such-session").replace("{name}", "alpha") for path in spec()["paths"]]
    async with running_service(gateway_config(echo_upstream("alpha"), auth_tokens=(token,)), tmp_path) as svc, \
            ClientSession(svc.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        refused, answered = {}, {}
        for path in paths:
            for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                async with http.request(method, path, json={}) as response:
                    refused[method, path] = (response.status, set(response.headers.get("Allow", "").split(",")))
            for method in ("GET", "HEAD"):
                async with http.request(method, path) as response:
                    answered[method, path] = response.status
    assert refused == dict.fromkeys(refused, (405, {"GET", "HEAD"}))
    assert len(refused) == 5 * len(paths) == 40
    assert answered == {(m, p): 404 if "no-such-session" in p else 200 for m, p in answered}


async def test_a_call_refused_before_routing_names_no_server_in_the_list_or_the_page(aiohttp_client: Any,
                                                                                     store: Store) -> None:
    """An unknown tool's protocol_error row has no upstream: the session counts it but lists no '' server."""
    await store.command("""INSERT INTO calls (call_id, method, upstream, tool, exposed_name, mcp_session_id, status,
        started_at, ended_at) VALUES
        ('c1', 'tools/call', 'alpha', 'echo', 'alpha__echo', 'm1', 'ok', {at:DateTime64(6, 'UTC')},
         {at:DateTime64(6, 'UTC')}),
        ('c2', 'tools/call', '', '', 'alpha__nope', 'm1', 'protocol_error', {at:DateTime64(6, 'UTC')} + 1,
         {at:DateTime64(6, 'UTC')} + 1)""", {"at": BASE})
    app = web.Application()
    add_api_routes(app, store)
    client = await aiohttp_client(app)
    (row,) = (await listing(client, since=iso(BASE - dt.timedelta(hours=1))))["sessions"]
    assert (row["tool_calls"], row["servers"]) == (2, ["alpha"])
    detail = await (await client.get("/api/sessions/m1")).json()
    session = detail["session"]
    assert (session["tool_calls"], session["tool_errors"], session["servers"]) == (2, 1, ["alpha"])
    assert [s["upstream"] for s in session["by_server"]] == ["alpha"]


# ----- tool-list context: charged only to sessions known to be connected, from the snapshot of their time ---------

S1 = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s1_protobuf" / "otlp" / "0001_logs.bin"
S1_SESSION = "a9d8ebe2-f51a-4435-afd2-496028308028"  # a capture against its own MCP server, "capture"


async def recorded_snapshot(into: Writer, upstream: str, taken_at: float, sizes: dict[str, int],
                            snapshot_id: str) -> None:
    """A tool-list snapshot written as the gateway writes one."""
    StoreRecorder(into).tool_list_changed(ToolListSnapshot(
        upstream, taken_at, [(tool, f"{upstream}__{tool}", size) for tool, size in sizes.items()], snapshot_id))
    await into.flush()


async def test_a_capture_never_connected_to_the_gateway_gets_an_unknown_tool_list_cost_in_the_api_and_report(
        aiohttp_client: Any, post: Post, writer: Writer, store: Store) -> None:  # noqa: F811
    """The real s1 capture (Claude Code against another MCP server, before this gateway had any session) with a
    tool list of the gateway recorded: the list is shown, its session cost is null (not 0) and the answer says
    why; the report reads 'unknown' for both figures and prints the reason under its table. Registered under the
    capture's own server name, the same session is known to be connected by its telemetry and is charged, and the
    report shows the figures and says they are an upper bound."""
    await post(S1.read_bytes())
    await recorded_snapshot(writer, "everything", time.time(), {"echo": 4000, "add": 344}, "snap-everything")
    for registered, connected in (("tollgate", None), ("capture", "telemetry")):
        app = web.Application()
        add_api_routes(app, store, config=gateway_config(registered_name=registered))
        client = await aiohttp_client(app)
        response = await client.get(f"/api/sessions/{S1_SESSION}")
        assert response.status == 200, await response.text()
        detail = await response.json()
        validator(spec(), "/api/sessions/{id}").validate(detail)
        requests = detail["session"]["requests"]
        assert requests > 0
        attribution = detail["tool_list_attribution"]
        assert (attribution["connected_by"], attribution["tools_deferred"]) == (connected, True)  # s1 ran ToolSearch
        (row,) = detail["tool_list_context"]
        assert (row["snapshot_id"], row["server_bytes"], row["est_tokens"]) == ("snap-everything", 4344, 1086)
        lines = render("session", detail, False).splitlines()
        title = lines.index("tool-list context per server (estimates)")
        header, shown, note = lines[title + 1], lines[title + 2].split(), lines[title + 3]
        assert "EST SESSION TOKENS (UP TO)" in header and "EST SESSION COST (UP TO)" in header
        assert note == "  " + attribution["note"]
        if connected is None:
            assert attribution["note"] == costs.NOT_CONNECTED
            assert (row["est_session_tokens"], row["est_session_cost_usd"]) == (None, None)
            assert shown == ["everything", "2", "4,344", "1,086", "unknown", "unknown"]  # not blank, not None
        else:
            assert attribution["note"] == costs.DEFERRED
            assert row["est_session_tokens"] == 1086 * requests and row["est_session_cost_usd"] > 0
            assert shown == ["everything", "2", "4,344", "1,086", f"{1086 * requests:,}",
                             f"${row['est_session_cost_usd']:.4f}"]


async def test_a_session_bound_through_a_real_call_is_charged_the_snapshot_in_effect_during_it(
        tmp_path: Path) -> None:
    """A call through the gateway tied exactly to the s2 capture's session: of the gateway's own snapshot at start,
    a larger one taken at the session's last request and a smaller one after it, the session is charged the one
    taken at its last request (not the latest), in every request."""
    async with running_service(gateway_config(echo_upstream("alpha")), tmp_path / "store") as svc:
        async with mcp_session(svc.mcp_url) as client:
            result = await client.call_tool("alpha__echo", {"text": "hello"},
                                            meta={"claudecode/toolUseId": ECHO_USE_ID})
            assert not result.is_error
        async with ClientSession() as http, http.post(svc.base_url + "/v1/logs", data=otlp_logs_now(),
                                                      headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200, await response.text()
        await svc.flushed()
        (last,) = await svc.query("SELECT max(event_time) AS at FROM cc_api_requests FINAL WHERE session_id = "
                                  "{s:String}", {"s": CC_SESSION})
        last_at = last["at"].timestamp()
        await recorded_snapshot(svc.service.writer, "alpha", last_at, {"echo": 8000}, "at-last-request")
        await recorded_snapshot(svc.service.writer, "alpha", last_at + 60, {"echo": 40}, "after")
        async with ClientSession() as http, http.get(f"{svc.base_url}/api/sessions/{CC_SESSION}") as response:
            assert response.status == 200, await response.text()
            detail = await response.json()
    validator(spec(), "/api/sessions/{id}").validate(detail)
    assert detail["session"]["ties"]["tool_use_id"] == 1
    assert detail["tool_list_attribution"]["connected_by"] == "mcp_session"
    requests = detail["session"]["requests"]
    (row,) = detail["tool_list_context"]
    assert (row["snapshot_id"], row["server_bytes"], row["est_tokens"]) == ("at-last-request", 8000, 2000)
    assert row["est_session_tokens"] == 2000 * requests > 0 and row["est_session_cost_usd"] > 0
    assert row["used_in_session"] is True


async def test_a_route_that_fails_unexpectedly_still_answers_json_and_logs_its_traceback(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The boundary every route goes through: a bug (here a route raising what no route should) is a JSON 500 that
    the UI and CLI can show, never aiohttp's plain-text page, and its traceback is in the log."""
    from ui.api import answer

    async def broken(*_: Any) -> tuple[int, Any]:
        raise OverflowError("date value out of range")

    status, body, headers = await answer(store, broken, {}, {})
    assert (status, headers) == (500, {})
    assert orjson.loads(body) == {"error": "internal error (OverflowError); the server log has the details"}
    (record,) = [r for r in caplog.records if r.name == "ui.api"]
    assert record.getMessage() == "API route broken failed" and record.exc_info is not None
