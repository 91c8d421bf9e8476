"""Config loading: the example file, every class of problem with its TOML path, env references,
paths, overrides, budgets, mcpServers imports and the TOML converter."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import (
    BudgetConfig,
    Config,
    ConfigError,
    UpstreamConfig,
    describe_config,
    load_config,
    mcp_json_to_toml,
    parse_listen,
)
from gateway.config_reader import toml_string

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "tollgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, **overrides: str) -> Config:
    return load_config(write(tmp_path, text), overrides=overrides, environ=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None, **overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env, **overrides)
    return list(caught.value.problems)


def upstream(config: Config, name: str) -> UpstreamConfig:
    return next(u for u in config.upstreams if u.name == name)


def test_example_config_parses_with_paths_resolved_against_its_directory() -> None:
    config = load_config(REPO / "config.example.toml", environ={})

    assert config.server.listen == "127.0.0.1:8765"
    assert config.server.registered_name == "tollgate"
    assert config.store.dsn == f"chdb://{REPO}/data/tollgate"
    everything, notes = config.upstreams
    assert everything.command == str(REPO / "node_modules/.bin/mcp-server-everything")
    assert everything.budget == BudgetConfig(max_result_bytes=200000, action="truncate")
    assert (notes.command, notes.args, notes.cwd) == ("python3", ("demo/notes_server.py",), str(REPO))


def test_no_file_gives_defaults() -> None:
    config = load_config(None, environ={})
    assert config.upstreams == ()
    assert config.server.listen == "127.0.0.1:8765"


def test_every_problem_is_reported_at_once_with_its_toml_path(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        colour = "blue"
        [server]
        listen = "localhost"
        registered_name = "a-name-that-is-far-too-long-for-claude-codes-tool-names"
        session_idle_seconds = -1
        max_sessions = 0
        auth_tokens = ["ok", ""]
        allowed_origins = ["http://localhost:3000/path"]
        [store]
        dsn = "postgres://db"
        flush_rows = "many"
        max_spill_bytes = 0
        [telemetry]
        store_prompt_text = 1
        [upstreams.docs]
        type = "http"
        [upstreams.a]
        comand = "x"
        command = "x"
        [upstreams."bad.name"]
        command = "x"
        [upstreams.web]
        type = "websocket"
        url = "ws://x"
        [upstreams.local]
        type = "stdio"
        command = "x"
        url = "http://x"
        [upstreams.local.timeouts]
        call_seconds = 60
        call_max_seconds = 30
        [upstreams.x]
        url = "ftp://x"
        [upstreams.x.budget]
        action = "block"
        day_calls = 0
        timezone = "Mars/Olympus"
        [upstreams.x.budget.tools."get.thing"]
        action = "truncate"
        """)

    assert found == [
        'colour: unknown key',
        "server.registered_name: must be at most 41 characters: mcp__<name>__<upstream>__<tool>"
        " must fit Claude's 64 with at least 16 left for the tool",
        "server.auth_tokens[1]: must not be empty",
        "server.allowed_origins[0]: expected SCHEME://HOST[:PORT]",
        "server.listen: expected HOST:PORT",
        "server.session_idle_seconds: must be a positive number",
        "server.max_sessions: must be a positive integer",
        "store.dsn: expected chdb:///DIR or http(s)://[USER:PASSWORD@]HOST:PORT[/DB]",
        "store.flush_rows: expected a positive integer, got string",
        "store.max_spill_bytes: must be a positive integer",
        "telemetry.store_prompt_text: expected true or false, got integer",
        'upstreams.docs.url: required for type "http"',
        'upstreams.a.comand: unknown key (did you mean "command"?)',
        'upstreams."bad.name": name must match [A-Za-z0-9_-]+ (it becomes a tool-name prefix)',
        "upstreams.web.type: must be one of http, sse, stdio",
        'upstreams.local.url: not used by type "stdio"',
        "upstreams.local.timeouts.call_max_seconds: must be at least call_seconds",
        "upstreams.x.url: expected an http:// or https:// URL",
        "upstreams.x.budget.timezone: unknown IANA time zone (e.g. UTC, Europe/Berlin)",
        "upstreams.x.budget.action: must be one of deny, truncate, warn",
        "upstreams.x.budget.day_calls: must be a positive integer",
        'upstreams.x.budget.tools."get.thing".action: "truncate" needs max_result_bytes',
    ]


