"""TOML configuration to frozen dataclasses, validated at startup: one ConfigError names every bad key.

Owns `${ENV}` references, relative paths (resolved against the config file's directory), CLI
overrides, mcpServers JSON imports and the `check-config` summary. Other modules read only these
dataclasses, never the file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import mcp_json, naming
from gateway.config_reader import Reader, join, present
from gateway.mcp_json import McpJsonError, servers_to_tables

UpstreamType = Literal["stdio", "http", "sse"]
BudgetAction = Literal["deny", "truncate", "warn"]
BUDGET_LIMITS = (
    "max_request_bytes",
    "max_result_bytes",
    "session_bytes",
    "session_calls",
    "session_tokens",
    "day_bytes",
    "day_calls",
    "day_tokens",
)
_log = logging.getLogger(__name__)


class ConfigError(Exception):
    """The config is unusable; `problems` holds one `<toml path>: <what is wrong>` line each."""

    def __init__(self, problems: list[str], source: Path | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{len(problems)} config problem(s){where}:\n{lines}")


@dataclass(frozen=True)
class Timeouts:
    init_seconds: float = 20.0  # start + initialize + first catalog
    call_seconds: float = 120.0  # per request, reset by progress
    call_max_seconds: float = 600.0  # absolute cap even with progress


@dataclass(frozen=True)
class BudgetConfig:
    """Limits for one upstream (or one of its tools): already merged with every enclosing level."""

    max_request_bytes: int | None = None
    max_result_bytes: int | None = None
    session_bytes: int | None = None
    session_calls: int | None = None
    session_tokens: int | None = None
    day_bytes: int | None = None
    day_calls: int | None = None
    day_tokens: int | None = None
    action: BudgetAction = "deny"
    tools: dict[str, BudgetConfig] = field(default_factory=dict)  # per-tool overrides, fully merged
    timezone: str = "UTC"  # IANA zone whose midnight starts a new day
    fail_open: bool = True  # allow calls when spend cannot be read from the store
    actions: dict[str, BudgetAction] = field(default_factory=dict)  # per-limit action overrides

    def action_for(self, limit: str) -> BudgetAction:
        """The action when `limit` is exceeded; a block-wide "truncate" denies on the other limits."""
        action = self.actions.get(limit, self.action)
        return "deny" if action == "truncate" and limit != "max_result_bytes" else action

    def for_tool(self, tool: str) -> BudgetConfig:
        """The budget that applies to one upstream tool (its override, else this one)."""
        return self.tools.get(tool, self)


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    type: UpstreamType
    command: str | None = None  # absolute when given as a relative path in the file
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # absolute; None inherits the gateway's working directory
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    stateful: bool = False  # stdio: one process per client session
    max_message_bytes: int = 64 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    budget: BudgetConfig | None = None  # merged with the top-level [budget]
    origin: str | None = None  # where an imported upstream came from, e.g. "import_mcp_servers[0]"
    # stdio: variables the config references for something else (a token, a DSN password, another upstream),
    # left out of the environment this process inherits
    withheld_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8765"
    registered_name: str = "tollgate"
    auth_tokens: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names a loopback-bound server answers besides loopback ones
    session_idle_seconds: float = 3600.0
    max_sessions: int = 1000  # open client sessions; an initialize past it gets 503
    max_body_bytes: int = 16 * 1024 * 1024
    otlp_listen: str | None = None


@dataclass(frozen=True)
class StoreConfig:
    dsn: str = "chdb:///./data/tollgate"  # relative chdb paths are resolved by load_config
    cluster: str | None = None
    spill_dir: str | None = None
    flush_rows: int = 5000
    flush_seconds: float = 1.0
    max_spill_bytes: int = 1024**3  # past it, OTLP answers 503 and the gateway's own rows are dropped


@dataclass(frozen=True)
class TelemetryConfig:
    store_prompt_text: bool = False
    max_body_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()  # sorted by name
    budget_default: BudgetConfig | None = None
    source: Path | None = None
    import_mcp_servers: tuple[Path, ...] = ()
    # Not settings: how this config was read, so a reload reads the file the same way and names no secret.
    overrides: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # the CLI's listen and data_dir
    from_env: frozenset[str] = field(default=frozenset(), compare=False)  # TOML paths a ${VAR} filled


_TOP_KEYS = ("server", "store", "telemetry", "budget", "upstreams", "import_mcp_servers")
_SERVER_KEYS = tuple(ServerConfig.__dataclass_fields__)
_STORE_KEYS = tuple(StoreConfig.__dataclass_fields__)
_TELEMETRY_KEYS = tuple(TelemetryConfig.__dataclass_fields__)
_TIMEOUT_KEYS = tuple(Timeouts.__dataclass_fields__)
_BUDGET_KEYS = (*BUDGET_LIMITS, "action", "timezone", "fail_open", "actions")
_UPSTREAM_KEYS = tuple(k for k in UpstreamConfig.__dataclass_fields__ if k not in ("name", "origin", "withheld_env"))
_STDIO_ONLY = ("command", "args", "env", "cwd", "stateful")
_HTTP_ONLY = ("url", "headers")
_OVERRIDES = ("listen", "data_dir")
# Never secrets, and servers need them: a `${HOME}` in a path does not take HOME from every stdio upstream.
ALWAYS_INHERITED = frozenset({"HOME", "LANG", "LOGNAME", "PATH", "PWD", "SHELL", "TMPDIR", "USER"})


def load_config(
    path: Path | None,
    *,
    overrides: Mapping[str, str | Path | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate `path` (None: defaults); `overrides` holds the CLI's listen and data_dir."""
    unknown = set(overrides or {}) - set(_OVERRIDES)
    if unknown:
        raise ValueError(f"unknown overrides: {sorted(unknown)}")
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"], path) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: invalid TOML: {exc}"], path) from None
    base_dir = path.resolve().parent if path is not None else Path.cwd()
    reader = Reader(os.environ if environ is None else environ)
    given = {k: v for k, v in (overrides or {}).items() if v}
    config = _read_config(reader, raw, base_dir, given)
    if reader.problems:
        raise ConfigError(reader.problems, path)
    return replace(config, source=path.resolve() if path is not None else None,
                   overrides=tuple((k, str(v)) for k, v in sorted(given.items())),
                   from_env=frozenset(p for p, _ in reader.references))


