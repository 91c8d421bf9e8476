"""`tollgate report sessions|session|servers|calls|usage`: straight from the store when no server owns it, through
the running server's API when one does (the embedded directory is locked), as tables or JSON."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp import ClientSession, web

from gateway.cli import main, open_service
from gateway.config import load_config
from tests.ingest.conftest import capture, capture_doc, events_named
from tests.store.test_queries_turns import BATCHES, DATA, without_prompt_ids

SINCE = "2026-01-01T00:00:00Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "tollgate.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n\n[store]\ndsn = "chdb://{tmp_path / "chdb"}"\n'
                    "flush_seconds = 0.05\n")
    return path


async def serve(config_path: Path) -> tuple[web.AppRunner, Any]:
    """The real service of this config, listening on its configured port (the caller cleans the runner up)."""
    config = load_config(config_path)
    service = await open_service(config)
    runner = web.AppRunner(service.app, auto_decompress=False)
    await runner.setup()
    host, port = config.server.listen.split(":")
    await web.TCPSite(runner, host, int(port)).start()
    return runner, service


async def serve_and_seed(config_path: Path, *, strip_prompt_ids: bool = False) -> tuple[web.AppRunner, Any]:
    """The real service on the configured port, with the s4 capture posted to its own /v1/logs (without prompt.id,
    as an older client sends it, with `strip_prompt_ids`)."""
    config = load_config(config_path)
    runner, service = await serve(config_path)
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for name in BATCHES:
            body = (DATA / f"{name}.bin").read_bytes()
            async with http.post(f"http://{config.server.listen}/v1/logs",
                                 data=without_prompt_ids(body) if strip_prompt_ids else body,
                                 headers={"Content-Type": "application/x-protobuf"}) as response:
                assert response.status == 200
    await service.writer.flush()
    return runner, service


async def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["--log-level", "warning", "report", *argv])
    return code, capsys.readouterr().out



def add_upstream(config_path: Path, name: str, server: Path, budget: str = "") -> None:
    """Append a stdio upstream running the fixture `server` as `name`, with a [budget] table when given."""
    table = f"[upstreams.{name}.budget]\n{budget}\n" if budget else ""
    config_path.write_text(config_path.read_text() + (
        f'\n[upstreams.{name}]\ncommand = {orjson.dumps(sys.executable).decode()}\n'
        f'args = [{orjson.dumps(str(server)).decode()}, "--name", "{name}"]\n' + table))

async def test_reports_read_through_the_running_server_then_straight_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    try:
        code, out = await report(capsys, "sessions", "--config", str(config), "--since", SINCE, "--json")
        assert code == 0
        sessions = orjson.loads(out)["sessions"]
        session_id = sessions[0]["session_id"]
        code, table = await report(capsys, "session", session_id, "--config", str(config))
        assert code == 0 and f"session {session_id}" in table and "turns matched by prompt_id" in table
        assert table.count("prompt_id ") >= 2  # one row per turn in the turn table
    finally:
        await runner.cleanup()
        await service.close()

    code, direct = await report(capsys, "session", session_id, "--config", str(config))
    assert code == 0 and direct == table
    for command in ("sessions", "usage"):  # servers and calls: test_report_servers_and_calls_...
        code, out = await report(capsys, command, "--config", str(config), "--since", SINCE)
        assert code == 0, command
        assert out.splitlines()[0].split()[0] == "SESSION", out
    code, _ = await report(capsys, "session", "no-such-session", "--config", str(config))
    assert code == 1


async def test_report_session_of_a_client_without_prompt_ids_says_turn_order_in_every_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config, strip_prompt_ids=True)
    await runner.cleanup()
    await service.close()

    code, out = await report(capsys, "sessions", "--config", str(config), "--since", SINCE)
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split()[3:5] == ["TURNS", "MATCH"] and row.split()[4:6] == ["2", "turn_order"]
    assert header.split()[-1] == "CLIENT" and row.endswith("  claude-code/2.1.332 (dumb)")  # the capture's telemetry
    session_id = row.split()[0]
    code, text = await report(capsys, "session", session_id, "--config", str(config))
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == f"session {session_id} (claude_code; turns matched by turn_order)"
    start = lines.index("turns") + 2
    turns = lines[start:lines.index("", start)]
    assert [t.split()[:2] for t in turns] == [["1", "turn_order"], ["2", "turn_order"]]  # and no prompt id
    code, out = await report(capsys, "session", session_id, "--config", str(config), "--json")
    doc = orjson.loads(out)
    assert [(t["turn_index"], t["match_method"], t["prompt_id"]) for t in doc["turns"]] == [
        (1, "turn_order", ""), (2, "turn_order", "")]


S1 = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s1_protobuf" / "otlp" / "0001_logs.bin"
S1_SESSION = "a9d8ebe2-f51a-4435-afd2-496028308028"  # Claude Code against its own MCP server, "capture"


@pytest.mark.parametrize(("registered", "connected"), [("tollgate", False), ("capture", True)])
async def test_report_session_gives_a_tool_list_cost_up_to_its_figure_or_unknown_live_and_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], registered: str, connected: bool
) -> None:
    """The s1 capture and a tool list of the gateway: under the default registered name the capture never used
    this gateway, so `report session` reads 'unknown' (not blank, not None) for its session tokens and cost and
    says why; registered as the capture's own server name, its telemetry shows it connected and the figures are
    given as an upper bound. The same through the running server and straight from the store (which reads the
    registered name from the config as the server does), and in the JSON (null when unknown)."""
    from gateway.accounting import StoreRecorder
    from gateway.records import ToolListSnapshot
    from store.costs import NOT_CONNECTED

    config_path = write_config(tmp_path, free_port())
    text = config_path.read_text()
    config_path.write_text(text.replace("[server]\n", f'[server]\nregistered_name = "{registered}"\n'))
    config = load_config(config_path)
    runner, service = await serve(config_path)
    try:
        async with ClientSession() as http, http.post(f"http://{config.server.listen}/v1/logs",
                                                      data=S1.read_bytes(),
                                                      headers={"Content-Type": "application/x-protobuf"}) as response:
            assert response.status == 200
        StoreRecorder(service.writer).tool_list_changed(ToolListSnapshot(
            "everything", dt.datetime.now(dt.UTC).timestamp(), [("echo", "everything__echo", 4000)], "snap-1"))
        await service.writer.flush()
        code, live = await report(capsys, "session", S1_SESSION, "--config", str(config_path))
        assert code == 0
    finally:
        await runner.cleanup()
        await service.close()
    code, direct = await report(capsys, "session", S1_SESSION, "--config", str(config_path))
    assert code == 0 and direct == live
    code, out = await report(capsys, "session", S1_SESSION, "--config", str(config_path), "--json")
    doc = orjson.loads(out)
    (row,) = doc["tool_list_context"]
    attribution = doc["tool_list_attribution"]
    assert attribution["connected_by"] == ("telemetry" if connected else None)
    lines = live.splitlines()
    title = lines.index("tool-list context per server (estimates)")
    header, cells, note = lines[title + 1].split("  "), lines[title + 2].split(), lines[title + 3]
    assert [h.strip() for h in header if h.strip()][-2:] == ["EST SESSION TOKENS (UP TO)", "EST SESSION COST (UP TO)"]
    assert cells[:4] == ["everything", "1", "4,000", "1,000"]
    assert note == f"  {attribution['note']}"
    if connected:
        assert row["est_session_tokens"] == 1000 * doc["session"]["requests"] > 0
        assert cells[4:] == [f"{row['est_session_tokens']:,}", f"${row['est_session_cost_usd']:.4f}"]
        assert attribution["note"].startswith("up to: ")
    else:
        assert (row["est_session_tokens"], row["est_session_cost_usd"]) == (None, None)
        assert cells[4:] == ["unknown", "unknown"] and "None" not in live
        assert attribution["note"] == NOT_CONNECTED


async def test_report_budgets_reads_the_running_server_then_rebuilds_the_same_view_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import aiohttp

    from tests.gateway.conftest import mcp_session
    from tests.gateway.test_budgets_e2e import BUDGET_SERVER

    port = free_port()
    config_path = write_config(tmp_path, port)
    add_upstream(config_path, "b", BUDGET_SERVER, 'day_calls = 2\ntimezone = "Asia/Kolkata"')
    config = load_config(config_path)
    service = await open_service(config)
    runner = web.AppRunner(service.app, auto_decompress=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with mcp_session(f"http://127.0.0.1:{port}/mcp") as client:
            denied = [(await client.call_tool("b__echo", {"text": "t"})).is_error for _ in range(3)]
        assert denied == [False, False, True]
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/budgets") as response:
            api = await response.json()
        code, out = await report(capsys, "budgets", "--config", str(config_path), "--json")
        assert code == 0
        live = orjson.loads(out)
        code, text = await report(capsys, "budgets", "--config", str(config_path))
        assert code == 0
    finally:
        await runner.cleanup()
        await service.close()

    (api_b,) = api["upstreams"]
    zone = ZoneInfo("Asia/Kolkata")
    generated = dt.datetime.fromisoformat(api["generated_at"])
    midnight = dt.datetime.combine(generated.astimezone(zone).date() + dt.timedelta(days=1), dt.time(0), zone)
    assert api_b["day"]["reset_at"] == midnight.isoformat()
    left = int(midnight.timestamp() - generated.timestamp())  # generated_at is cut to the second, so 1 s less
    assert left - 1 <= api_b["day"]["resets_in_seconds"] <= left
    assert live["source"] == f"http://127.0.0.1:{port}/api/budgets"
    (live_b,) = live["upstreams"]
    assert (live_b["day"]["calls"], live_b["day"]["denied"], live_b["day"]["reset_at"]) == (2, 1, midnight.isoformat())
    assert "b: day_calls 2 (deny)" in text and "today: 2 calls" in text and "1 denied" in text
    assert f"day resets at {midnight.isoformat()} (Asia/Kolkata)" in text
    assert f"(source: http://127.0.0.1:{port}/api/budgets)" in text

    code, out = await report(capsys, "budgets", "--config", str(config_path), "--json")  # no server: the store
    assert code == 0
    rebuilt = orjson.loads(out)
    assert rebuilt["source"].startswith("chdb://")
    (rebuilt_b,) = rebuilt["upstreams"]
    assert {k: rebuilt_b["day"][k] for k in ("calls", "bytes", "denied", "reset_at")} == {
        k: live_b["day"][k] for k in ("calls", "bytes", "denied", "reset_at")}
    code, text = await report(capsys, "budgets", "--config", str(config_path))
    assert code == 0 and "today: 2 calls" in text and "(source: chdb://" in text


async def test_report_session_shows_a_tied_tool_call_in_its_table_and_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.store.test_queries_turns import capture_events

    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    result = next(e for name in BATCHES for e in capture_events(name)
                  if e.get("event.name") == "tool_result" and e["tool_name"] == "mcp_tool")
    tool = orjson.loads(result["tool_parameters"])["mcp_tool_name"]
    ended = dt.datetime.fromtimestamp(result["time"] / 1e9, dt.UTC) - dt.timedelta(milliseconds=3)
    call = {"call_id": "cli-call", "method": "tools/call", "upstream": "capture", "tool": tool, "exposed_name": tool,
            "mcp_session_id": "mcp-cli", "tool_use_id": result["tool_use_id"], "status": "ok",
            "started_at": ended - dt.timedelta(milliseconds=int(result["duration_ms"]) - 6), "ended_at": ended,
            "req_bytes_client": 321, "resp_bytes_upstream": 4567, "est_tokens": 1142}
    service.writer.submit("calls", [call])  # as the gateway records a call
    await service.writer.flush()
    try:
        code, text = await report(capsys, "session", result["session.id"], "--config", str(config))
        assert code == 0
        code, out = await report(capsys, "session", result["session.id"], "--config", str(config), "--json")
        assert code == 0
    finally:
        await runner.cleanup()
        await service.close()

    doc = orjson.loads(out)
    [(turn, got)] = [(t, c) for t in doc["turns"] for c in t["calls"]]
    assert (got["call_id"], got["tie"], got["prompt_id"], turn["prompt_id"]) == (
        call["call_id"], "tool_use_id", result["prompt.id"], result["prompt.id"])
    lines = text.splitlines()
    header, row = lines[lines.index("tool calls") + 1:lines.index("tool calls") + 3]
    assert header.split()[:3] == ["TURN", "SERVER", "TOOL"]
    assert row.split() == [str(turn["turn_index"]), "capture", tool, "ok", f"{call['req_bytes_client']:,}",
                           f"{call['resp_bytes_upstream']:,}", "0", f"{call['est_tokens']:,}",
                           f"{got['observed_tokens']:,}", f"{got['carried_tokens']:,}", "tool_use_id", "1",
                           result["tool_use_id"]]


async def post_call(http: Any, url: str, session_id: str, request_id: int, tool: str, arguments: dict[str, Any]) -> int:
    """One tools/call over plain HTTP; returns the size of the request body sent."""
    from gateway import jsonrpc
    from tests.gateway.test_downstream import JSON_HEADERS

    body = orjson.dumps(jsonrpc.request_body(request_id, "tools/call", {"name": tool, "arguments": arguments}))
    async with http.post(url, data=body, headers={**JSON_HEADERS, "Mcp-Session-Id": session_id}) as response:
        assert response.status == 200 and "result" in orjson.loads(await response.read())
    return len(body)


# The reports' size quantiles are t-digest estimates (store/rollup.py: mergeable across days), taken here
# straight from the stored calls, apart from the rollup and the report code.
QUANTILES_SQL = """SELECT upstream, quantilesTDigest(0.5, 0.95)(req_bytes_client) AS req,
                          quantilesTDigest(0.5, 0.95)(resp_bytes_upstream) AS resp
                   FROM calls FINAL GROUP BY upstream"""


def expected_servers(calls: list[dict[str, Any]], tool_lists: dict[str, int],
                     quantiles: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What /api/servers should say, computed here from the stored call rows, size quantiles and tool-list sizes."""
    from store.statuses import ERRORS

    out = []
    for upstream in sorted({c["upstream"] for c in calls}):
        mine = [c for c in calls if c["upstream"] == upstream]
        req, resp = [c["req_bytes_client"] for c in mine], [c["resp_bytes_upstream"] for c in mine]
        out.append({
            "upstream": upstream, "calls": len(mine), "errors": sum(c["status"] in ERRORS for c in mine),
            "sessions": len({c["mcp_session_id"] for c in mine}), "req_bytes": sum(req),
            "req_bytes_p50": int(quantiles[upstream]["req"][0]), "req_bytes_p95": int(quantiles[upstream]["req"][1]),
            "req_bytes_max": max(req), "resp_bytes": sum(resp), "resp_bytes_p50": int(quantiles[upstream]["resp"][0]),
            "resp_bytes_p95": int(quantiles[upstream]["resp"][1]), "resp_bytes_max": max(resp),
            "resp_bytes_max_tool": max(mine, key=lambda c: c["resp_bytes_upstream"])["tool"],
            "est_tokens": sum(c["est_tokens"] for c in mine), "tool_list_bytes": tool_lists[upstream],
            "tool_list_est_tokens": -(-tool_lists[upstream] // 4)})
    return out


async def test_report_servers_and_calls_show_the_gateways_own_calls_exactly_live_and_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import aiohttp

    from tests.gateway.conftest import ECHO_SERVER
    from tests.gateway.test_downstream import open_session

    port = free_port()
    config_path = write_config(tmp_path, port)
    for name in ("a", "b"):
        add_upstream(config_path, name, ECHO_SERVER)
    service = await open_service(load_config(config_path))
    runner = web.AppRunner(service.app, auto_decompress=False)
    await runner.setup()
    url = f"http://127.0.0.1:{port}/mcp"
    argv = ("--config", str(config_path))
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as http:
            first, second = await open_session(http, url), await open_session(http, url)
            sent = [await post_call(http, url, first, 1, "a__blob", {"n": 1000}),
                    await post_call(http, url, first, 2, "a__blob", {"n": 4000}),
                    await post_call(http, url, first, 3, "a__utf8", {}),
                    await post_call(http, url, second, 1, "b__blob", {"n": 300}),
                    await post_call(http, url, second, 2, "a__blob", {"n": 2500}),
                    await post_call(http, url, second, 4, "a__echo", {"text": "é" * 300}),
                    await post_call(http, url, first, 4, "a__blob", {"n": "many"}),  # invalid: a tool error
                    await post_call(http, url, second, 3, "b__whoami", {})]
        await service.writer.flush()
        stored = await service.store.query("SELECT * FROM calls FINAL ORDER BY started_at")
        lists = await service.store.query(
            "SELECT upstream, argMax(server_bytes, taken_at) AS bytes FROM tool_lists FINAL GROUP BY upstream")
        quantiles = {row["upstream"]: row for row in await service.store.query(QUANTILES_SQL)}
        live = [await report(capsys, *command, *argv) for command in report_commands(first)]
        live_more = [await report_all(capsys, *command, *argv) for command in more_commands(first)]
    finally:
        await runner.cleanup()
        await service.close()

    assert [c["req_bytes_client"] for c in stored] == sent
    assert [(c["tool"], c["status"]) for c in stored][-2:] == [("blob", "tool_error"), ("whoami", "ok")]
    servers = expected_servers(stored, {row["upstream"]: row["bytes"] for row in lists}, quantiles)
    [(code, servers_json), (_, servers_table), (_, detail_json), (_, calls_json), (_, calls_table)] = live
    assert code == 0
    got = orjson.loads(servers_json)["servers"]
    assert [{k: row[k] for k in servers[0]} for row in got] == servers
    assert [line.split() for line in servers_table.splitlines()[1:]] == [
        [s["upstream"], *(f"{s[k]:,}" for k in ("calls", "errors", "req_bytes", "req_bytes_p50", "req_bytes_p95",
                                                 "req_bytes_max", "resp_bytes", "resp_bytes_p50", "resp_bytes_p95",
                                                 "resp_bytes_max")),
         s["resp_bytes_max_tool"], *(f"{s[k]:,}" for k in ("est_tokens", "tool_list_bytes", "tool_list_est_tokens"))]
        for s in servers]

    detail = orjson.loads(detail_json)
    on_a = [c for c in stored if c["upstream"] == "a"]
    assert {k: detail["server"][k] for k in servers[0] if not k.startswith("tool_list")} == {
        k: v for k, v in servers[0].items() if not k.startswith("tool_list")}
    per_tool = {t: [c["resp_bytes_upstream"] for c in on_a if c["tool"] == t] for t in ("blob", "echo", "utf8")}
    assert [(t["tool"], t["calls"], t["resp_bytes"], t["resp_bytes_max"]) for t in detail["tools"]] == sorted(
        ((tool, len(sizes), sum(sizes), max(sizes)) for tool, sizes in per_tool.items()), key=lambda t: -t[2])
    assert [r["call_id"] for r in detail["largest_results"]] == [
        c["call_id"] for c in sorted(on_a, key=lambda c: -c["resp_bytes_upstream"])]
    assert detail["tool_list_context"]["server_bytes"] == servers[0]["tool_list_bytes"]

    newest = [c for c in reversed(stored) if c["upstream"] == "a" and c["mcp_session_id"] == first][:2]
    got_calls = orjson.loads(calls_json)["calls"]
    assert [(c["call_id"], c["tool"], c["status"], c["req_bytes_client"], c["resp_bytes_upstream"])
            for c in got_calls] == [(c["call_id"], c["tool"], c["status"], c["req_bytes_client"],
                                     c["resp_bytes_upstream"]) for c in newest]
    assert [line.split()[2:] for line in calls_table.splitlines()[1:]] == [
        ["a", "tool", c["tool"], c["status"], f"{c['req_bytes_client']:,}", f"{c['resp_bytes_upstream']:,}",
         f"{c['resp_bytes_client']:,}", f"{c['est_tokens']:,}", first[:12] + ".."] for c in newest]

    assert_more_reports(live_more, servers[0], on_a, calls_json)
    direct = [await report(capsys, *command, *argv) for command in report_commands(first)]  # no server: the store
    assert direct == live
    assert [await report_all(capsys, *command, *argv) for command in more_commands(first)] == live_more


def report_commands(session: str) -> list[tuple[str, ...]]:
    """The servers and calls reports the test reads live and then from the store."""
    calls = ("calls", "--server", "a", "--session", session, "--limit", "2")
    return [("servers", "--json"), ("servers",), ("servers", "a", "--json"), (*calls, "--json"), calls]


def more_commands(session: str) -> list[tuple[str, ...]]:
    """One server's table, calls by the start of a session id (as tables cut it), calls of an unknown server."""
    return [("servers", "a"), ("calls", "--server", "a", "--session", session[:12], "--limit", "2", "--json"),
            ("calls", "--server", "nope"), ("servers", "nope")]


async def report_all(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """A report's exit code, standard output and standard error."""
    code = await asyncio.to_thread(main, ["--log-level", "warning", "report", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_more_reports(got: list[tuple[int, str, str]], server: dict[str, Any], on_a: list[dict[str, Any]],
                        calls_json: str) -> None:
    """`report servers a` fills every column the list's row for `a` fills (its tool-list size too) and the request
    bytes of each largest result; `--session` takes a prefix; an unknown server errors as `report servers` does."""
    (code, detail, _), by_prefix, unknown_calls, unknown_server = got
    assert code == 0
    (_, totals), (largest_title, largest_header, *largest) = (section.splitlines() for section in
                                                              detail.split("\n\n")[::2])
    assert largest_title == "largest results"
    assert totals.split() == [
        server["upstream"], *(f"{server[k]:,}" for k in ("calls", "errors", "req_bytes", "req_bytes_p50",
                                                          "req_bytes_p95", "req_bytes_max", "resp_bytes",
                                                          "resp_bytes_p50", "resp_bytes_p95", "resp_bytes_max")),
        server["resp_bytes_max_tool"], *(f"{server[k]:,}" for k in ("est_tokens", "tool_list_bytes",
                                                                     "tool_list_est_tokens"))]
    assert re.split(r"\s{2,}", largest_header)[5:7] == ["REQ BYTES", "UPSTREAM BYTES"]
    assert [row.split()[2:9] for row in largest] == [
        ["a", "tool", c["tool"], c["status"], f"{c['req_bytes_client']:,}", f"{c['resp_bytes_upstream']:,}",
         f"{c['est_tokens']:,}"] for c in sorted(on_a, key=lambda c: -c["resp_bytes_upstream"])]
    assert by_prefix[0] == 0 and orjson.loads(by_prefix[1]) == orjson.loads(calls_json)
    assert unknown_server == (1, "", "tollgate: report servers: no server 'nope'\n")
    assert unknown_calls == (1, "", "tollgate: report calls: no server 'nope'\n")


async def test_report_calls_shows_a_truncated_result_at_the_upstreams_size_and_at_the_size_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import aiohttp

    from gateway import jsonrpc
    from gateway.budgets import ENVELOPE_BYTES
    from tests.gateway.conftest import ECHO_SERVER
    from tests.gateway.test_downstream import JSON_HEADERS, open_session

    port = free_port()
    config_path = write_config(tmp_path, port)
    add_upstream(config_path, "a", ECHO_SERVER, 'max_result_bytes = 2000\naction = "truncate"')
    service = await open_service(load_config(config_path))
    runner = web.AppRunner(service.app, auto_decompress=False)
    await runner.setup()
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as http:
            session = await open_session(http, url)
            body = orjson.dumps(jsonrpc.request_body(1, "tools/call", {"name": "a__blob", "arguments": {"n": 10000}}))
            async with http.post(url, data=body, headers={**JSON_HEADERS, "Mcp-Session-Id": session}) as response:
                assert response.content_type == "application/json"  # the body is the JSON-RPC message alone
                delivered = len(await response.read())
        await service.writer.flush()
        code, out = await report(capsys, "calls", "--config", str(config_path), "--json")
        assert code == 0
        code, text = await report(capsys, "calls", "--config", str(config_path))
        assert code == 0
    finally:
        await runner.cleanup()
        await service.close()

    (call,) = orjson.loads(out)["calls"]
    assert (call["status"], call["resp_bytes_client"]) == ("truncated", delivered)
    assert call["resp_bytes_upstream"] > 10000 > 2000 + ENVELOPE_BYTES >= delivered  # the result fits 2000
    header, row = text.splitlines()
    assert re.split(r"\s{2,}", header)[5:9] == ["REQ BYTES", "UPSTREAM BYTES", "DELIVERED BYTES", "EST TOKENS"]
    assert row.split()[3:9] == ["tool", "blob", "truncated", f"{len(body):,}", f"{call['resp_bytes_upstream']:,}",
                                f"{delivered:,}"]


async def report_session(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["--log-level", "warning", "report", "session", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_report_session_takes_a_unique_id_prefix_and_names_the_candidates_of_an_ambiguous_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    now = dt.datetime.now(dt.UTC)
    mcp_ids = ["9093e8c0" + "1" * 24, "9093e8c0" + "2" * 24, "77aa01bb" + "3" * 24]
    service.writer.submit("calls", [  # three MCP-only sessions, one call each, the first two alike in 8 characters
        {"call_id": f"prefix-{n}", "method": "tools/call", "upstream": "a", "tool": "echo", "exposed_name": "a__echo",
         "mcp_session_id": mcp_id, "status": "ok", "started_at": now - dt.timedelta(minutes=n),
         "ended_at": now - dt.timedelta(minutes=n)} for n, mcp_id in enumerate(mcp_ids)])
    await service.writer.flush()
    argv = ("--config", str(config))
    before = ("--since", SINCE, "--until", "2026-02-01T00:00:00Z")  # months before the capture
    try:
        listed = orjson.loads((await report(capsys, "sessions", *argv, "--since", SINCE, "--json"))[1])["sessions"]
        (cc_session,) = [s["session_id"] for s in listed if s["kind"] == "claude_code"]
        cases = [("77aa01bb", "--json"), (cc_session[:8], "--since", SINCE), (cc_session[:8], *before),
                 ("9093e8c0",), ("9093e",)]
        live = [await report_session(capsys, *case, *argv) for case in cases]
    finally:
        await runner.cleanup()
        await service.close()

    assert live[0][0] == 0, live[0]
    assert orjson.loads(live[0][1])["session"]["session_id"] == mcp_ids[2]
    code, table, _ = live[1]
    assert code == 0, live[1]
    assert table.splitlines()[0].startswith(f"session {cc_session} (claude_code;")
    code, _, err = live[2]
    assert code == 1 and err == (f"tollgate: report session: no session '{cc_session[:8]}', and no session id "
                                 "starts with it (looked at sessions since 2026-01-01 00:00:00 UTC; an earlier --since "
                                 "looks further back)\n")
    assert live[3] == (2, "", f"tollgate: report session: '9093e8c0' is the start of 2 session ids: {mcp_ids[0]}, "
                              f"{mcp_ids[1]}; give more characters\n")
    assert live[4] == (1, "", "tollgate: report session: no session '9093e' (an id prefix needs at least 6 "
                              "characters)\n")
    direct = [await report_session(capsys, *case, *argv) for case in cases]  # no server: the store, same answers
    assert direct == live


async def test_report_calls_takes_a_session_id_prefix_as_report_session_does_and_errors_on_an_unknown_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report calls --session` takes the start of one session id (6+ characters) and names the candidates of an
    ambiguous one; `--server` naming no upstream that has calls, a tool list or a config entry is an error, as in
    `report servers NAME`, while a configured one with no calls yet is an empty table."""
    from tests.gateway.conftest import ECHO_SERVER

    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    now = dt.datetime.now(dt.UTC)
    mcp_ids = ["9093e8c0" + "1" * 24, "9093e8c0" + "2" * 24, "77aa01bb" + "3" * 24]
    service.writer.submit("calls", [
        {"call_id": f"prefix-{n}", "method": "tools/call", "upstream": "a", "tool": "echo", "exposed_name": "a__echo",
         "mcp_session_id": mcp_id, "status": "ok", "started_at": now - dt.timedelta(minutes=n),
         "ended_at": now - dt.timedelta(minutes=n)} for n, mcp_id in enumerate(mcp_ids)])
    await service.writer.flush()
    argv = ("--config", str(config))
    cases = [("calls", "--session", "77aa01bb", "--json"), ("calls", "--session", "9093e8c0" + "1" * 4, "--json"),
             ("calls", "--session", "9093e8c0"), ("calls", "--session", "9093e"),
             ("calls", "--session", "ffffff", "--since", SINCE),
             ("calls", "--server", "nope"), ("servers", "nope"), ("calls", "--server", "a", "--json")]
    try:
        live = [await report_all(capsys, *case, *argv) for case in cases]
    finally:
        await runner.cleanup()
        await service.close()

    def call_ids(result: tuple[int, str, str]) -> list[str]:
        assert result[0] == 0, result
        return [c["call_id"] for c in orjson.loads(result[1])["calls"]]

    assert call_ids(live[0]) == ["prefix-2"] and call_ids(live[1]) == ["prefix-0"]
    assert live[2] == (2, "", f"tollgate: report calls: '9093e8c0' is the start of 2 session ids: {mcp_ids[0]}, "
                              f"{mcp_ids[1]}; give more characters\n")
    assert live[3] == (1, "", "tollgate: report calls: no session '9093e' (an id prefix needs at least 6 "
                              "characters)\n")
    assert live[4] == (1, "", "tollgate: report calls: no session 'ffffff', and no session id starts with it "
                              "(looked at sessions since 2026-01-01 00:00:00 UTC; an earlier --since looks further "
                              "back)\n")
    assert live[5] == (1, "", "tollgate: report calls: no server 'nope'\n")
    assert live[6] == (1, "", "tollgate: report servers: no server 'nope'\n")
    assert call_ids(live[7]) == ["prefix-0", "prefix-1", "prefix-2"]
    assert [await report_all(capsys, *case, *argv) for case in cases] == live  # no server: the store
    add_upstream(config, "c", ECHO_SERVER)  # configured, never started: no call and no tool list
    assert await report_all(capsys, "calls", "--server", "c", "--json", *argv) == (0, '{\n  "calls": []\n}\n', "")


async def test_a_time_range_that_ends_before_it_starts_is_refused_by_every_report_and_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import aiohttp

    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    backwards = {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01"}
    said = "since must be earlier than until (since '2026-02-01T00:00:00Z', until '2026-01-01')"
    argv = ("--config", str(config), "--since", backwards["since"], "--until", backwards["until"])
    commands = [("sessions",), ("session", "9093e8c0"), ("servers",), ("servers", "a"), ("calls",), ("usage",)]
    base = f"http://{load_config(config).server.listen}"
    try:
        async with aiohttp.ClientSession() as http:
            api = []
            for path in ("/api/sessions", "/api/servers", "/api/servers/a", "/api/calls", "/api/usage"):
                async with http.get(base + path, params=backwards) as response:
                    api.append((path, response.status, await response.json()))
            async with http.get(base + "/api/calls", params={**backwards, "until": backwards["since"]}) as response:
                same = (response.status, await response.json())
        live = [await report_all(capsys, *command, *argv) for command in commands]
    finally:
        await runner.cleanup()
        await service.close()

    assert api == [(path, 400, {"error": said}) for path, _, _ in api]
    assert same == (400, {"error": "since must be earlier than until (since '2026-02-01T00:00:00Z', "
                                   "until '2026-02-01T00:00:00Z')"})
    assert live == [(2, "", f"tollgate: report {command[0]}: {said}\n") for command in commands]
    assert [await report_all(capsys, *command, *argv) for command in commands] == live  # no server: the store


async def test_times_the_store_cannot_hold_are_refused_and_ranges_at_its_edges_are_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Year 1 or 9999 was a 500 (a Python overflow while padding the range, or ClickHouse refusing the bound). Times
    outside what the store holds are now a 400 naming the range, and ranges at its edges (a default window reaching
    30 days before 1900-01-02; padding past 2262-04-01) are served."""
    import aiohttp

    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    paths = ("/api/sessions", "/api/sessions/9093e8c0", "/api/servers", "/api/servers/a", "/api/calls", "/api/usage")
    far = [{"since": "0001-01-01"}, {"until": "0001-01-02"}, {"until": "9999-12-31T23:59:59-01:00"},
           {"since": "1899-12-31T23:59:59Z"}, {"until": "2262-04-01T00:00:01Z"}]
    edges = [{"until": "1900-01-02"}, {"since": "1900-01-01", "until": "2262-04-01"}]
    commands = [("sessions",), ("servers",), ("servers", "a"), ("calls",), ("usage",)]
    base = f"http://{load_config(config).server.listen}"
    try:
        async with aiohttp.ClientSession() as http:
            refused, served = [], []
            for params in far + edges:
                for path in paths:
                    async with http.get(base + path, params=params) as response:
                        answer = (path, params, response.status, response.content_type)
                        (refused if params in far else served).append((*answer, await response.json()))
        live = [await report_all(capsys, *command, "--config", str(config), "--until", "0001-01-02")
                for command in commands]
    finally:
        await runner.cleanup()
        await service.close()

    for path, params, status, kind, doc in refused:
        (name, raw), = params.items()
        assert (status, kind) == (400, "application/json"), (path, params, doc)
        assert doc == {"error": f"{name} must be between 1900-01-01 and 2262-04-01 (the times the store "
                                f"holds), got {raw!r}"}
    # The seed's sessions are in 2026: the widest range holds them, the one ending in 1900 nothing.
    assert [(path, params, status) for path, params, status, _, _ in served] == [
        (path, params, 404 if path in ("/api/sessions/9093e8c0", "/api/servers/a") else 200)  # the seed has neither
        for params in edges for path in paths]
    sessions = {str(params): doc for path, params, _, _, doc in served if path == "/api/sessions"}
    assert sessions[str(edges[0])]["sessions"] == [] and sessions[str(edges[1])]["sessions"] != []
    said = "until must be between 1900-01-01 and 2262-04-01 (the times the store holds), got '0001-01-02'"
    assert live == [(2, "", f"tollgate: report {command[0]}: {said}\n") for command in commands]


async def test_reports_find_a_server_started_with_another_listen_than_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tollgate serve --listen` overrides the config file; a report given that same config still reads through
    the running server (which locks the embedded store), at the address its pid file records."""
    from tests.gateway.conftest import ROOT, mcp_session
    from tests.gateway.test_budgets_e2e import BUDGET_SERVER, read_until

    config_path = write_config(tmp_path, free_port())  # nothing listens there
    add_upstream(config_path, "b", BUDGET_SERVER, "day_calls = 5")
    served = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path), "--listen", f"127.0.0.1:{served}",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    assert server.stderr is not None
    try:
        await read_until(server.stderr, "Tollgate listening")
        async with mcp_session(f"http://127.0.0.1:{served}/mcp") as client:
            assert not (await client.call_tool("b__echo", {"text": "through --listen"})).is_error
        code, out = await report(capsys, "calls", "--config", str(config_path), "--json")
        assert code == 0 and "calls" in orjson.loads(out), out  # the store is locked: only the server answers
        code, out = await report(capsys, "budgets", "--config", str(config_path), "--json")
        assert code == 0, out
        budgets = orjson.loads(out)
        assert budgets["source"] == f"http://127.0.0.1:{served}/api/budgets"
        assert budgets["upstreams"][0]["day"]["calls"] == 1  # the live spend, not a rebuild from the store
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)


def usage_bodies() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(content type, body, decoded doc) of the captures the usage test posts: s4's three log batches, s1's, and
    s2's with its last api_request renamed to a second model, so one session has two models."""
    bodies = [("application/x-protobuf", capture("s4_two_turns_stream", n), capture_doc("s4_two_turns_stream", n))
              for n in BATCHES]
    bodies.append(("application/x-protobuf", capture("s1_protobuf", "0001_logs"),
                   capture_doc("s1_protobuf", "0001_logs")))
    doc = capture_doc("s2_json", "0001_logs")
    records = [r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    last = [r for r in records if r["body"]["stringValue"] == "claude_code.api_request"][-1]
    next(kv for kv in last["attributes"] if kv["key"] == "model")["value"] = {"stringValue": "claude-haiku-5"}
    bodies.append(("application/json", orjson.dumps(doc), doc))
    return bodies


USAGE_SUMS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
              "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cost_usd_micros")


def expected_usage(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (session, model), straight from the captures' api_request records: requests, turns, tokens, cost."""
    usage: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        for event in events_named(doc, "api_request"):
            a = event["attrs"]
            row = usage.setdefault((a["session.id"], a["model"]), {
                "requests": 0, "prompts": set(), "cost_usd": 0.0, **dict.fromkeys(USAGE_SUMS, 0)})
            row["requests"] += 1
            row["prompts"].add(a["prompt.id"])
            row["cost_usd"] += a["cost_usd"]
            for kind in USAGE_SUMS:
                row[kind] += a[kind]
    return {key: {**{k: v for k, v in row.items() if k != "prompts"}, "turns": len(row["prompts"])}
            for key, row in usage.items()}


def assert_usage_figures(rows: list[dict[str, Any]], want: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert sorted((r["session_id"], r["model"]) for r in rows) == sorted(want)
    for row in rows:
        expected = want[(row["session_id"], row["model"])]
        assert {k: row[k] for k in expected if k != "cost_usd"} == {k: v for k, v in expected.items()
                                                                    if k != "cost_usd"}
        assert row["cost_usd"] == pytest.approx(expected["cost_usd"], abs=1e-9)


def usage_table_figures(table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The `report usage` table's cells by (session, model): counts as ints, COST as dollars."""
    header, *lines = table.splitlines()
    assert re.split(r"\s{2,}", header) == ["SESSION", "MODEL", "REQS", "TURNS", "INPUT", "OUTPUT", "CACHE READ",
                                           "CACHE WRITE", "COST"]
    out = {}
    for line in lines:
        session, model, *numbers, cost = line.split()
        assert cost.startswith("$")
        out[(session, model)] = {**dict(zip(("requests", "turns", "input_tokens", "output_tokens",
                                             "cache_read_tokens", "cache_creation_tokens"),
                                            (int(n.replace(",", "")) for n in numbers), strict=True)),
                                 "cost_usd": float(cost[1:])}
    return out


async def test_report_usage_and_api_usage_give_each_sessions_and_models_tokens_and_cost_from_the_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, free_port())
    config = load_config(config_path)
    runner, service = await serve(config_path)
    bodies = usage_bodies()
    want = expected_usage([doc for _, _, doc in bodies])
    assert len(want) == 4 and len({session for session, _ in want}) == 3
    try:
        async with ClientSession() as http:
            for content_type, body, _ in bodies:
                async with http.post(f"http://{config.server.listen}/v1/logs", data=body,
                                     headers={"Content-Type": content_type}) as response:
                    assert response.status == 200
            await service.writer.flush()
            async with http.get(f"http://{config.server.listen}/api/usage", params={"since": SINCE}) as response:
                assert response.status == 200
                api = orjson.loads(await response.read())["usage"]
        code, through_server = await report(capsys, "usage", "--config", str(config_path), "--since", SINCE, "--json")
        assert code == 0
    finally:
        await runner.cleanup()
        await service.close()
    assert_usage_figures(api, want)
    assert orjson.loads(through_server)["usage"] == api
    code, direct = await report(capsys, "usage", "--config", str(config_path), "--since", SINCE, "--json")
    assert code == 0 and orjson.loads(direct)["usage"] == api
    code, table = await report(capsys, "usage", "--config", str(config_path), "--since", SINCE)
    assert code == 0
    shown = usage_table_figures(table)
    assert set(shown) == set(want)
    for key, cells in shown.items():
        expected = want[key]
        assert {k: v for k, v in cells.items() if k != "cost_usd"} == {k: expected[k] for k in cells if k != "cost_usd"}
        assert cells["cost_usd"] == round(expected["cost_usd"], 4)


async def test_a_no_store_gateway_beside_the_server_leaves_its_pid_file_and_setup_claude_finds_the_served_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `serve --no-store` on the same config owns no data directory: it must not replace or remove the pid file
    that `reload`, reports and `setup claude` read; `setup claude` prints the address the server really serves."""
    from tests.gateway.conftest import ROOT
    from tests.gateway.test_budgets_e2e import BUDGET_SERVER, read_until

    config_path = write_config(tmp_path, free_port())
    add_upstream(config_path, "b", BUDGET_SERVER, "day_calls = 5")
    served, bare = free_port(), free_port()
    pid_file = tmp_path / "chdb" / "tollgate.pid"

    async def spawn(*argv: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "serve", "--config",
                                                    str(config_path), *argv, cwd=ROOT, stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        return proc

    server = await spawn("--listen", f"127.0.0.1:{served}")
    sibling: asyncio.subprocess.Process | None = None
    try:
        assert server.stderr is not None
        await read_until(server.stderr, "Tollgate listening")
        owner = pid_file.read_text()
        sibling = await spawn("--listen", f"127.0.0.1:{bare}", "--no-store")
        assert sibling.stderr is not None
        await read_until(sibling.stderr, "--no-store: budgets are off")
        await read_until(sibling.stderr, "Tollgate listening")
        assert pid_file.read_text() == owner
        sibling.terminate()
        await asyncio.wait_for(sibling.wait(), 30)
        assert pid_file.read_text() == owner

        code = await asyncio.to_thread(main, ["setup", "claude", "--config", str(config_path)])
        out = capsys.readouterr().out
        assert code == 0
        assert f"# Tollgate serves 127.0.0.1:{served}" in out
        assert f'"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{served}"' in out
        assert f"http://127.0.0.1:{served}/mcp" in out
        code = await asyncio.to_thread(main, ["setup", "claude", "--config", str(config_path), "--listen",
                                              "127.0.0.1:9"])
        assert code == 0 and "http://127.0.0.1:9/mcp" in capsys.readouterr().out
    finally:
        for proc in (sibling, server):
            if proc and proc.returncode is None:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 30)
    assert not pid_file.exists()


INT64_MAX = 2**63 - 1


def huge_requests(session_id: str, now: dt.datetime) -> list[dict[str, Any]]:
    """api_request rows with values their columns hold but whose sums pass Int64: a cost of 1e300 USD (micros far
    past Int64) and token counts and micros at Int64's maximum, twice over."""
    base = {"event_name": "api_request", "session_id": session_id, "model": "claude-opus-5-5", "ingested_at": now}
    return [
        {**base, "event_key": "req:h1", "request_id": "h1", "event_time": now - dt.timedelta(minutes=3),
         "input_tokens": INT64_MAX, "cost_usd": 1e300},
        {**base, "event_key": "req:h2", "request_id": "h2", "event_time": now - dt.timedelta(minutes=2),
         "input_tokens": INT64_MAX, "output_tokens": INT64_MAX, "cost_usd_micros": INT64_MAX},
    ]


async def test_sums_past_int64_saturate_in_the_api_and_every_report_instead_of_wrapping_or_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    runner, service = await serve(config)
    session_id = "huge-values-session"
    service.writer.submit("cc_api_requests", huge_requests(session_id, dt.datetime.now(dt.UTC)))
    await service.writer.flush()
    base_url = f"http://{load_config(config).server.listen}"
    argv = ("--config", str(config))
    try:
        async with ClientSession() as http:
            answers = {}
            for path in ("/api/sessions", f"/api/sessions/{session_id}", "/api/usage"):
                async with http.get(base_url + path, params={"since": SINCE}) as response:
                    assert response.status == 200, (path, await response.text())
                    answers[path] = await response.json()
        live = [await report_all(capsys, *command, *argv) for command in (
            ("session", session_id), ("sessions", "--since", SINCE), ("usage", "--since", SINCE))]
    finally:
        await runner.cleanup()
        await service.close()

    (listed,) = answers["/api/sessions"]["sessions"]
    page = answers[f"/api/sessions/{session_id}"]["session"]
    (usage,) = answers["/api/usage"]["usage"]
    for doc in (listed, page, usage):
        assert doc["input_tokens"] == doc["cost_usd_micros"] == INT64_MAX, doc
        assert doc["cost_usd"] >= 1e300
    assert listed["total_tokens"] == page["total_tokens"] == INT64_MAX
    for code, out, err in live:
        assert (code, err) == (0, ""), (out, err)
        assert f"{INT64_MAX:,}" in out and "-9,223" not in out
    direct = [await report_all(capsys, *command, *argv) for command in (("session", session_id),)]
    assert direct == live[:1]


async def test_an_api_answer_that_is_not_json_is_a_report_error_not_a_traceback(aiohttp_server: Any) -> None:
    from ui.cli_report import ReportError, fetch_http

    async def html_error(_: web.Request) -> web.Response:
        return web.Response(status=500, text="<html><body>500 Internal Server Error</body></html>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/api/sessions/{id}", html_error)
    server = await aiohttp_server(app)
    with pytest.raises(ReportError) as caught:
        await fetch_http(str(server.make_url("")), "/api/sessions/abc", {})
    assert caught.value.status == 500
    assert str(caught.value) == "the API answered 500 with a body that is not JSON"


def api_request_json(request_id: str, session_id: str | None, at_ns: int) -> dict[str, Any]:
    attributes = {"event.name": "api_request", "request_id": request_id, "model": "claude-opus-5-5",
                  "input_tokens": 100, "cost_usd": 1.0, **({"session.id": session_id} if session_id else {})}
    return {"timeUnixNano": str(at_ns), "body": {"stringValue": "claude_code.api_request"}, "attributes": [
        {"key": k, "value": {"doubleValue": v} if isinstance(v, float) else
         {"intValue": v} if isinstance(v, int) else {"stringValue": v}} for k, v in attributes.items()]}


async def test_requests_without_session_id_are_kept_reported_under_a_label_and_never_listed_as_a_blank_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    runner, service = await serve(config)
    base_url = f"http://{load_config(config).server.listen}"
    now = dt.datetime.now(dt.UTC)
    at = int(now.timestamp()) * 10**9
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        api_request_json("anon-1", None, at), api_request_json("named-1", "named-session", at + 1)]}]}]})
    argv = ("--config", str(config))
    try:
        async with ClientSession() as http:
            async with http.post(base_url + "/v1/logs", data=body,
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200
                partial = (await response.json())["partialSuccess"]
            await service.writer.flush()
            async with http.get(base_url + "/api/sessions", params={"since": SINCE}) as response:
                listed = (await response.json())["sessions"]
        usage = await report_all(capsys, "usage", "--since", SINCE, *argv)
        sessions = await report_all(capsys, "sessions", "--since", SINCE, *argv)
        empty = await report_all(capsys, "session", "", *argv)
    finally:
        await runner.cleanup()
        await service.close()

    assert partial["rejectedLogRecords"] == 0
    assert partial["errorMessage"].startswith("1 record(s) carry no session.id")
    assert [s["session_id"] for s in listed] == ["named-session"]
    assert usage[0] == 0
    rows = {line.split()[0]: line for line in usage[1].splitlines()[1:]}
    assert set(rows) == {"(no", "named-session"}
    assert rows["(no"].startswith("(no session id)") and rows["(no"].endswith("$1.0000")
    assert sessions[0] == 0 and [line.split()[0] for line in sessions[1].splitlines()[1:-1]] == ["named-session"]
    code, out, err = empty
    assert code != 0 and out == ""
    assert err.startswith("tollgate: report session: a session id is required (got an empty one)")


HOSTILE_SESSION = "cc-\x1b[31mred\x07-\x9b2J"  # ESC colour, BEL, and a C1 CSI that clears the screen
HOSTILE_MODEL = "claude-\x1b]0;owned\x07-\x7f"  # an OSC title change, DEL
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but the renderer's own newline


def hostile_logs() -> bytes:
    """The s2 capture moved to the present, with a session id and model name carrying control characters."""
    from tests.ui.seed import otlp_logs_now

    doc = orjson.loads(otlp_logs_now())
    for record in (r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]):
        for attr in record["attributes"]:
            if attr["key"] == "session.id":
                attr["value"] = {"stringValue": HOSTILE_SESSION}
            elif attr["key"] == "model":
                attr["value"] = {"stringValue": HOSTILE_MODEL}
    return orjson.dumps(doc)


async def test_every_text_report_shows_control_characters_from_stored_data_escaped_and_json_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Session ids and model names from an OTLP sender, server and tool names and MCP session ids in call rows: no
    raw control character reaches the terminal from any report's text (errors included), each is shown as its
    escape (ESC as \\x1b); --json keeps the stored strings."""
    config = write_config(tmp_path, free_port())
    runner, service = await serve(config)
    now = dt.datetime.now(dt.UTC)
    upstream, tool, mcp_id = "up\x1bstream", "to\x9bol\x00", "mcp-\x1b[2K-session"
    try:
        async with ClientSession() as http, http.post(f"http://{load_config(config).server.listen}/v1/logs",
                                                      data=hostile_logs(),
                                                      headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200
        service.writer.submit("calls", [
            {"call_id": "hostile", "method": "tools/call", "upstream": upstream, "tool": tool, "exposed_name": tool,
             "mcp_session_id": mcp_id, "cc_session_id": HOSTILE_SESSION, "status": "ok",
             "started_at": now - dt.timedelta(seconds=1), "ended_at": now, "resp_bytes_upstream": 10}])
        await service.writer.flush()
    finally:
        await runner.cleanup()
        await service.close()
    argv = ("--config", str(config), "--since", SINCE)
    commands = [("sessions",), ("session", HOSTILE_SESSION), ("session", mcp_id), ("usage",), ("servers",),
                ("servers", upstream), ("calls",), ("calls", "--session", HOSTILE_SESSION), ("budgets",)]
    texts = [await report_all(capsys, *command, *argv[:2] if command == ("budgets",) else argv)
             for command in commands]
    for command, (code, out, err) in zip(commands, texts, strict=True):
        assert code == 0 and err == "", (command, err)
        assert not CONTROL.search(out), (command, out)
    escaped = {HOSTILE_SESSION: "cc-\\x1b[31mred\\x07-\\x9b2J", HOSTILE_MODEL: "claude-\\x1b]0;owned\\x07-\\x7f",
               upstream: "up\\x1bstream", tool: "to\\x9bol\\x00", mcp_id: "mcp-\\x1b[2K-session"}
    for name, command in ((HOSTILE_SESSION, 0), (HOSTILE_MODEL, 3), (upstream, 4), (tool, 5), (mcp_id, 2)):
        assert escaped[name] in texts[command][1], (name, commands[command])
    assert escaped[tool] in texts[8][1]  # budgets: the tool's day spend, rebuilt from the store
    code, out, err = await report_all(capsys, "session", "nope-\x1b[31m", *argv)
    assert code == 1 and out == "" and not CONTROL.search(err.rstrip("\n")) and "nope-\\x1b[31m" in err
    code, out, _ = await report_all(capsys, "usage", *argv, "--json")
    assert code == 0 and {(r["session_id"], r["model"]) for r in orjson.loads(out)["usage"]} == {
        (HOSTILE_SESSION, HOSTILE_MODEL)}


async def rejections(http: Any, base_url: str) -> list[str]:
    """The server's tollgate_http_rejections_total lines from /metrics."""
    async with http.get(base_url + "/metrics") as response:
        return [line for line in (await response.text()).splitlines()
                if line.startswith("tollgate_http_rejections_total{")]


async def test_a_session_id_prefix_resolves_in_one_request_that_is_no_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`report session PREFIX` and `report calls --session PREFIX` through the running server: the API resolves
    the prefix itself, so a lookup that succeeds logs no refusal and leaves the rejections counter as it was."""
    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    base_url = f"http://{load_config(config).server.listen}"
    now = dt.datetime.now(dt.UTC)
    mcp_id = "2efeb6c0" + "4" * 24
    service.writer.submit("calls", [
        {"call_id": "prefixed", "method": "tools/call", "upstream": "a", "tool": "echo", "exposed_name": "a__echo",
         "mcp_session_id": mcp_id, "status": "ok", "started_at": now, "ended_at": now}])
    await service.writer.flush()
    argv = ("--config", str(config), "--json")
    try:
        async with ClientSession() as http:
            before = await rejections(http, base_url)
            with caplog.at_level(logging.INFO, logger="tollgate.rejections"):
                session = await report_all(capsys, "session", "2efeb6", *argv)
                listed = await report_all(capsys, "calls", "--session", "2efeb6", *argv)
            after = await rejections(http, base_url)
            async with http.get(base_url + "/api/sessions/2efeb") as response:  # a real miss is still refused
                assert response.status == 404
            missed = await rejections(http, base_url)
    finally:
        await runner.cleanup()
        await service.close()
    assert session[0] == 0 and orjson.loads(session[1])["session"]["session_id"] == mcp_id, session
    assert listed[0] == 0 and [c["call_id"] for c in orjson.loads(listed[1])["calls"]] == ["prefixed"], listed
    assert after == before and not [r for r in caplog.records if r.name == "tollgate.rejections"]
    assert 'tollgate_http_rejections_total{route="/api",status="404"} 1' in missed


async def test_report_calls_selects_and_names_a_claude_code_session_as_its_session_page_ties_the_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first call of an MCP session carries a tool_use_id of the s4 capture and is stored before the gateway
    knew the Claude Code session (no cc_session_id); the later one is stored with it. The session page lists
    both; `report calls --session` must list the same calls and `report calls` name that session on each, live
    and from the store. A call of another MCP session stays out."""
    from tests.store.test_queries_turns import capture_events

    config = write_config(tmp_path, free_port())
    runner, service = await serve_and_seed(config)
    results = [e for name in BATCHES for e in capture_events(name)
               if e.get("event.name") == "tool_result" and e["tool_name"] == "mcp_tool"]
    first = results[0]
    cc_session = first["session.id"]
    ended = dt.datetime.fromtimestamp(first["time"] / 1e9, dt.UTC) - dt.timedelta(milliseconds=3)

    def call(call_id: str, mcp_id: str, at: dt.datetime, **ids: str) -> dict[str, Any]:
        return {"call_id": call_id, "method": "tools/call", "upstream": "capture", "tool": "echo",
                "exposed_name": "capture__echo", "mcp_session_id": mcp_id, "status": "ok", "started_at": at,
                "ended_at": at, **ids}

    service.writer.submit("calls", [
        call("binding", "mcp-tie", ended, tool_use_id=first["tool_use_id"]),
        call("bound", "mcp-tie", ended + dt.timedelta(seconds=1), cc_session_id=cc_session),
        call("stranger", "mcp-other", ended + dt.timedelta(hours=2))])
    await service.writer.flush()
    argv = ("--config", str(config), "--since", SINCE, "--json")
    commands = [("session", cc_session), ("calls", "--session", cc_session), ("calls",)]
    try:
        live = [await report_all(capsys, *command, *argv) for command in commands]
    finally:
        await runner.cleanup()
        await service.close()
    direct = [await report_all(capsys, *command, *argv) for command in commands]
    assert direct == live
    (code, page, _), (listed_code, listed, _), (all_code, everything, _) = live
    assert code == listed_code == all_code == 0, live
    page_doc = orjson.loads(page)
    on_page = sorted(c["call_id"] for t in page_doc["turns"] for c in t["calls"])
    on_page += sorted(c["call_id"] for c in page_doc["calls_outside_turns"])
    assert sorted(on_page) == ["binding", "bound"]
    assert sorted(c["call_id"] for c in orjson.loads(listed)["calls"]) == sorted(on_page)
    named = {c["call_id"]: c["cc_session_id"] for c in orjson.loads(everything)["calls"]}
    assert named == {"binding": cc_session, "bound": cc_session, "stranger": ""}