def test_error_message_lists_every_problem_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "nope"\n[upstreams.a]\ntype = "sse"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert f"2 config problem(s) in {path}" in message
    assert "\n  server.listen: expected HOST:PORT" in message
    assert '\n  upstreams.a.url: required for type "sse"' in message


def test_invalid_toml_is_reported_with_its_position(tmp_path: Path) -> None:
    found = problems(tmp_path, "[server\nlisten = 1")
    assert len(found) == 1
    assert "invalid TOML" in found[0]
    assert "line 1" in found[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


def test_truncate_needs_max_result_bytes_at_some_level(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        [upstreams.a]
        command = "x"
        [upstreams.a.budget]
        action = "truncate"
        day_calls = 5
        [upstreams.a.budget.actions]
        day_calls = "truncate"
        """)
    assert found == [
        'upstreams.a.budget.action: "truncate" needs max_result_bytes',
        'upstreams.a.budget.actions.day_calls: "truncate" applies to max_result_bytes only, when set',
    ]


A = '[upstreams.a]\ncommand = "x"\n'


@pytest.mark.parametrize(("toml", "said"), [
    (A + '[upstreams.a.budget]\nmax_result_bytes = -1\naction = "truncate"',
     "upstreams.a.budget.max_result_bytes: must be a positive integer"),
    (A + '[upstreams.a.budget]\nmax_result_bytes = "big"\n[upstreams.a.budget.actions]\nmax_result_bytes = "truncate"',
     "upstreams.a.budget.max_result_bytes: expected a positive integer, got string"),
    (A + '[upstreams.a.budget]\nmax_result_bytes = 0\n[upstreams.a.budget.tools.t]\naction = "truncate"',
     "upstreams.a.budget.max_result_bytes: must be a positive integer"),
    ('[budget]\nmax_result_bytes = 1.5\n' + A + '[upstreams.a.budget]\naction = "truncate"\n'
     '[upstreams.a.budget.tools.t]\naction = "truncate"',
     "budget.max_result_bytes: expected a positive integer, got float"),
    (A + "[upstreams.a.timeouts]\ncall_seconds = -1\ncall_max_seconds = 60",
     "upstreams.a.timeouts.call_seconds: must be a positive number"),
    ('[upstreams.a]\ncommand = "${TOLLGATE_UNSET_COMMAND}"',
     "upstreams.a.command: environment variable TOLLGATE_UNSET_COMMAND is not set"),
    ('[upstreams.b]\ntype = "http"\nurl = 5', "upstreams.b.url: expected a string, got integer"),
])
def test_a_bad_value_is_one_problem_not_also_the_checks_that_depend_on_it(tmp_path: Path, toml: str,
                                                                          said: str) -> None:
    """A value that cannot be read is said once: "truncate needs max_result_bytes" (at that level or one that
    inherits it), "call_max_seconds must be at least call_seconds" and "command/url required" do not follow."""
    assert problems(tmp_path, toml) == [said]


def test_bad_timezone_in_default_budget(tmp_path: Path) -> None:
    assert problems(tmp_path, '[budget]\ntimezone = "Europe/Nowhere"\n') == [
        "budget.timezone: unknown IANA time zone (e.g. UTC, Europe/Berlin)"
    ]


def test_tools_overrides_only_exist_per_upstream(tmp_path: Path) -> None:
    assert problems(tmp_path, "[budget.tools.x]\nday_calls = 1\n") == ['budget.tools: unknown key']


def test_env_references_are_expanded_in_any_string(tmp_path: Path) -> None:
    env = {"DOCS_TOKEN": "s3cret", "HOST": "docs.internal", "TOLLGATE_TOKEN": "t0ken"}
    config = load(tmp_path, """
        [server]
        auth_tokens = ["${TOLLGATE_TOKEN}"]
        [upstreams.docs]
        type = "http"
        url = "https://${HOST}/mcp"
        headers = { Authorization = "Bearer ${DOCS_TOKEN}", X-Lit = "$${NOT_EXPANDED}" }
        [upstreams.tool]
        command = "x"
        env = { LEVEL = "${LEVEL:-info}" }
        """, env)

    docs = upstream(config, "docs")
    assert docs.url == "https://docs.internal/mcp"
    assert docs.headers == {"Authorization": "Bearer s3cret", "X-Lit": "${NOT_EXPANDED}"}
    assert upstream(config, "tool").env == {"LEVEL": "info"}
    assert config.server.auth_tokens == ("t0ken",)


def test_a_stdio_upstream_withholds_variables_the_rest_of_the_config_references(tmp_path: Path) -> None:
    env = {"TOLLGATE_TOKEN": "t0ken", "CH_PASSWORD": "pw", "DOCS_TOKEN": "d0cs", "A_KEY": "k", "ROOT": "/srv",
           "HOME": "/home/u"}
    config = load(tmp_path, """
        [server]
        auth_tokens = ["${TOLLGATE_TOKEN}"]
        [store]
        dsn = "http://default:${CH_PASSWORD}@127.0.0.1:8123/tollgate"
        spill_dir = "${HOME}/spill"
        [upstreams.docs]
        url = "https://docs.example/mcp"
        headers = { Authorization = "Bearer ${DOCS_TOKEN}" }
        [upstreams.a]
        command = "${ROOT}/a"
        args = ["--key", "${A_KEY}"]
        env = { TOKEN = "${TOLLGATE_TOKEN}" }
        [upstreams.b]
        command = "b"
        """, env)

    # its own table (command, args, env) is a's; HOME is never withheld
    assert upstream(config, "a").withheld_env == ("CH_PASSWORD", "DOCS_TOKEN", "TOLLGATE_TOKEN")
    assert upstream(config, "b").withheld_env == ("A_KEY", "CH_PASSWORD", "DOCS_TOKEN", "ROOT", "TOLLGATE_TOKEN")
    assert upstream(config, "docs").withheld_env == ()
    assert problems(tmp_path, '[upstreams.a]\ncommand = "a"\nwithheld_env = ["X"]\n') == [
        "upstreams.a.withheld_env: unknown key"]


def test_missing_env_variable_names_key_and_variable_but_no_values(tmp_path: Path) -> None:
    text = """
        [upstreams.docs]
        type = "http"
        url = "https://${HOST}/mcp"
        headers = { Authorization = "Bearer ${DOCS_TOKEN}" }
        [server]
        auth_tokens = ["${TOLLGATE_TOKEN}"]
        """
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, {"HOST": "very-secret-host"})
    assert caught.value.problems == (
        "server.auth_tokens[0]: environment variable TOLLGATE_TOKEN is not set",
        "upstreams.docs.headers.Authorization: environment variable DOCS_TOKEN is not set",
    )
    assert "very-secret-host" not in str(caught.value)


@pytest.mark.parametrize("listen", ["0.0.0.0:8765", "[::]:8765", "192.168.1.5:80", "gateway.example:8765"])
def test_listening_beyond_loopback_requires_auth_tokens(tmp_path: Path, listen: str) -> None:
    host = parse_listen(listen)[0]
    assert problems(tmp_path, f'[server]\nlisten = "{listen}"\n') == [
        f"server.auth_tokens: required when listening on {host}"
    ]
    config = load(tmp_path, f'[server]\nlisten = "{listen}"\nauth_tokens = ["t"]\n')
    assert config.server.listen == listen


@pytest.mark.parametrize("listen", ["127.0.0.1:1", "127.8.9.10:8765", "[::1]:8765", "localhost:0"])
def test_loopback_listen_needs_no_tokens(tmp_path: Path, listen: str) -> None:
    assert load(tmp_path, f'[server]\nlisten = "{listen}"\n').server.listen == listen


def test_otlp_listener_beyond_loopback_also_requires_tokens(tmp_path: Path) -> None:
    assert problems(tmp_path, '[server]\notlp_listen = "0.0.0.0:4318"\n') == [
        "server.auth_tokens: required when listening on 0.0.0.0"
    ]


def test_cli_overrides_win_over_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, '[server]\nlisten = "127.0.0.1:1"\n[store]\ndsn = "http://ch:8123/db"\n',
                  listen="127.0.0.1:9999", data_dir="rel/data")
    assert config.server.listen == "127.0.0.1:9999"
    assert config.store.dsn == f"chdb://{Path.cwd() / 'rel/data'}"


def test_listen_override_is_validated_and_checked_for_exposure(tmp_path: Path) -> None:
    assert problems(tmp_path, "", listen="nope") == ["--listen: expected HOST:PORT"]
    assert problems(tmp_path, "", listen="127.0.0.1:99999") == [
        "--listen: port 99999 is out of range (0-65535; 0 picks a free port)"]
    assert problems(tmp_path, "", listen="0.0.0.0:80") == ["server.auth_tokens: required when listening on 0.0.0.0"]


def test_unknown_override_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown overrides"):
        load_config(None, overrides={"port": "1"})


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    config = load(tmp_path, """
        [store]
        dsn = "chdb:///./data/tg"
        spill_dir = "spill"
        [upstreams.a]
        command = "./bin/server"
        cwd = "work"
        [upstreams.b]
        command = "scripts/run.sh"
        [upstreams.c]
        command = "npx"
        [upstreams.d]
        command = "/usr/bin/env"
        """)
    assert config.store.dsn == f"chdb://{tmp_path}/data/tg"
    assert config.store.spill_dir == str(tmp_path / "spill")
    assert upstream(config, "a").command == str(tmp_path / "bin/server")
    assert upstream(config, "a").cwd == str(tmp_path / "work")
    assert upstream(config, "b").command == str(tmp_path / "scripts/run.sh")
    assert upstream(config, "c").command == "npx"
    assert upstream(config, "d").command == "/usr/bin/env"


def test_absolute_chdb_and_http_dsns_are_kept(tmp_path: Path) -> None:
    assert load(tmp_path, '[store]\ndsn = "chdb:///var/lib/tg"\n').store.dsn == "chdb:///var/lib/tg"
    dsn = "https://user:pw@ch.example:8443/tollgate"
    assert load(tmp_path, f'[store]\ndsn = "{dsn}"\n').store.dsn == dsn


def test_a_cluster_needs_a_server_dsn_and_an_empty_one_means_none(tmp_path: Path) -> None:
    assert problems(tmp_path, '[store]\ndsn = "chdb:///var/lib/tg"\ncluster = "c1"\n') == [
        "store.cluster: needs a ClickHouse server (an http(s):// store.dsn); the embedded chdb:// store has no "
        "cluster"]
    server = '[store]\ndsn = "https://user:pw@ch.example:8443/tollgate"\ncluster = "c1"\n'
    assert load(tmp_path, server).store.cluster == "c1"
    assert problems(tmp_path, server, data_dir=str(tmp_path / "db")) == [
        "store.cluster: needs a ClickHouse server (an http(s):// store.dsn; --data-dir made it embedded); the "
        "embedded chdb:// store has no cluster"]
    assert load(tmp_path, '[store]\ncluster = ""\n').store.cluster is None


def test_upstream_type_is_inferred_from_command_or_url(tmp_path: Path) -> None:
    config = load(tmp_path, '[upstreams.a]\ncommand = "x"\n[upstreams.b]\nurl = "http://h/mcp"\n')
    assert [(u.name, u.type) for u in config.upstreams] == [("a", "stdio"), ("b", "http")]
    assert problems(tmp_path, "[upstreams.c]\nenabled = true\n") == [
        "upstreams.c.type: required: one of http, sse, stdio (or give command or url)"
    ]


def test_an_upstreams_max_message_bytes_is_read_and_defaults_to_64_mib(tmp_path: Path) -> None:
    config = load(tmp_path, """
        [upstreams.capped]
        command = "x"
        max_message_bytes = 1048576
        [upstreams.plain]
        url = "http://h/mcp"
        """)
    assert upstream(config, "capped").max_message_bytes == 1048576
    assert upstream(config, "plain").max_message_bytes == 64 * 1024 * 1024
    assert problems(tmp_path, '[upstreams.c]\ncommand = "x"\nmax_message_bytes = 0\n') == [
        "upstreams.c.max_message_bytes: must be a positive integer"]


def test_budgets_merge_default_then_upstream_then_tool(tmp_path: Path) -> None:
    config = load(tmp_path, """
        [budget]
        day_calls = 100
        timezone = "Europe/Berlin"
        fail_open = false
        [upstreams.plain]
        command = "x"
        [upstreams.big]
        command = "x"
        [upstreams.big.budget]
        max_result_bytes = 5000
        action = "truncate"
        [upstreams.big.budget.actions]
        day_calls = "warn"
        [upstreams.big.budget.tools."dump.all"]
        max_result_bytes = 100
        [upstreams.big.budget.tools.ping]
        action = "deny"
        """)
    default = BudgetConfig(day_calls=100, timezone="Europe/Berlin", fail_open=False)
    assert config.budget_default == default
    assert upstream(config, "plain").budget == default
    big = upstream(config, "big").budget
    assert big is not None
    assert (big.day_calls, big.max_result_bytes, big.action, big.timezone) == (100, 5000, "truncate", "Europe/Berlin")
    assert big.for_tool("dump.all") == dataclasses.replace(big, max_result_bytes=100, tools={})
    assert big.for_tool("ping").action == "deny"
    assert big.for_tool("other") is big
    assert big.action_for("max_result_bytes") == "truncate"
    assert big.action_for("day_calls") == "warn"
    assert big.action_for("session_bytes") == "deny"


def test_upstream_without_any_budget_has_none(tmp_path: Path) -> None:
    assert upstream(load(tmp_path, '[upstreams.a]\ncommand = "x"\n'), "a").budget is None


CLAUDE_CODE_MCP_JSON = {
    "mcpServers": {
        "github": {"type": "http", "url": "https://api.example/mcp", "headers": {"Authorization": "Bearer ${GH}"}},
        "stream": {"type": "streamable-http", "url": "http://127.0.0.1:9000/mcp"},
        "legacy": {"type": "sse", "url": "http://127.0.0.1:9001/sse"},
        "bare-url": {"url": "http://127.0.0.1:9002/mcp"},
        "local": {"type": "stdio", "command": "./server.sh", "args": ["--x", "a \"q\" \\ b"], "env": {"K": "v"}},
    }
}
CLAUDE_DESKTOP_CONFIG = {
    "globalShortcut": "Ctrl+Space",
    "mcpServers": {
        "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
        "off": {"command": "uvx", "args": ["mcp-server-time"], "disabled": True, "alwaysAllow": ["x"]},
    },
}


def test_mcp_json_import_of_claude_code_and_desktop_shapes(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj/.mcp.json").write_text(json.dumps(CLAUDE_CODE_MCP_JSON))
    (tmp_path / "desktop.json").write_text(json.dumps(CLAUDE_DESKTOP_CONFIG))
    config = load(tmp_path, """
        import_mcp_servers = ["proj/.mcp.json", "desktop.json"]
        [upstreams.legacy]
        command = "mine"
        """, {"GH": "tok"})

    names = [u.name for u in config.upstreams]
    assert names == ["bare-url", "filesystem", "github", "legacy", "local", "off", "stream"]
    github = upstream(config, "github")
    assert (github.type, github.url) == ("http", "https://api.example/mcp")
    assert github.headers == {"Authorization": "Bearer tok"}
    assert upstream(config, "stream").type == "http"
    assert upstream(config, "bare-url").type == "http"
    assert upstream(config, "legacy").command == "mine"  # the TOML file wins a name clash
    local = upstream(config, "local")
    assert (local.type, local.command, local.env) == ("stdio", str(tmp_path / "proj/server.sh"), {"K": "v"})
    assert local.origin == f"import_mcp_servers[0]: {tmp_path / 'proj/.mcp.json'}"
    assert upstream(config, "filesystem").args == ("-y", "@modelcontextprotocol/server-filesystem", "/tmp")
    assert upstream(config, "off").enabled is False
    assert config.import_mcp_servers == (tmp_path / "proj/.mcp.json", tmp_path / "desktop.json")


def test_invalid_mcp_json_entries_are_reported_with_their_json_path(tmp_path: Path) -> None:
    bad = {"mcpServers": {
        "a": {"command": 5},
        "b": {"type": "ws", "url": "x"},
        "c": {"type": "http", "command": "x", "url": "http://h/"},
        "d": {"args": ["x"]},
        "e e": {"command": "x"},
        "f": {"url": "ftp://x"},
        "g": {"command": "x", "env": {"K": "${UNSET}"}},
    }}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text("{")
    found = problems(tmp_path, 'import_mcp_servers = ["bad.json", "broken.json", "absent.json"]\n')
    assert found == [
        "import_mcp_servers[0]: mcpServers.a.command: expected a string, got integer",
        "import_mcp_servers[0]: mcpServers.b.type: must be one of stdio, http, streamable-http, streamableHttp, sse",
        'import_mcp_servers[0]: mcpServers.c.command: not used by type "http"',
        "import_mcp_servers[0]: mcpServers.d: needs command (stdio) or url (http, sse)",
        "import_mcp_servers[1]: invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        f"import_mcp_servers[2]: cannot read {tmp_path / 'absent.json'}: No such file or directory",
    ]
    del bad["mcpServers"]["a"], bad["mcpServers"]["b"], bad["mcpServers"]["c"], bad["mcpServers"]["d"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert problems(tmp_path, 'import_mcp_servers = ["bad.json"]\n') == [
        'import_mcp_servers[0]: mcpServers."e e": name must match [A-Za-z0-9_-]+ (it becomes a tool-name prefix)',
        "import_mcp_servers[0]: mcpServers.f.url: expected an http:// or https:// URL",
        "import_mcp_servers[0]: mcpServers.g.env.K: environment variable UNSET is not set",
    ]


@pytest.mark.parametrize("document", [CLAUDE_CODE_MCP_JSON, CLAUDE_DESKTOP_CONFIG])
def test_converted_toml_loads_back_to_the_same_upstreams(tmp_path: Path, document: dict[str, object]) -> None:
    text = json.dumps(document)
    write(tmp_path, text, "servers.json")
    env = {"GH": "tok"}
    imported = load(tmp_path, 'import_mcp_servers = ["servers.json"]\n', env)
    converted = load(tmp_path, mcp_json_to_toml(text), env)

    assert converted.upstreams == tuple(dataclasses.replace(u, origin=None) for u in imported.upstreams)


def test_converter_keeps_env_references_and_sanitizes_names() -> None:
    text = json.dumps({"mcpServers": {
        "Google Drive": {"command": "gd", "env": {"TOKEN": "${GD_TOKEN}"}},
        "Google_Drive": {"command": "x"},
    }})
    toml_text = mcp_json_to_toml(text)
    parsed = tomllib.loads(toml_text)
    assert parsed["upstreams"]["Google_Drive-2"] == {"type": "stdio", "command": "gd", "env": {"TOKEN": "${GD_TOKEN}"}}
    assert parsed["upstreams"]["Google_Drive"] == {"type": "stdio", "command": "x"}
    assert '# "Google Drive" in the JSON' in toml_text


def test_converter_rejects_invalid_json_as_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        mcp_json_to_toml('{"servers": {}}')
    assert caught.value.problems == ("mcpServers: expected an object",)


@given(st.text())
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"x = {toml_string(value)}")["x"] == value


def test_describe_config_shows_upstreams_and_hides_secrets(tmp_path: Path) -> None:
    config = load(tmp_path, """
        [store]
        dsn = "http://user:hunter2@ch:8123/db"
        [upstreams.docs]
        url = "https://u:pw@docs.example/mcp?key=abc"
        [upstreams.docs.budget]
        max_result_bytes = 1000
        action = "truncate"
        day_calls = 10
        session_calls = 5
        [upstreams.docs.budget.actions]
        session_calls = "warn"
        day_bytes = "warn"
        [upstreams.docs.budget.tools.search]
        day_calls = 3
        action = "warn"
        [upstreams.run]
        command = "python3"
        args = ["srv.py", "--flag"]
        enabled = false
        """)
    text = describe_config(config)
    assert "hunter2" not in text and "pw" not in text and "abc" not in text
    assert "store: http://***@ch:8123/db" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["NAME", "TYPE"])
    docs, run = lines[header + 1].split(), lines[header + 2].split()
    assert docs[:4] == ["docs", "http", "https://***@docs.example/mcp?***", "yes"]
    # each limit with the action it takes: a block-wide truncate denies on the counting limits; an action for a
    # limit not set is not shown; the tool's merged limits on their own line
    assert " ".join(docs[4:]) == ("max_result_bytes 1000 (truncate), session_calls 5 (warn), day_calls 10 (deny); "
                                  "1 tool override(s)")
    assert run == ["run", "stdio", "python3", "srv.py", "--flag", "no", "-"]
    assert lines[header + 3:] == ["tool budgets (merged with their upstream's):",
                                  "  docs tool search: max_result_bytes 1000 (warn), session_calls 5 (warn), "
                                  "day_calls 3 (warn)"]


def test_the_spill_bound_defaults_to_one_gib_and_is_read_from_the_store_table(tmp_path: Path) -> None:
    assert load(tmp_path, "").store.max_spill_bytes == 1024**3
    assert load(tmp_path, "[store]\nmax_spill_bytes = 5000000\n").store.max_spill_bytes == 5_000_000


def test_an_imported_entry_that_is_tollgate_itself_is_skipped(tmp_path: Path) -> None:
    # ~/.claude.json holds Tollgate's own registration once `claude mcp add -s user tollgate ...` ran.
    write(tmp_path, json.dumps({"mcpServers": {
        "tollgate": {"type": "http", "url": "http://127.0.0.1:8790/mcp"},
        "other": {"type": "http", "url": "http://127.0.0.1:8791/mcp"}}}), "claude.json")
    config = load(tmp_path, 'import_mcp_servers = ["claude.json"]\n[server]\nlisten = "127.0.0.1:8790"\n')
    assert [u.name for u in config.upstreams] == ["other"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8790/mcp", "http://localhost:8790/mcp", "http://[::1]:8790/x"])
def test_a_toml_upstream_that_points_at_tollgate_itself_is_an_error(tmp_path: Path, url: str) -> None:
    found = problems(tmp_path, f'[server]\nlisten = "127.0.0.1:8790"\n[upstreams.me]\ntype = "http"\nurl = "{url}"\n')
    assert found == ["upstreams.me.url: points at this Tollgate itself (127.0.0.1:8790)"]


def test_an_upstream_on_another_port_of_this_host_is_not_itself(tmp_path: Path) -> None:
    config = load(tmp_path, '[server]\nlisten = "127.0.0.1:8790"\n[upstreams.a]\ntype = "http"\n'
                  'url = "http://127.0.0.1:8791/mcp"\n')
    assert [u.name for u in config.upstreams] == ["a"]


def test_converter_leaves_out_bad_entries_and_says_why_when_asked() -> None:
    text = json.dumps({"mcpServers": {"good": {"command": "x"}, "bad": 3, "nocmd": {"type": "stdio"},
                                      "nourl": {"type": "sse"}}})
    found: list[str] = []
    parsed = tomllib.loads(mcp_json_to_toml(text, found))
    assert list(parsed["upstreams"]) == ["good"]
    assert found == ["mcpServers.bad: expected an object, got integer", 'mcpServers.nocmd: type "stdio" needs command',
                     'mcpServers.nourl: type "sse" needs url']
    with pytest.raises(ConfigError):
        mcp_json_to_toml(text)