def mcp_json_to_toml(json_text: str, problems: list[str] | None = None, *, server: ServerConfig | None = None,
                     skipped: list[str] | None = None) -> str:
    """TOML `[upstreams.*]` tables for an mcpServers JSON file; `${VAR}` references kept as written.

    With `problems`, convertible entries are converted and the others described there. With `server`, an entry
    that points at that Tollgate itself is left out (as `import_mcp_servers` skips it) and named in `skipped`.
    """
    def keep(name: str, table: Mapping[str, Any]) -> bool:
        url = table.get("url")
        if server is None or not isinstance(url, str) or not points_at_self(url, server):
            return True
        if skipped is not None:
            skipped.append(f"{join('mcpServers', name)} ({_redact_url(url)})")
        return False

    try:
        return mcp_json.mcp_json_to_toml(json_text, problems, keep)
    except McpJsonError as exc:
        raise ConfigError(list(exc.problems)) from None


def parse_listen(value: str, *, free_port: bool = True) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) to (host, port); ValueError when malformed. Port 0 (a free one) only
    with `free_port`, where Tollgate binds: an address a client is told to connect to needs its real port."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ValueError("expected HOST:PORT")
    if free_port and not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    if not free_port and not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_config(r: Reader, raw: dict[str, Any], base_dir: Path, overrides: Mapping[str, Any]) -> Config:
    r.check_keys(raw, "", _TOP_KEYS)
    server = _read_server(r, r.table(raw, "server", ""), overrides.get("listen"))
    store = _read_store(r, r.table(raw, "store", ""), base_dir, overrides.get("data_dir"))
    telemetry_table = r.table(raw, "telemetry", "")
    r.check_keys(telemetry_table, "telemetry", _TELEMETRY_KEYS)
    telemetry = TelemetryConfig(**present(
        store_prompt_text=r.boolean(telemetry_table, "store_prompt_text", "telemetry"),
        max_body_bytes=r.integer(telemetry_table, "max_body_bytes", "telemetry"),
    ))
    default_budget = _read_budget(r, raw.get("budget"), "budget", None, allow_tools=False)
    upstreams: dict[str, UpstreamConfig] = {}
    tables: dict[str, str] = {}  # upstream name -> the TOML path of its table
    for name, table in r.table(raw, "upstreams", "").items():
        upstream = _read_upstream(r, name, table, join("upstreams", name), base_dir, default_budget)
        if upstream is not None:
            upstreams[name], tables[name] = upstream, join("upstreams", name)
    imports = tuple(base_dir / Path(p).expanduser() for p in r.strings(raw, "import_mcp_servers", "") or ())
    for index, json_path in enumerate(imports):
        for upstream, table_path in _import_mcp_json(r, index, json_path, default_budget):
            if upstream.name in upstreams:
                _log.info("upstream %r from %s ignored: already defined (%s)",
                          upstream.name, json_path, upstreams[upstream.name].origin or "TOML")
            else:
                upstreams[upstream.name], tables[upstream.name] = upstream, table_path
    _check_exposure(r, server)
    upstreams = {name: _withhold_env(r, u, tables[name]) for name, u in _without_self(r, server, upstreams).items()}
    return Config(server, store, telemetry, tuple(sorted(upstreams.values(), key=lambda u: u.name)),
                  default_budget, None, imports)


