"""The `tollgate` command as a user runs it: check-config, import-mcp-json, setup claude, and clear startup
errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from tests.fixtures.procs import require_everything
from tests.gateway.conftest import ECHO_SERVER, RAW_SERVER, ROOT, mcp_session
from tests.gateway.test_durability import free_port, tollgate_process, write_config

CAPTURED_LOGS = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "s1_protobuf" / "otlp" / "0001_logs.bin"


def tollgate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def echo_config(path: Path, extra: str = "") -> Path:
    path.write_text(f"""
[upstreams.a]
type = "stdio"
command = {orjson.dumps(sys.executable).decode()}
args = [{orjson.dumps(str(ECHO_SERVER)).decode()}, "--name", "a"]
{extra}
""")
    return path


def test_check_config_lists_upstreams_and_every_exposed_tool_name(tmp_path: Path) -> None:
    result = tollgate("check-config", "--config", str(echo_config(tmp_path / "t.toml")))
    assert result.returncode == 0, result.stderr
    assert "a  " in result.stdout and "stdio" in result.stdout
    for tool in ("echo", "blob", "whoami"):
        assert f"mcp__tollgate__a__{tool}  <-  a/{tool}" in result.stdout


def test_setup_claude_prints_the_configured_endpoint_and_token_and_writes_a_project_file_keeping_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[server]\nlisten = "0.0.0.0:9911"\nauth_tokens = ["tok-123"]\n')
    project, home = tmp_path / "project", tmp_path / "home"
    settings = project / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"permissions": {"allow": ["Bash(ls)"]}, "env": {"MY_VAR": "kept"}}))
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))

    assert main(["setup", "claude", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    env = json.loads(printed.split("\n\n")[0].split("\n", 1)[1])["env"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:9911"  # the wildcard bind, made connectable
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "Authorization=Bearer tok-123"
    assert env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1" and env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert ("claude mcp add --transport http tollgate http://127.0.0.1:9911/mcp "
            "--header 'Authorization: Bearer tok-123'") in printed

    assert main(["setup", "claude", "--config", str(config), "--write", "project"]) == 0
    written = capsys.readouterr().out
    assert f"warning: {settings} is often committed; it will hold the bearer token" in written
    assert f"Wrote {settings}" in written
    assert json.loads(settings.read_text()) == {"permissions": {"allow": ["Bash(ls)"]},
                                                "env": {"MY_VAR": "kept", **env}}
    assert not home.exists()  # the user's settings were not touched


def test_check_config_warns_of_a_per_tool_budget_for_a_tool_the_upstream_does_not_list(tmp_path: Path) -> None:
    config = echo_config(tmp_path / "t.toml", '[upstreams.a.budget.tools."echoo"]\nday_calls = 1\n')
    result = tollgate("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    listed = sorted(line.split("<-  a/")[1] for line in result.stdout.splitlines() if "<-  a/" in line)
    closest_first = ["echo", *(name for name in listed if name != "echo")]
    more = len(closest_first) - 20
    shown = ", ".join(closest_first[:20]) + (f", ... ({more} more)" if more > 0 else "")
    assert warnings == ["tollgate: warning: upstream 'a': the budget has limits for tools it does not list, which "
                        f"never apply: echoo; its tools, closest first: {shown}"]
    assert tollgate("check-config", "--offline", "--config", str(config)).stderr == ""


def test_check_config_logs_no_background_failure_for_a_request_that_arrives_while_it_shuts_down(
        tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    args = [str(RAW_SERVER), "--name", "late", "--roots-on-eof"]
    config.write_text(f"[upstreams.late]\ncommand = {orjson.dumps(sys.executable).decode()}\n"
                      f"args = {orjson.dumps(args).decode()}\n")
    result = tollgate("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "upstream late asked roots/list outside any call" in result.stderr  # the refusal was sent at shutdown
    assert "background task failed" not in result.stderr


def test_report_help_says_the_sessions_list_has_mcp_only_sessions_too() -> None:
    result = tollgate("report", "--help")
    assert result.returncode == 0
    assert "Claude Code sessions and MCP-only sessions (whose calls no Claude Code session claims), newest first" \
        in " ".join(result.stdout.split())


def test_check_config_reports_every_bad_key_with_its_path_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n[upstreams.x]\ntype = "http"\n[upstreams.y]\ncomand = "z"\n')
    result = tollgate("check-config", "--config", str(bad))
    assert result.returncode == 2
    for path in ("server.listen", "upstreams.x.url", "upstreams.y.comand"):
        assert path in result.stderr


@pytest.mark.parametrize(("budget", "path", "said"), [
    ('action = "explode"', "upstreams.a.budget.action", "must be one of deny, truncate, warn"),
    ("day_calls = -5", "upstreams.a.budget.day_calls", "must be a positive integer"),
    ('timezone = "Mars/Olympus_Mons"', "upstreams.a.budget.timezone", "unknown IANA time zone"),
    ('[upstreams.a.budget.actions]\nsession_calls = "explode"', "upstreams.a.budget.actions.session_calls",
     "must be one of deny, truncate, warn"),
    ("[upstreams.a.budget.tools.echo]\nmax_result_bytes = 0", "upstreams.a.budget.tools.echo.max_result_bytes",
     "must be a positive integer"),
])
def test_serve_with_a_bad_budget_value_exits_2_naming_its_toml_path_before_serving(
        tmp_path: Path, budget: str, path: str, said: str) -> None:
    port = free_port()
    config = write_config(tmp_path / "t.toml", port, tmp_path / "db")
    config.write_text(config.read_text() + f"[upstreams.a.budget]\nsession_calls = 10\n{budget}\n")
    result = tollgate("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tollgate: invalid configuration\n")
    assert f"{path}: {said}" in result.stderr and "Traceback" not in result.stderr
    assert "Tollgate listening" not in result.stderr and "upstream a" not in result.stderr
    assert not (tmp_path / "db").exists()  # nothing was opened: no store, no pid file, no port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the port it would have listened on is still free


def test_check_config_shows_each_limits_effective_action_and_a_bad_value_alone(tmp_path: Path) -> None:
    budget = ('[upstreams.a.budget]\nmax_result_bytes = 2000\nday_calls = 9\naction = "truncate"\n'
              '[upstreams.a.budget.actions]\nsession_calls = "warn"\n[upstreams.a.budget.tools.echo]\n'
              'day_calls = 2\naction = "warn"\n')
    result = tollgate("check-config", "--offline", "--config", str(echo_config(tmp_path / "t.toml", budget)))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("  a  "))
    assert row.endswith("  max_result_bytes 2000 (truncate), day_calls 9 (deny); 1 tool override(s)")
    assert result.stdout.splitlines()[-2:] == ["tool budgets (merged with their upstream's):",
                                               "  a tool echo: max_result_bytes 2000 (warn), day_calls 2 (warn)"]

    bad = echo_config(tmp_path / "bad.toml", '[upstreams.a.budget]\nmax_result_bytes = "2k"\naction = "truncate"\n')
    result = tollgate("check-config", "--offline", "--config", str(bad))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"tollgate: invalid configuration\n1 config problem(s) in {bad}:\n"
                             "  upstreams.a.budget.max_result_bytes: expected a positive integer, got string\n")


def test_import_mcp_json_prints_toml_that_check_config_accepts(tmp_path: Path) -> None:
    mcp_json = tmp_path / ".mcp.json"
    mcp_json.write_text(json.dumps({"mcpServers": {
        "a": {"command": sys.executable, "args": [str(ECHO_SERVER), "--name", "a"]},
        "docs": {"type": "http", "url": "http://127.0.0.1:9/mcp"}}}))
    converted = tollgate("import-mcp-json", str(mcp_json))
    assert converted.returncode == 0, converted.stderr
    (tmp_path / "t.toml").write_text(converted.stdout)
    checked = tollgate("check-config", "--offline", "--config", str(tmp_path / "t.toml"))
    assert checked.returncode == 0, checked.stderr
    assert "docs" in checked.stdout and "http" in checked.stdout


async def test_a_second_server_on_the_same_data_dir_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "db"
    first = write_config(tmp_path / "one.toml", free_port(), data_dir)
    second = write_config(tmp_path / "two.toml", free_port(), data_dir)
    async with tollgate_process(first):
        result = await asyncio.to_thread(tollgate, "serve", "--config", str(second))
    assert result.returncode == 3
    assert "in use by another Tollgate process" in result.stderr


@pytest.mark.parametrize("where", ["data dir is a file", "data dir cannot be made", "spill dir is a file"])
def test_an_unusable_data_or_spill_directory_is_a_one_line_store_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("")
    data_dir = {"data dir is a file": tmp_path / "file", "data dir cannot be made": Path("/proc/tollgate")}.get(
        where, tmp_path / "db")
    config = write_config(tmp_path / "t.toml", free_port(), data_dir)
    if where == "spill dir is a file":
        config.write_text(config.read_text().replace("[store]\n", f'[store]\nspill_dir = "{tmp_path / "file"}"\n'))
    result = tollgate("serve", "--config", str(config))
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    what = "spill directory" if where == "spill dir is a file" else "data directory"
    shown = tmp_path / "file" if where != "data dir cannot be made" else data_dir
    assert f"tollgate: store: cannot use {what} {shown}: " in result.stderr.splitlines()[-1]


async def test_otlp_listen_serves_only_the_otlp_routes_on_a_second_address(tmp_path: Path) -> None:
    from aiohttp import ClientSession as Http

    body = CAPTURED_LOGS.read_bytes()
    port, otlp_port = free_port(), free_port()
    config = write_config(tmp_path / "t.toml", port, tmp_path / "db")
    config.write_text(config.read_text().replace(f'listen = "127.0.0.1:{port}"',
                                                 f'listen = "127.0.0.1:{port}"\notlp_listen = "127.0.0.1:{otlp_port}"'))
    otlp, main_url = f"http://127.0.0.1:{otlp_port}", f"http://127.0.0.1:{port}"
    async with tollgate_process(config), Http() as http:
        async with http.post(f"{otlp}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}) as ok:
            assert ok.status == 200
        initialize = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        mcp_headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        async with http.post(f"{otlp}/mcp", data=initialize, headers=mcp_headers) as mcp:
            assert mcp.status == 404
        for path in ("/api/sessions", "/api/budgets", "/", "/metrics", "/healthz"):
            async with http.get(otlp + path) as other:
                assert other.status == 404, path
        async with http.get(f"{main_url}/api/sessions") as on_main:  # the routes are still on the main address
            assert on_main.status == 200
        async with http.post(f"{otlp}/v1/logs", data=body, headers={  # a rebound name: the guard holds here too
                "Content-Type": "application/x-protobuf", "Host": f"evil.example:{otlp_port}"}) as rebound:
            assert rebound.status == 403


def test_a_report_where_no_server_ever_ran_says_so_and_creates_nothing(tmp_path: Path) -> None:
    result = tollgate("report", "calls", cwd=tmp_path)  # no config here: the default ./data/tollgate
    assert result.returncode == 3
    assert f"no Tollgate data at {tmp_path.resolve() / 'data' / 'tollgate'}" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["sessions", "calls", "budgets"])
def test_a_report_against_a_store_that_is_down_is_one_clear_line(tmp_path: Path, command: str) -> None:
    store_port = free_port()  # nothing listens there
    config = tmp_path / "t.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
                      f'[store]\ndsn = "http://default:s3cret@127.0.0.1:{store_port}/tollgate"\n')
    result = tollgate("report", command, "--config", str(config))
    assert result.returncode == 3
    assert result.stderr == (f"tollgate: store unreachable at http://default:***@127.0.0.1:{store_port}/tollgate: "
                             "Connection refused\n")


async def test_a_report_whose_config_names_another_address_reads_through_the_served_one_or_says_it_cannot(
        tmp_path: Path) -> None:
    """The running server locks the store, so only its API can answer. Its pid file names the address it serves,
    which wins over the report's config; a pid file without one (an older Tollgate's: the pid line alone) leaves
    the config's address, and when nothing answers there the report says so in one line."""
    served = write_config(tmp_path / "served.toml", free_port(), tmp_path / "db")
    port = free_port()
    other = write_config(tmp_path / "other.toml", port, tmp_path / "db")  # same store, the API elsewhere
    pid_file = tmp_path / "db" / "tollgate.pid"
    async with tollgate_process(served):
        found = await asyncio.to_thread(tollgate, "report", "calls", "--json", "--config", str(other))
        pid_file.write_text(pid_file.read_text().splitlines()[0] + "\n")
        lost = await asyncio.to_thread(tollgate, "report", "calls", "--config", str(other))
    assert (found.returncode, found.stderr) == (0, "")
    assert orjson.loads(found.stdout)["calls"] == []
    assert lost.returncode == 2
    assert lost.stderr.startswith(f"tollgate: report calls: a running Tollgate owns the store, but its API at "
                                  f"http://127.0.0.1:{port} does not answer (")
    assert lost.stderr.endswith("); pass the config it serves with\n") and lost.stderr.count("\n") == 1


