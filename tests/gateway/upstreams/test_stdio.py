"""StdioTransport against real child processes: round trips, C05, C10, C14, exits and crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.upstreams.base import MessageTooLarge, TransportClosed, TransportError
from gateway.upstreams.factory import make_transport
from gateway.upstreams.stdio import STDERR_RECENT_SECONDS, LineFramer, StdioTransport
from tests.fixtures.procs import PYTHON, REPO_ROOT, echo_stdio_command, raw_stdio_command, require_everything
from tests.gateway.upstreams.wire import Wire, text_of

MiB = 1024 * 1024
PIPE_READ_CHUNK = 256 * 1024  # the most one pipe read hands over (asyncio and uvloop)


def stdio(command: tuple[str, list[str]], **kwargs: object) -> StdioTransport:
    return StdioTransport("fixture", command[0], command[1], **kwargs)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for its reaper counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_round_trip_against_the_sdk_echo_server() -> None:
    wire = await Wire(stdio(echo_stdio_command("alpha"))).open()
    try:
        init = await wire.initialize()
        assert init["result"]["serverInfo"]["name"] == "alpha"
        tools = await wire.request(1, "tools/list")
        assert {"echo", "blob", "slow", "whoami", "progress", "utf8"} <= {t["name"] for t in tools["result"]["tools"]}
        echoed = await wire.call(2, "echo", text="hello")
        assert text_of(echoed) == "hello"
        assert echoed["result"]["structuredContent"] == {"result": "hello"}
        assert text_of(await wire.call(3, "blob", n=100_000)) == "x" * 100_000
    finally:
        await wire.transport.close()
    assert await wire.wait_closed() is None
    stats = wire.transport.stats
    assert stats.messages_in == len(wire.raw) and stats.bytes_in == sum(map(len, wire.raw))
    assert wire.related == [None] * len(wire.raw)


async def test_round_trip_against_server_everything() -> None:
    wire = await Wire(StdioTransport("everything", str(require_everything()), ["stdio"])).open()
    try:
        await wire.initialize()
        tools = await wire.request(1, "tools/list")
        assert "echo" in {t["name"] for t in tools["result"]["tools"]}
        echoed = await wire.call(2, "echo", message="héllo 🙂")
        assert "héllo 🙂" in text_of(echoed)
    finally:
        await wire.transport.close()
    assert await wire.wait_closed() is None


async def test_the_demo_notes_server_serves_tools_resource_and_prompt() -> None:
    wire = await Wire(StdioTransport("notes", PYTHON, [str(REPO_ROOT / "demo" / "notes_server.py")])).open()
    try:
        await wire.initialize()
        tools = await wire.request(1, "tools/list")
        assert {t["name"] for t in tools["result"]["tools"]} == {"add_note", "list_notes", "search_notes", "read_note"}
        await wire.call(2, "add_note", title="Tollgate", body="meters bytes")
        found = await wire.call(3, "search_notes", query="BYTES")
        assert found["result"]["structuredContent"] == {"result": ["Tollgate"]}
        resource = await wire.request(4, "resources/read", {"uri": "notes://all"})
        assert "meters bytes" in resource["result"]["contents"][0]["text"]
        prompt = await wire.request(5, "prompts/get", {"name": "summarize_notes", "arguments": {}})
        assert "notes://all" in prompt["result"]["messages"][0]["content"]["text"]
    finally:
        await wire.transport.close()


async def test_progress_notifications_arrive_before_the_result() -> None:
    wire = await Wire(stdio(echo_stdio_command())).open()
    try:
        await wire.initialize()
        params = {"name": "progress", "arguments": {"steps": 3, "ms": 1}, "_meta": {"progressToken": "tok"}}
        result = await wire.request(1, "tools/call", params)
        methods = [m.get("method") for m in wire.messages]
        assert methods.count("notifications/progress") == 3
        assert methods.index("notifications/progress") < wire.messages.index(result)
    finally:
        await wire.transport.close()


async def test_c05_non_json_stdout_lines_are_counted_and_the_session_stays_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    command = raw_stdio_command("--banner", "Server v1.2 starting", "--noise-between", "[db] connected")
    wire = await Wire(stdio(command)).open()
    try:
        await wire.initialize()
        assert text_of(await wire.call(1, "echo", text="one")) == "one"
        assert text_of(await wire.call(2, "echo", text="two")) == "two"
    finally:
        await wire.transport.close()
    assert await wire.wait_closed() is None
    stats = wire.transport.stats
    assert stats.non_json_lines == 4  # the banner and one noise line after each of 3 responses
    assert stats.bytes_in == sum(map(len, wire.raw))
    assert stats.extra["non_json_bytes"] == len("Server v1.2 starting") + 3 * len("[db] connected")
    assert stats.stderr_lines >= 1 and "upstream fixture stderr: raw server raw starting" in caplog.text


async def test_c05_an_oversized_line_closes_with_message_too_large_and_memory_stays_bounded() -> None:
    cap = 1 * MiB
    wire = await Wire(stdio(raw_stdio_command("--huge-line", str(10 * MiB)), max_message_bytes=cap)).open()
    await wire.initialize()
    await wire.transport.send(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"huge"}}')
    cause = await wire.wait_closed()
    assert isinstance(cause, MessageTooLarge)
    stats = wire.transport.stats
    assert stats.oversized_messages == 1
    assert cap < stats.extra["buffer_high_water"] <= cap + PIPE_READ_CHUNK
    assert wire.transport.buffered_bytes == 0
    with pytest.raises(TransportClosed):
        await wire.transport.send(b"{}")
    await wire.transport.close()
    assert wire.close_calls == 1


async def test_c10_utf8_split_inside_an_emoji_arrives_intact() -> None:
    wire = await Wire(stdio(raw_stdio_command("--split-utf8"))).open()
    try:
        await wire.initialize()
        response = await wire.call(7, "utf8")
    finally:
        await wire.transport.close()
    assert text_of(response) == "é—🙂漢"
    assert len(text_of(response).encode()) == 12
    written = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "é—🙂漢"}], "isError": False}}
    wire_bytes = json.dumps(written, ensure_ascii=False, separators=(",", ":")).encode()
    assert wire.raw[-1] == wire_bytes  # the raw bytes as written, not a re-encoding


async def test_c14_close_kills_a_stubborn_worker_and_grandchild_in_the_process_group() -> None:
    command, args = raw_stdio_command("--spawn-stubborn")
    shell = shlex.join([command, *args])  # no exec: sh stays the group leader, as with `sh -c`
    transport = StdioTransport("stubborn", "sh", ["-c", shell], grace_seconds=0.3)
    wire = await Wire(transport).open()
    await wire.initialize()
    worker, grandchild = map(int, text_of(await wire.call(1, "pids")).split())
    leader = transport.pid
    assert leader is not None and all(map(alive, (leader, worker, grandchild)))
    await transport.close()
    await transport.close()
    assert await wire.wait_closed() is None
    assert wire.close_calls == 1
    assert not any(map(alive, (leader, worker, grandchild)))


async def test_c14_a_crash_mid_call_is_reported_even_while_strays_hold_the_pipes() -> None:
    transport = stdio(raw_stdio_command("--spawn-stubborn", "--crash-on", "echo"), grace_seconds=0.3)
    wire = await Wire(transport).open()
    await wire.initialize()
    worker, grandchild = map(int, text_of(await wire.call(1, "pids")).split())
    await transport.send(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}')
    cause = await wire.wait_closed(timeout=10)
    assert isinstance(cause, TransportClosed)
    assert "exited with code 3" in str(cause) and "crashing on echo" in str(cause)
    assert not alive(worker) and not alive(grandchild)
    with pytest.raises(TransportClosed):
        await transport.send(b"{}")
    await transport.close()
    assert wire.close_calls == 1


# A child records a signal a moment after it is sent (its handler runs once the kernel wakes it); the stop's
# waits are measured from the child's records, so they may look shorter than the grace by about this much.
SIGNAL_LATENCY = 0.05


def signal_log(path: Path) -> list[tuple[str, float]]:
    """The (event, monotonic time) lines a `--signal-log` fixture wrote: EOF on stdin, SIGTERM received."""
    if not path.exists():
        return []
    return [(event, float(at)) for event, at in (line.split() for line in path.read_text().splitlines())]


def exit_time(pid: int) -> asyncio.Future[float]:
    """Resolves with time.monotonic() when `pid` terminates (its pidfd turns readable)."""
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(pid)
    exited: asyncio.Future[float] = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not exited.done():
            exited.set_result(time.monotonic())

    loop.add_reader(fd, on_exit)
    return exited


async def test_c14_a_clean_close_ends_an_upstream_by_stdin_eof_alone(tmp_path: Path) -> None:
    log = tmp_path / "signals"
    transport = stdio(raw_stdio_command("--signal-log", str(log)), grace_seconds=5.0)
    wire = await Wire(transport).open()
    await wire.initialize()
    assert transport.pid is not None
    exited = exit_time(transport.pid)
    started = time.monotonic()
    await transport.close()
    assert await wire.wait_closed() is None
    died = await asyncio.wait_for(exited, 5)
    # It saw stdin end and left on its own, well inside the grace: no SIGTERM, let alone a SIGKILL, was needed.
    assert [event for event, _ in signal_log(log)] == ["EOF"]
    assert died - started < 5.0


async def test_c14_a_worker_ignoring_sigterm_gets_it_after_the_grace_and_sigkill_a_grace_later(
        tmp_path: Path) -> None:
    grace = 0.6
    log = tmp_path / "signals"
    transport = stdio(raw_stdio_command("--signal-log", str(log), "--ignore-term"), grace_seconds=grace)
    wire = await Wire(transport).open()
    await wire.initialize()
    assert transport.pid is not None
    exited = exit_time(transport.pid)
    started = time.monotonic()
    await transport.close()
    died = await asyncio.wait_for(exited, 5)
    assert await wire.wait_closed() is None
    events = signal_log(log)
    assert [event for event, _ in events] == ["EOF", "SIGTERM"]  # stdin closed first, then SIGTERM; nothing else
    (_, eof), (_, term) = events
    assert started <= eof and term - started >= grace  # SIGTERM only once the grace after closing stdin was over
    assert term - eof >= grace - SIGNAL_LATENCY
    assert grace - SIGNAL_LATENCY <= died - term < grace + 2.0  # SIGKILL a grace after SIGTERM, and not much later
    assert not alive(transport.pid)


async def test_an_unexpected_exit_reports_the_exit_code_and_last_stderr() -> None:
    wire = await Wire(stdio(raw_stdio_command("--exit-code", "1"))).open()
    cause = await wire.wait_closed()
    assert isinstance(cause, TransportClosed)
    assert "exited with code 1" in str(cause) and "fatal: exiting with 1" in str(cause)
    await wire.transport.close()
    assert wire.close_calls == 1


async def test_a_process_killed_by_a_signal_is_said_to_be_killed_by_it_with_its_recent_stderr() -> None:
    wire = await Wire(stdio(raw_stdio_command("--name", "victim"))).open()
    await wire.initialize()  # its stderr banner came before its answer
    assert wire.transport.pid is not None
    os.killpg(wire.transport.pid, signal.SIGKILL)
    cause = await wire.wait_closed()
    assert str(cause) == "upstream fixture was killed by SIGKILL; last stderr: raw server victim starting"
    await wire.transport.close()


async def test_a_crash_quotes_only_the_stderr_of_its_last_seconds() -> None:
    """The start banner is older than STDERR_RECENT_SECONDS by the crash (the transport's clock says so): only
    the line written as it crashed is quoted."""
    now = [0.0]
    wire = await Wire(stdio(raw_stdio_command("--crash-on", "echo"), clock=lambda: now[0])).open()
    await wire.initialize()
    now[0] = STDERR_RECENT_SECONDS + 1
    await wire.transport.send(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}')
    cause = await wire.wait_closed()
    assert str(cause) == "upstream fixture exited with code 3; last stderr: crashing on echo"
    await wire.transport.close()


async def test_raw_fixture_pages_lists_named_tools_and_pins_its_protocol() -> None:
    """The fault fixture other tests rely on (C01-C03, C06, C13e) does what its flags say."""
    paged = await Wire(stdio(raw_stdio_command("--tool-count", "14", "--page-size", "8"))).open()
    named = await Wire(stdio(raw_stdio_command("--tools-named", "a:b/c,get_time", "--protocol", "2024-11-05"))).open()
    try:
        await paged.initialize()
        first = (await paged.request(1, "tools/list"))["result"]
        second = (await paged.request(2, "tools/list", {"cursor": first["nextCursor"]}))["result"]
        bad = await paged.request(3, "tools/list", {"cursor": "nope"})
        assert (len(first["tools"]), first["nextCursor"], len(second["tools"])) == (8, "8", 6)
        assert "nextCursor" not in second and bad["error"]["code"] == -32602
        assert (await named.initialize())["result"]["protocolVersion"] == "2024-11-05"
        assert [t["name"] for t in (await named.request(1, "tools/list"))["result"]["tools"]] == ["a:b/c", "get_time"]
        called = json.loads(text_of(await named.call(2, "a:b/c", q=1)))
        assert called == {"tool": "a:b/c", "server": "raw", "arguments": {"q": 1}}
    finally:
        await paged.transport.close()
        await named.transport.close()


async def test_a_stdio_upstream_sees_neither_the_gateways_token_nor_another_upstreams_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"TOLLGATE_TOKEN": "gateway-secret", "DOCS_TOKEN": "docs-secret", "UNRELATED": "kept"}.items():
        monkeypatch.setenv(name, value)
    command, args = raw_stdio_command()
    (tmp_path / "t.toml").write_text(f"""
[server]
auth_tokens = ["${{TOLLGATE_TOKEN}}"]
[upstreams.docs]
url = "https://docs.example/mcp"
headers = {{ Authorization = "Bearer ${{DOCS_TOKEN}}" }}
[upstreams.raw]
command = {json.dumps(command)}
args = {json.dumps(args)}
env = {{ TOKEN = "${{TOLLGATE_TOKEN}}" }}
""")
    raw = next(u for u in load_config(tmp_path / "t.toml").upstreams if u.name == "raw")
    wire = await Wire(make_transport(raw)).open()
    try:
        await wire.initialize()
        seen = json.loads(text_of(await wire.call(1, "env", names="TOLLGATE_TOKEN,DOCS_TOKEN,TOKEN,UNRELATED,PATH")))
    finally:
        await wire.transport.close()
    assert seen == {"TOLLGATE_TOKEN": None, "DOCS_TOKEN": None, "TOKEN": "gateway-secret", "UNRELATED": "kept",
                    "PATH": os.environ["PATH"]}


async def test_a_missing_command_raises_a_clear_transport_error() -> None:
    transport = StdioTransport("ghost", "/nonexistent/tollgate-upstream", [])
    with pytest.raises(TransportError, match="cannot start"):
        await transport.open(lambda raw, rid: None, lambda cause: None)
    await transport.close()


def test_framer_splits_lines_across_chunks_and_strips_cr() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a":1}\r\n{"b"') == [b'{"a":1}']
    assert framer.feed(b":2}") == []
    assert framer.feed(b"\n\n") == [b'{"b":2}', b""]
    assert framer.pending_bytes == 0


def test_framer_stops_at_the_cap() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"12345") == []
    assert framer.feed(b"678901\nabc\n") == []
    assert framer.overflow == 11 and framer.pending_bytes == 0


def test_framer_is_linear_for_a_10_mb_line() -> None:
    framer = LineFramer(64 * MiB)
    chunk = b"x" * 4096
    started = time.perf_counter()
    for _ in range(10 * MiB // len(chunk)):
        assert framer.feed(chunk) == []
    lines = framer.feed(b"\n")
    # Re-copying the pending buffer per chunk takes tens of seconds here (DESIGN §11).
    assert time.perf_counter() - started < 2.0
    assert len(lines[0]) == 10 * MiB


async def test_an_upstream_inherits_none_of_the_gateways_descriptors_but_its_stdio() -> None:
    """uvloop spawns without close_fds: a descriptor the gateway's own parent left inheritable (its log pipe,
    say) reached every upstream and stayed open as long as the upstream lived, past the gateway's death."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as a supervisor's pipe arrives in the gateway
    os.set_blocking(read_end, False)
    wire = await Wire(stdio(echo_stdio_command("alpha"))).open()
    try:
        await wire.initialize()
        pid = wire.transport.pid
        assert pid is not None
        ours = os.readlink(f"/proc/self/fd/{write_end}")
        held = [fd for fd in os.listdir(f"/proc/{pid}/fd") if _link(f"/proc/{pid}/fd/{fd}") == ours]
        os.close(write_end)
        try:
            ended = os.read(read_end, 1)  # EOF (b"") only once no process holds the write end
        except BlockingIOError:
            ended = None  # still held open somewhere
    finally:
        await wire.transport.close()
        os.close(read_end)
    assert held == [] and ended == b""


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