def _read_server(r: Reader, t: dict[str, Any], listen_override: str | None) -> ServerConfig:
    r.check_keys(t, "server", _SERVER_KEYS)
    listen = r.string(t, "listen", "server")
    if listen_override is not None:
        listen = r.expand(str(listen_override), "--listen")
    registered = r.string(t, "registered_name", "server")
    if registered is not None:
        try:
            naming.exposed_room(registered)
        except ValueError as exc:
            r.error("server.registered_name", str(exc))
    tokens = r.strings(t, "auth_tokens", "server")
    for i, token in enumerate(tokens or ()):
        if not token.strip():
            r.error(f"server.auth_tokens[{i}]", "must not be empty")
    origins = r.strings(t, "allowed_origins", "server")
    for i, origin in enumerate(origins or ()):
        parts = urlsplit(origin)
        if not (parts.scheme and parts.netloc) or parts.path or parts.query:
            r.error(f"server.allowed_origins[{i}]", "expected SCHEME://HOST[:PORT]")
    hosts = r.strings(t, "allowed_hosts", "server")
    for i, host in enumerate(hosts or ()):
        if not host.strip() or "/" in host or ":" in host.strip("[]").replace("::", ""):
            r.error(f"server.allowed_hosts[{i}]", "expected a host name without scheme, port or path")
    otlp_listen = r.string(t, "otlp_listen", "server")
    for key, value in (("server.listen", listen), ("server.otlp_listen", otlp_listen)):
        if value is not None and (why := _listen_problem(value)):
            r.error("--listen" if key == "server.listen" and listen_override else key, why)
    return ServerConfig(**present(
        listen=listen, registered_name=registered, auth_tokens=tokens, allowed_origins=origins,
        allowed_hosts=hosts, session_idle_seconds=r.number(t, "session_idle_seconds", "server"),
        max_sessions=r.integer(t, "max_sessions", "server"),
        max_body_bytes=r.integer(t, "max_body_bytes", "server"), otlp_listen=otlp_listen,
    ))


def _check_exposure(r: Reader, server: ServerConfig) -> None:
    """Security: anything reachable beyond this machine needs a bearer token."""
    if server.auth_tokens:
        return
    for value in (server.listen, server.otlp_listen):
        if value is not None and _valid_listen(value) and not is_loopback(host := parse_listen(value)[0]):
            r.error("server.auth_tokens", f"required when listening on {host}")


def _without_self(r: Reader, server: ServerConfig, upstreams: dict[str, UpstreamConfig]) -> dict[str, UpstreamConfig]:
    """Tollgate in front of itself lists its own tools again on every refresh, without end. An imported entry
    that points here (~/.claude.json holds Tollgate's own registration) is skipped; a TOML one is an error."""
    kept = {}
    for name, upstream in upstreams.items():
        if not (upstream.url and points_at_self(upstream.url, server)):
            kept[name] = upstream
        elif upstream.origin:
            _log.info("upstream %r from %s skipped: it is this Tollgate itself (%s)", name, upstream.origin,
                      _redact_url(upstream.url))
        else:
            r.error(join(join("upstreams", name), "url"), f"points at this Tollgate itself ({server.listen})")
    return kept


