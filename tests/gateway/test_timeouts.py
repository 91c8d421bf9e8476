"""Per-server timeouts that progress resets, a cancel upstream on timeout, and names that outlive their upstream."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession as Http
from aiohttp import web
from mcp import MCPError

from gateway import jsonrpc
from gateway.app import create_app
from gateway.config import Timeouts, UpstreamConfig
from tests.gateway.conftest import echo_upstream, gateway_config, mcp_session, raw_upstream, running_gateway, served
from tests.gateway.recorder import Recorder
from tests.gateway.taps import tap, tapped_echo_upstream
from tests.gateway.upstreams.fake_http import fake_upstream

SHORT = Timeouts(init_seconds=20.0, call_seconds=1.0, call_max_seconds=30.0)


async def test_a_silent_call_times_out_and_the_upstream_is_told_to_cancel(tmp_path: Path) -> None:
    upstream = tapped_echo_upstream("a", tmp_path / "a.fifo", timeouts=SHORT)
    async with tap(tmp_path / "a.fifo") as upstream_in, running_gateway(gateway_config(upstream)) as url, \
            mcp_session(url) as client:
        with pytest.raises(Exception, match="did not answer tools/call in time"):
            await client.call_tool("a__slow", {"ms": 20_000, "text": "late"})
        forwarded = await upstream_in.wait_for("tools/call")
        cancelled = await upstream_in.wait_for("notifications/cancelled")
    assert cancelled["params"]["requestId"] == forwarded["id"]


async def test_progress_resets_the_timeout() -> None:
    async with running_gateway(gateway_config(echo_upstream("a", timeouts=SHORT))) as url, \
            mcp_session(url) as client:
        # 4 steps of 600 ms: 2.4 s in all, well past call_seconds, but never 1 s without progress.
        result = await client.call_tool("a__progress", {"steps": 4, "ms": 600},
                                        progress_callback=lambda *_: _noop())
    assert not result.is_error


async def _noop() -> None:
    return None


async def test_progress_forever_still_ends_at_the_absolute_cap_and_the_upstream_is_told_to_cancel(
        tmp_path: Path) -> None:
    capped = Timeouts(init_seconds=20.0, call_seconds=1.0, call_max_seconds=2.0)
    upstream = tapped_echo_upstream("a", tmp_path / "a.fifo", timeouts=capped)
    recorder, progress = Recorder(), []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with tap(tmp_path / "a.fifo") as upstream_in, \
            running_gateway(gateway_config(upstream), observers=[recorder]) as url, mcp_session(url) as client:
        started = time.monotonic()
        with pytest.raises(MCPError) as failed:  # a progress step every 500 ms, for 6 days
            await client.call_tool("a__progress", {"steps": 1_000_000, "ms": 500}, progress_callback=on_progress)
        elapsed = time.monotonic() - started
        forwarded = await upstream_in.wait_for("tools/call")
        cancelled = await upstream_in.wait_for("notifications/cancelled")
        await recorder.wait_until(lambda: len(recorder.calls) == 1)
    assert failed.value.error.code == jsonrpc.REQUEST_TIMEOUT
    assert failed.value.error.message == "upstream a did not answer tools/call in time"
    assert 2.0 <= elapsed < 5.0  # past call_seconds (progress reset it), ended by call_max_seconds
    assert len(progress) >= 2
    assert [call.status for call in recorder.calls] == ["timeout"]
    assert cancelled["params"]["requestId"] == forwarded["id"]


async def test_a_tool_of_an_upstream_that_died_answers_is_error_clearly(tmp_path: Path) -> None:
    flag = tmp_path / "alive"
    flag.touch()
    raw = raw_upstream("c", "--crash-on", "boom", "--tools-named", "boom,echo")
    # Runs only while the flag exists: after the crash it cannot come back.
    script = f'test -e "{flag}" || exit 1; exec "$0" "$@"'
    dying = UpstreamConfig(name="c", type="stdio", command="sh", args=("-c", script, raw.command or "", *raw.args),
                           timeouts=Timeouts(init_seconds=20.0))
    async with running_gateway(gateway_config(dying, echo_upstream("ok"))) as url, mcp_session(url) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert "c__echo" in names
        flag.unlink()
        with pytest.raises(Exception, match="exited"):
            await client.call_tool("c__boom", {})
        with pytest.raises(MCPError) as failed:
            await client.call_tool("c__echo", {"text": "x"})
        assert not (await client.call_tool("ok__echo", {"text": "fine"})).is_error
    assert failed.value.error.code == jsonrpc.UPSTREAM_UNAVAILABLE
    assert failed.value.error.message.startswith("upstream c is unavailable (restarting: exited with code ")


async def test_a_session_that_never_listed_tools_is_told_a_crashed_upstream_is_restarting_not_that_its_tool_is_unknown(
        tmp_path: Path) -> None:
    flag = tmp_path / "alive"
    flag.touch()
    raw = raw_upstream("c", "--tools-named", "echo")
    pid_file = tmp_path / "pid"
    # Cannot come back once the flag is gone; exec keeps the pid it writes, its process group's.
    script = f'test -e "{flag}" || exit 1; echo $$ > "{pid_file}"; exec "$0" "$@"'
    dying = UpstreamConfig(name="c", type="stdio", command="sh", args=("-c", script, raw.command or "", *raw.args),
                           timeouts=Timeouts(init_seconds=20.0))
    recorder = Recorder()
    app = create_app(gateway_config(dying, echo_upstream("ok")), observers=[recorder])
    async with served(app) as url:
        flag.unlink()
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        await recorder.wait_until(lambda: "unhealthy" in recorder.kinds("c"))
        async with mcp_session(url) as fresh:
            with pytest.raises(MCPError) as failed:
                await fresh.call_tool("c__echo", {"text": "x"})
            listed = [tool.name for tool in (await fresh.list_tools()).tools]
    assert failed.value.error.code == jsonrpc.UPSTREAM_UNAVAILABLE
    # Killed, or (once its first restart has run) failing to start again since the flag is gone.
    assert failed.value.error.message.startswith(("upstream c is unavailable (restarting: was killed by SIGKILL; ",
                                                  "upstream c is unavailable (restarting: exited with code 1; "))
    assert "c__echo" not in listed  # routed, not offered


async def test_a_tool_of_an_upstream_that_never_got_ready_is_refused_naming_the_upstream_and_its_state() -> None:
    """`c` exits at each start, so it never listed its tools: a call to one of them is not an unknown tool but
    one of an upstream that is not ready, named with what it is doing and why. With every upstream ready, an
    unknown name is still just unknown."""
    failing = raw_upstream("c", "--exit-code", "1", "--tools-named", "echo", timeouts=Timeouts(init_seconds=20.0))
    recorder = Recorder()
    async with running_gateway(gateway_config(failing, echo_upstream("ok")), observers=[recorder]) as url, \
            mcp_session(url) as client:
        with pytest.raises(MCPError) as failed:
            await client.call_tool("c__echo", {"text": "x"})
        await recorder.wait_until(lambda: len(recorder.calls) == 1)
    assert failed.value.error.code == jsonrpc.UPSTREAM_UNAVAILABLE
    assert failed.value.error.message == (
        "Unknown tool: c__echo, unless it is one of upstream c, which is not ready (restarting: exited with code 1; "
        "last stderr: raw server raw starting | fatal: exiting with 1) and has not listed its tools yet; "
        "retry once it is ready")
    assert [(call.status, call.upstream) for call in recorder.calls] == [("upstream_error", "")]
    async with running_gateway(gateway_config(echo_upstream("ok"))) as url, mcp_session(url) as client:
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("c__echo", {"text": "x"})
    assert (unknown.value.error.code, unknown.value.error.message) == (jsonrpc.INVALID_PARAMS, "Unknown tool: c__echo")


async def test_header_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-value"
    upstream = UpstreamConfig(name="locked", type="http", url="http://127.0.0.1:1/mcp?key=" + secret,
                              headers={"Authorization": f"Bearer {secret}"}, timeouts=Timeouts(init_seconds=2.0))
    async with running_gateway(gateway_config(upstream, echo_upstream("ok"))) as url, mcp_session(url) as client:
        await client.list_tools()
    assert "locked" in caplog.text
    assert secret not in caplog.text


async def test_secrets_in_a_stdio_env_or_quoted_by_an_aiohttp_error_never_reach_the_log_or_health(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-value"

    async def redirect_loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(str(request.url))  # aiohttp's TooManyRedirects quotes the full URL

    failing_stdio = raw_upstream("envy", "--exit-code", "1", env={"API_TOKEN": secret},
                                 timeouts=Timeouts(init_seconds=2.0))
    async with fake_upstream(redirect_loop) as fake:
        looping = UpstreamConfig(name="looping", type="http", url=f"{fake.url}?key={secret}",
                                 timeouts=Timeouts(init_seconds=2.0))
        async with running_gateway(gateway_config(looping, failing_stdio, echo_upstream("ok"))) as url, \
                mcp_session(url) as client:
            await client.list_tools()
            async with Http() as http, http.get(url.replace("/mcp", "/healthz")) as response:
                health = await response.text()
    # The fake upstream's own access log shows its URL; what Tollgate logs must not.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tollgate"))
    assert "TooManyRedirects" in logged and "exited with code 1" in logged  # both failures were logged
    assert secret not in logged
    assert secret not in health


async def test_a_secret_an_upstream_prints_on_stderr_is_masked_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-value"
    leaky = raw_upstream("leaky", "--print-env", "API_TOKEN", env={"API_TOKEN": secret, "LOG_LEVEL": "info"})
    async with running_gateway(gateway_config(leaky)) as url, mcp_session(url) as client:
        await client.list_tools()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tollgate"))
    assert "upstream leaky stderr: config: API_TOKEN=***" in logged
    assert secret not in logged
