"""No leaks: sessions opened and dropped, and crashed upstreams, leave no process or descriptor behind (C14)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession as Http
from mcp import MCPError

from gateway import jsonrpc
from gateway.config import Timeouts, UpstreamConfig
from tests.gateway.conftest import gateway_config, mcp_session, raw_upstream, running_gateway
from tests.gateway.recorder import Recorder
from tests.gateway.test_catalog import get_health
from tests.gateway.test_downstream import open_session
from tests.gateway.test_requests import post, text_of
from tests.gateway.test_stateful import wait_gone
from tests.gateway.upstreams.test_stdio import alive, signal_log


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def pipe_fds() -> int:
    """Open pipes and pidfds: what a child process costs us (sockets come and go with HTTP connections)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(("pipe:", "anon_inode:[pidfd]"))
    return count


async def test_fifty_sessions_closed_or_dropped_leave_no_process_or_fd(tmp_path: Path) -> None:
    upstream = raw_upstream("s", "--spawn-stubborn", stateful=True, timeouts=Timeouts(init_seconds=20))
    config = gateway_config(upstream, session_idle_seconds=3.0)
    async with running_gateway(config) as url:
        baseline_procs, baseline_fds = descendants(os.getpid()), open_fds()
        started: set[int] = set()
        for _ in range(5):
            pids = await asyncio.gather(*(_closed_session(url) for _ in range(5)),
                                        *(_dropped_session(url) for _ in range(5)))
            started |= {int(pid) for pair in pids for pid in pair.split()}
            started |= descendants(os.getpid()) - baseline_procs
        assert len(started) >= 100  # 50 sessions, each with its own worker and grandchild
        await wait_gone(sorted(started), timeout=60)  # closed ones at once, dropped ones at idle expiry
        assert descendants(os.getpid()) - baseline_procs == set()
        assert open_fds() <= baseline_fds + 2


async def _closed_session(url: str) -> str:
    async with mcp_session(url) as client:  # sends DELETE on exit
        result = await client.call_tool("s__pids", {})
    return str(result.content[0].text)  # type: ignore[union-attr]


async def _dropped_session(url: str) -> str:
    async with Http() as http:  # initializes, calls, then vanishes without DELETE
        session_id = await open_session(http, url)
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s__pids","arguments":{}}}'
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "Mcp-Session-Id": session_id}
        async with http.post(url, data=body, headers=headers) as response:
            assert response.status == 200
            answer = await response.json()
    return str(answer["result"]["content"][0]["text"])


async def test_an_upstream_crash_fails_the_call_clearly_and_the_upstream_comes_back() -> None:
    recorder = Recorder()
    upstream = raw_upstream("c", "--crash-on", "boom", "--tools-named", "boom,echo",
                            timeouts=Timeouts(init_seconds=20))
    async with running_gateway(gateway_config(upstream), observers=[recorder]) as url, mcp_session(url) as client:
        procs, fds = descendants(os.getpid()), pipe_fds()
        readied = len(recorder.snapshots)  # one tool list snapshot each time the upstream becomes ready
        with pytest.raises(MCPError) as failed:
            await client.call_tool("c__boom", {})
        await recorder.wait_until(lambda: len(recorder.snapshots) > readied)  # restarted (after its backoff)
        answer = await client.call_tool("c__echo", {"text": "back"})
        procs_after, fds_after = descendants(os.getpid()), pipe_fds()
        health = await get_health(url)
    assert failed.value.error.code == jsonrpc.UPSTREAM_UNAVAILABLE
    assert "exited with code 3" in failed.value.error.message
    assert recorder.kinds("c").count("restart") == 1
    assert (health["upstreams"]["c"]["state"], health["upstreams"]["c"]["restarts"]) == ("ready", 1)
    assert "back" in repr(answer.content)
    assert len(procs_after) == len(procs) == 1 and procs_after != procs  # a new process in place of the old one
    assert fds_after == fds > 0  # the crashed process's pipes were all closed, the new one's opened