def points_at_self(url: str, server: ServerConfig) -> bool:
    """Whether `url` reaches the Tollgate listening as `server` (its port on its host, loopback or a wildcard)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    host = parts.hostname or ""
    for value in (server.listen, server.otlp_listen):
        if value is None or not _valid_listen(value):
            continue
        listen_host, listen_port = parse_listen(value)
        wildcard = listen_host in ("0.0.0.0", "::")
        if port == listen_port and (host == listen_host or is_loopback(host) or wildcard):
            return True
    return False


def _listen_problem(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def _valid_listen(value: str) -> bool:
    return _listen_problem(value) is None


def _read_store(r: Reader, t: dict[str, Any], base_dir: Path, data_dir: str | Path | None) -> StoreConfig:
    r.check_keys(t, "store", _STORE_KEYS)
    dsn = r.string(t, "dsn", "store") or StoreConfig.dsn
    if data_dir is not None:
        dsn = "chdb://" + os.path.abspath(Path(data_dir).expanduser())
    elif dsn.startswith("chdb://"):
        dsn = _resolve_chdb(dsn, base_dir)
    elif not _valid_http_url(dsn):
        r.error("store.dsn", "expected chdb:///DIR or http(s)://[USER:PASSWORD@]HOST:PORT[/DB]")
    if dsn == "chdb://":
        r.error("store.dsn", "chdb:// needs a directory, e.g. chdb:///./data/tollgate")
    cluster = r.string(t, "cluster", "store") or None  # "" (the README's template) means none
    if cluster and dsn.startswith("chdb://"):
        # An embedded engine has no cluster: ON CLUSTER DDL would fail at startup with a ClickHouse error.
        r.error("store.cluster", f"needs a ClickHouse server (an http(s):// store.dsn{_by_flag(data_dir)}); "
                "the embedded chdb:// store has no cluster")
    spill_dir = r.string(t, "spill_dir", "store")
    return StoreConfig(**present(
        dsn=dsn, cluster=cluster,
        spill_dir=_resolve_path(spill_dir, base_dir) if spill_dir else None,
        flush_rows=r.integer(t, "flush_rows", "store"), flush_seconds=r.number(t, "flush_seconds", "store"),
        max_spill_bytes=r.integer(t, "max_spill_bytes", "store"),
    ))


def _by_flag(data_dir: str | Path | None) -> str:
    return "" if data_dir is None else "; --data-dir made it embedded"


def _resolve_chdb(dsn: str, base_dir: Path) -> str:
    """`chdb:///./x` and `chdb://x` are relative to the config directory; `chdb:///x` is absolute."""
    rest, sep, query = dsn.removeprefix("chdb://").partition("?")
    if not rest:
        return dsn
    if rest == "/." or rest.startswith(("/./", "/../", "/~")) or rest == "/..":
        rest = rest[1:]
    if not rest.startswith("/"):
        rest = _resolve_path(rest, base_dir)
    return f"chdb://{rest}{sep}{query}"


def _resolve_path(value: str, base_dir: Path) -> str:
    return os.path.normpath(base_dir / Path(value).expanduser())


def _resolve_command(command: str, base_dir: Path) -> str:
    """A relative path (`./x`, `bin/x`) is relative to the config directory; bare names use PATH."""
    expanded = os.path.expanduser(command)
    if "/" in expanded and not os.path.isabs(expanded):
        return _resolve_path(expanded, base_dir)
    return expanded


def _read_upstream(
    r: Reader, name: str, t: object, path: str, base_dir: Path, default_budget: BudgetConfig | None,
    origin: str | None = None,
) -> UpstreamConfig | None:
    if not naming.LEGAL_NAME.fullmatch(name):
        r.error(path, "name must match [A-Za-z0-9_-]+ (it becomes a tool-name prefix)")
    if not isinstance(t, dict):
        r.error(path, "expected a table")
        return None
    r.check_keys(t, path, _UPSTREAM_KEYS)
    kind = r.choice(t, "type", path, get_args(UpstreamType))
    if kind is None and "type" not in t:
        kind = "stdio" if "command" in t else "http" if "url" in t else None
        if kind is None:
            r.error(join(path, "type"), "required: one of http, sse, stdio (or give command or url)")
    for key in _HTTP_ONLY if kind == "stdio" else _STDIO_ONLY if kind else ():
        if key in t:
            r.error(join(path, key), f'not used by type "{kind}"')
    command, url, cwd = r.string(t, "command", path), r.string(t, "url", path), r.string(t, "cwd", path)
    if kind == "stdio" and not command and not r.failed(join(path, "command")):
        r.error(join(path, "command"), 'required for type "stdio"')
    if kind in ("http", "sse") and not url and not r.failed(join(path, "url")):
        r.error(join(path, "url"), f'required for type "{kind}"')
    elif kind in ("http", "sse") and url and not _valid_http_url(url):
        r.error(join(path, "url"), "expected an http:// or https:// URL")
    budget = _read_budget(r, t.get("budget"), join(path, "budget"), default_budget, allow_tools=True,
                          enclosing=("budget",))
    return UpstreamConfig(name, kind or "stdio", **present(
        command=_resolve_command(command, base_dir) if command else None,
        args=r.strings(t, "args", path), env=r.string_map(t, "env", path),
        cwd=_resolve_path(cwd, base_dir) if cwd else None,
        url=url, headers=r.string_map(t, "headers", path),
        enabled=r.boolean(t, "enabled", path), stateful=r.boolean(t, "stateful", path),
        max_message_bytes=r.integer(t, "max_message_bytes", path),
        timeouts=_read_timeouts(r, r.table(t, "timeouts", path), join(path, "timeouts")),
        budget=budget, origin=origin,
    ))


def _withhold_env(r: Reader, upstream: UpstreamConfig, table_path: str) -> UpstreamConfig:
    """A stdio upstream keeps out of its environment what the rest of the config references: those are
    secrets meant for Tollgate or another upstream (one it needs, it names in its own `env`)."""
    if upstream.type != "stdio":
        return upstream
    own = table_path + "."
    names = {name for path, name in r.references if not path.startswith(own)} - ALWAYS_INHERITED
    return replace(upstream, withheld_env=tuple(sorted(names)))


def _valid_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _read_timeouts(r: Reader, t: dict[str, Any], path: str) -> Timeouts:
    r.check_keys(t, path, _TIMEOUT_KEYS)
    timeouts = Timeouts(**present(**{key: r.number(t, key, path) for key in _TIMEOUT_KEYS}))
    if timeouts.call_max_seconds < timeouts.call_seconds and not r.failed(
            join(path, "call_seconds"), join(path, "call_max_seconds")):
        r.error(join(path, "call_max_seconds"), "must be at least call_seconds")
    return timeouts


def _read_budget(
    r: Reader, t: object, path: str, parent: BudgetConfig | None, *, allow_tools: bool,
    enclosing: tuple[str, ...] = (),
) -> BudgetConfig | None:
    """One budget table merged over `parent` (read from the `enclosing` tables): keys given here win, the others
    are inherited."""
    if t is None:
        return parent
    if not isinstance(t, dict):
        r.error(path, "expected a table")
        return parent
    r.check_keys(t, path, (*_BUDGET_KEYS, "tools") if allow_tools else _BUDGET_KEYS)
    actions_table = r.table(t, "actions", path)
    r.check_keys(actions_table, join(path, "actions"), BUDGET_LIMITS)
    actions = {k: a for k in actions_table if (a := r.choice(actions_table, k, join(path, "actions"), _ACTIONS))}
    timezone = r.string(t, "timezone", path)
    if timezone is not None and not _valid_zone(timezone):
        r.error(join(path, "timezone"), "unknown IANA time zone (e.g. UTC, Europe/Berlin)")
    base = parent or BudgetConfig()
    budget = replace(base, tools={}, actions={**base.actions, **actions}, **present(
        action=r.choice(t, "action", path, _ACTIONS), timezone=timezone,
        fail_open=r.boolean(t, "fail_open", path),
        **{limit: r.integer(t, limit, path) for limit in BUDGET_LIMITS},
    ))
    unset = budget.max_result_bytes is None and not r.failed(  # a bad one, here or inherited, was said already
        *(join(table, "max_result_bytes") for table in (*enclosing, path)))
    if unset and "action" in t and budget.action == "truncate":
        r.error(join(path, "action"), '"truncate" needs max_result_bytes')
    for limit, action in actions.items():
        if action == "truncate" and (limit != "max_result_bytes" or unset):
            r.error(join(path, "actions", limit), '"truncate" applies to max_result_bytes only, when set')
    tools_path = join(path, "tools")
    tools = {
        tool: tool_budget
        for tool, tool_table in r.table(t, "tools", path).items()
        if (tool_budget := _read_budget(r, tool_table, join(tools_path, tool), budget, allow_tools=False,
                                        enclosing=(*enclosing, path)))
    }
    return replace(budget, tools=tools)


_ACTIONS: tuple[BudgetAction, ...] = get_args(BudgetAction)


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _import_mcp_json(
    r: Reader, index: int, path: Path, default_budget: BudgetConfig | None
) -> list[tuple[UpstreamConfig, str]]:
    """Upstreams of one mcpServers file, each with its path; relative commands resolve against the file's directory."""
    where = f"import_mcp_servers[{index}]"
    try:
        tables = servers_to_tables(path.read_text(encoding="utf-8"))
    except OSError as exc:
        r.error(where, f"cannot read {path}: {exc.strerror}")
        return []
    except McpJsonError as exc:
        for problem in exc.problems:
            r.error(where, problem)
        return []
    upstreams = []
    for name, table in tables.items():
        json_path = f"{where}: {join('mcpServers', name)}"
        upstream = _read_upstream(r, name, table, json_path, path.parent, default_budget, f"{where}: {path}")
        if upstream is not None:
            upstreams.append((upstream, json_path))
    return upstreams