@pytest.mark.parametrize("which", ["listen", "otlp_listen"])
async def test_a_busy_port_is_a_one_line_error_said_before_the_store_or_any_upstream_starts(
        tmp_path: Path, which: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "t.toml", port if which == "listen" else free_port(), tmp_path / "db")
        if which == "otlp_listen":
            config.write_text(config.read_text().replace("[store]", f'otlp_listen = "127.0.0.1:{port}"\n[store]'))
        result = await asyncio.to_thread(tollgate, "serve", "--config", str(config))
    assert result.returncode == 4
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "db").exists()  # the store was never opened (its migrations would have made it)
    assert "upstream a" not in result.stderr  # nor any upstream started


@pytest.mark.parametrize(("listen", "tokens", "said"), [
    ("0.0.0.0:8770", ("tok-s3cret",), "claude mcp add --transport http tollgate http://127.0.0.1:8770/mcp "
                                      "--header 'Authorization: Bearer <token>' (<token>: one of "
                                      "server.auth_tokens; `tollgate setup claude` prints it filled in)"),
    ("[::]:8770", ("tok-s3cret",), "claude mcp add --transport http tollgate 'http://[::1]:8770/mcp' "
                                   "--header 'Authorization: Bearer <token>' (<token>: one of "
                                   "server.auth_tokens; `tollgate setup claude` prints it filled in)"),
    ("127.0.0.1:8765", (), "claude mcp add --transport http tollgate http://127.0.0.1:8765/mcp"),
])
def test_the_startup_register_line_is_the_command_setup_prints_with_a_placeholder_for_the_token(
        listen: str, tokens: tuple[str, ...], said: str, caplog: pytest.LogCaptureFixture) -> None:
    from gateway.cli import _announce
    from gateway.config import Config, ServerConfig
    from ingest.claude_settings import mcp_add_command

    caplog.set_level(logging.INFO, "tollgate")
    _announce(Config(server=ServerConfig(listen=listen, auth_tokens=tokens)))
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("register it: ")]
    assert line == f"register it: {said}"
    assert line.startswith("register it: " + mcp_add_command(listen, "tollgate", "<token>" if tokens else None))
    assert "tok-s3cret" not in caplog.text


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    mcp_json = tmp_path / ".mcp.json"
    mcp_json.write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head`) is gone before anything is written
    try:
        result = subprocess.run([sys.executable, "-m", "gateway.cli", "import-mcp-json", str(mcp_json)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr


def test_import_mcp_json_of_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = tollgate("import-mcp-json", str(tmp_path / "nowhere.json"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "No such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_mcp_json_converts_what_it_can_and_names_the_rest(tmp_path: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    claude_json.write_text(json.dumps({
        "mcpServers": {"a": {"command": "x"}, "broken": "nope"},
        "projects": {"/src/app": {"mcpServers": {"db": {"command": "db-mcp"}}}}}))
    result = tollgate("import-mcp-json", str(claude_json))
    assert result.returncode == 1
    assert tomllib.loads(result.stdout)["upstreams"] == {"a": {"type": "stdio", "command": "x"}}
    assert "left out mcpServers.broken: expected an object, got string" in result.stderr
    assert 'projects."/src/app".mcpServers.db' in result.stderr


def test_import_mcp_json_skips_an_entry_that_is_this_tollgate_itself_with_a_warning(tmp_path: Path) -> None:
    mcp_json = tmp_path / ".claude.json"
    mcp_json.write_text(json.dumps({"mcpServers": {
        "tollgate": {"type": "http", "url": "http://127.0.0.1:8765/mcp"},
        "docs": {"type": "http", "url": "http://127.0.0.1:9/mcp"}}}))
    result = tollgate("import-mcp-json", str(mcp_json), cwd=tmp_path)  # no config: the default 127.0.0.1:8765
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["upstreams"] == {"docs": {"type": "http", "url": "http://127.0.0.1:9/mcp"}}
    assert result.stderr == ("tollgate: warning: skipped mcpServers.tollgate (http://127.0.0.1:8765/mcp): "
                             "it points at this Tollgate itself (127.0.0.1:8765)\n")
    elsewhere = tmp_path / "t.toml"
    elsewhere.write_text('[server]\nlisten = "127.0.0.1:9100"\n')
    result = tollgate("import-mcp-json", str(mcp_json), "--config", str(elsewhere))
    assert result.returncode == 0 and result.stderr == ""
    assert list(tomllib.loads(result.stdout)["upstreams"]) == ["tollgate", "docs"]


async def test_the_demo_config_serves_both_demo_upstreams(tmp_path: Path) -> None:
    from aiohttp import ClientSession as Http

    require_everything()  # node_modules from `npm ci`: a skip on a bare checkout, a failure under CI
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with tollgate_process(ROOT / "config.example.toml", "--data-dir", str(tmp_path / "db"),
                                "--listen", f"127.0.0.1:{port}"):
        async with Http() as http, http.get(f"{base}/healthz") as response:
            health = await response.json()
        async with mcp_session(f"{base}/mcp") as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
    assert {name: u["state"] for name, u in health["upstreams"].items()} == {"everything": "ready", "notes": "ready"}
    assert {"everything__echo", "notes__add_note", "notes__search_notes"} <= set(tools)
    assert {name.split("__", 1)[0] for name in tools} == {"everything", "notes"}


@pytest.mark.parametrize(("command", "listen", "why"), [
    ("setup", "nonsense", "expected HOST:PORT"), ("setup", "127.0.0.1:", "expected HOST:PORT"),
    ("setup", "127.0.0.1:0", "port 0 is out of range (1-65535)"),
    ("setup", "127.0.0.1:70000", "port 70000 is out of range (1-65535)"),
    ("serve", "nonsense", "expected HOST:PORT"), ("serve", "127.0.0.1:70000", "port 70000 is out of range (0-65535"),
])
def test_every_listen_flag_refuses_what_is_not_host_and_port_as_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, listen: str, why: str) -> None:
    argv = [command, "claude"] if command == "setup" else [command]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--config", str(tmp_path / "absent.toml"), "--data-dir", str(tmp_path), "--listen", listen])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert f"argument --listen: {why}" in captured.err and repr(listen) in captured.err
    assert "http://" not in captured.out  # nothing printed for a client to use


def test_setup_claude_takes_a_valid_listen_as_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text(f'[store]\ndsn = "chdb://{tmp_path}/data"\n')
    assert main(["setup", "claude", "--config", str(config), "--listen", "[::1]:9123"]) == 0
    assert "http://[::1]:9123/mcp" in capsys.readouterr().out