async def test_shutdown_waits_until_live_stateful_sessions_processes_are_gone(tmp_path: Path) -> None:
    flag = tmp_path / "stubborn"
    raw = raw_upstream("s")
    # The shared instance (started first) stops at once; the sessions' own, started once the flag exists,
    # each hold a worker that ignores SIGTERM, so stopping them takes the whole grace before SIGKILL.
    script = f'if test -e "{flag}"; then exec "$0" "$@" --spawn-stubborn; fi; exec "$0" "$@"'
    upstream = UpstreamConfig(name="s", type="stdio", command="sh", args=("-c", script, raw.command or "", *raw.args),
                              stateful=True, timeouts=Timeouts(init_seconds=20))
    baseline = descendants(os.getpid())
    async with running_gateway(gateway_config(upstream)) as url:
        flag.touch()
        pids = [int(pid) for text in await asyncio.gather(*(_dropped_session(url) for _ in range(3)))
                for pid in text.split()]
        assert len(pids) == 6 and all(alive(pid) for pid in pids)
    # Nothing is awaited here: once the gateway has stopped, its sessions' processes must be gone already.
    assert [pid for pid in pids if alive(pid)] == []
    assert descendants(os.getpid()) - baseline == set()
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("stdio-teardown")] == []


async def test_a_gateway_stop_and_a_session_delete_end_their_upstreams_by_stdin_eof_alone(tmp_path: Path) -> None:
    """Each instance of an upstream that leaves on stdin EOF is stopped by that alone: no SIGTERM (nor SIGKILL)."""
    shared_log, own_log = tmp_path / "shared", tmp_path / "own"
    shared = raw_upstream("shared", "--signal-log", str(shared_log), timeouts=Timeouts(init_seconds=20))
    own = raw_upstream("own", "--signal-log", str(own_log), stateful=True, timeouts=Timeouts(init_seconds=20))
    baseline = descendants(os.getpid())
    # Leaving the session sends DELETE, which ends it and its own instance of `own`.
    async with running_gateway(gateway_config(shared, own)) as url, mcp_session(url) as client:
        await client.call_tool("shared__echo", {"text": "x"})
        await client.call_tool("own__echo", {"text": "x"})
    # The stopped gateway has waited for every instance: the shared ones and the session's own of `own`.
    assert descendants(os.getpid()) - baseline == set()
    assert [event for event, _ in signal_log(shared_log)] == ["EOF"]
    assert [event for event, _ in signal_log(own_log)] == ["EOF", "EOF"]


async def test_an_idle_session_expires_then_its_id_gets_404_and_its_own_processes_are_gone(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tollgate.hub")
    upstream = raw_upstream("s", "--spawn-stubborn", stateful=True, timeouts=Timeouts(init_seconds=20))
    async with running_gateway(gateway_config(upstream, session_idle_seconds=1.0)) as url, Http() as http:
        baseline = descendants(os.getpid())  # the shared instance, which reads the catalog
        session_id = await open_session(http, url)
        status, answer = await post(http, url, session_id, jsonrpc.request_body(
            1, "tools/call", {"name": "s__pids", "arguments": {}}))
        own = descendants(os.getpid()) - baseline  # the session's instance, its worker and grandchild
        assert status == 200 and {int(pid) for pid in text_of(answer).split()} < own
        await wait_gone(sorted(own), timeout=30)  # no DELETE: only idle expiry can release them
        health = await get_health(url)
        status, answer = await post(http, url, session_id, jsonrpc.request_body(2, "ping"))
        async with http.delete(url, headers={"Mcp-Session-Id": session_id}) as response:
            deleted = response.status
    assert (status, orjson.loads(answer)["error"]["code"], orjson.loads(answer)["id"]) == (
        404, jsonrpc.INVALID_REQUEST, 2)
    assert deleted == 404
    assert health["sessions"] == 0
    assert f"session {session_id[:8]} ended (idle)" in caplog.text