def describe_config(config: Config) -> str:
    """The `tollgate check-config` summary: server, store and a table of upstreams."""
    server = config.server
    room = naming.exposed_room(server.registered_name)
    lines = [
        f"config: {config.source or '(defaults)'}",
        f"server: listen {server.listen}, auth tokens {len(server.auth_tokens)}, "
        f"tools exposed as mcp__{server.registered_name}__<upstream>__<tool> (<= {room} characters)",
        f"store: {_redact_url(config.store.dsn)}",
        f"upstreams: {len(config.upstreams)}",
    ]
    rows = [("NAME", "TYPE", "TARGET", "ENABLED", "BUDGET")]
    for u in config.upstreams:
        target = shlex.join([u.command or "", *u.args]) if u.type == "stdio" else _redact_url(u.url or "")
        rows.append((u.name, u.type, target, "yes" if u.enabled else "no", describe_budget(u.budget)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        lines.append("  " + "".join(row[i].ljust(widths[i] + 2) for i in range(4)) + row[4])
    overrides = [(u.name, tool, budget) for u in config.upstreams if u.budget
                 for tool, budget in sorted(u.budget.tools.items())]
    if overrides:
        lines.append("tool budgets (merged with their upstream's):")
        lines += [f"  {name} tool {tool}: {describe_limits(budget)}" for name, tool, budget in overrides]
    return "\n".join(line.rstrip() for line in lines)


def describe_budget(budget: BudgetConfig | None) -> str:
    """One line: each limit that is set with the action it takes when exceeded, the zone when not UTC, and how
    many tools have their own limits (`describe_tool_budgets` lists them)."""
    if budget is None:
        return "-"
    parts = [describe_limits(budget)]
    if budget.timezone != "UTC":
        parts.append(budget.timezone)
    if not budget.fail_open:
        parts.append("fail closed")
    if budget.tools:
        parts.append(f"{len(budget.tools)} tool override(s)")
    return "; ".join(parts)


def describe_limits(budget: BudgetConfig) -> str:
    """`max_result_bytes 1000 (truncate), day_calls 10 (deny)`: the effective action of each limit set (a
    block-wide "truncate" denies on every limit but max_result_bytes)."""
    return ", ".join(f"{limit} {value} ({budget.action_for(limit)})" for limit in BUDGET_LIMITS
                     if (value := getattr(budget, limit)) is not None) or "no limits"


def _redact_url(url: str) -> str:
    """Drop credentials and query strings, which often carry secrets."""
    parts = urlsplit(url)
    if not parts.netloc or not parts.scheme.startswith("http"):
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?***" if parts.query else "")
