"""The `tollgate` command and composition root: load config, open the store, build apps, run.

The only module that imports `ingest` and `ui` (lazily, per subcommand), so the packages stay
independent of each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gateway import logfilter
from gateway.config import Config, ConfigError, load_config
from gateway.listen import ListenError
from store.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:  # imported lazily at run time: `tollgate --help` loads neither
    from gateway.prometheus import Metrics
    from ingest.app import OtlpStats

log = logging.getLogger("tollgate")
DEFAULT_CONFIG = Path("config.example.toml")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logfilter.install()
    try:
        result: int = args.run(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return result
    except ConfigError as exc:
        print(f"tollgate: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"tollgate: store: {exc}", file=sys.stderr)
        return 3
    except ListenError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 4
    except BrokenPipeError:  # `tollgate report ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="MCP gateway with usage accounting")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway, OTLP endpoint, API and UI")
    _config_args(serve)
    serve.add_argument("--listen", type=listen_arg(free_port=True),
                       help="HOST:PORT (overrides server.listen; port 0 picks a free one)")
    serve.add_argument("--data-dir", help="embedded store directory (overrides store.dsn)")
    serve.add_argument("--no-store", action="store_true",
                       help="run the bare gateway for benchmarks: calls are relayed but not metered or "
                            "recorded (no store, budgets, OTLP, API, UI or /metrics)")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="validate the config and list exposed tools")
    _config_args(check)
    check.add_argument("--offline", action="store_true", help="do not start upstreams")
    check.set_defaults(run=_check_config)

    convert = commands.add_parser("import-mcp-json", help="print an mcpServers JSON file as TOML upstreams")
    convert.add_argument("file", type=Path)
    _config_args(convert, "whose listen address an entry must not point at")
    convert.set_defaults(run=_import_mcp_json)

    setup = commands.add_parser("setup", help="point a client at Tollgate")
    setup.add_argument("client", choices=["claude"])
    _config_args(setup)
    setup.add_argument("--write", choices=["user", "project"], help="merge into Claude Code settings.json")
    setup.add_argument("--listen", type=listen_arg(free_port=False),
                       help="HOST:PORT Tollgate serves (default: the running server's, else the config's)")
    setup.add_argument("--data-dir", help="the running server's data directory (overrides the config)")
    setup.set_defaults(run=_setup)

    reload = commands.add_parser("reload", help="make the running server re-read its budgets (sends SIGHUP)")
    _config_args(reload)
    reload.add_argument("--data-dir", help="the server's embedded store directory (where its pid file is)")
    reload.set_defaults(run=_reload)

    report = commands.add_parser("report", help="usage reports")
    reports = report.add_subparsers(dest="report", required=True)
    budgets = reports.add_parser("budgets", help="limits, spend per window, denials and resets per upstream")
    _config_args(budgets)
    budgets.add_argument("--data-dir", help="embedded store directory (overrides store.dsn)")
    budgets.add_argument("--json", action="store_true", help="print the /api/budgets JSON")
    budgets.set_defaults(run=_report_budgets)
    _usage_reports(reports)
    return parser


def _usage_reports(reports: Any) -> None:
    """`report sessions|session ID|servers [NAME]|calls|usage`: the JSON API's documents as tables or JSON."""
    helps = {"sessions": "Claude Code sessions and MCP-only sessions (whose calls no Claude Code session claims), "
                         "newest first",
             "session": "one session (Claude Code or MCP-only) turn by turn, with its calls",
             "servers": "per upstream: calls, errors, bytes, tool-list size", "calls": "recent tool calls",
             "usage": "tokens and spend per session and model"}
    for name, text in helps.items():
        sub = reports.add_parser(name, help=text)
        if name == "session":
            sub.add_argument("session_id", metavar="ID", help="Claude Code session.id or MCP session id, or the "
                             "start of exactly one (at least 6 characters, as reports and the UI shorten ids)")
        if name == "servers":
            sub.add_argument("name", nargs="?", help="one upstream in detail")
        _config_args(sub)
        sub.add_argument("--data-dir", help="embedded store directory (overrides store.dsn)")
        sub.add_argument("--json", action="store_true", help="print the API's JSON document")
        where = " to look for an ID prefix in" if name == "session" else ""
        sub.add_argument("--since", help=f"ISO-8601 start of the time range{where}"
                         + (" (default: 30 days back)" if where else ""))
        sub.add_argument("--until", help=f"ISO-8601 end of the time range{where}")
        if name in ("sessions", "calls"):
            sub.add_argument("--server", help="only this upstream")
            sub.add_argument("--limit", help="rows")
        if name == "sessions":
            sub.add_argument("--user", help="user id, email or account")
            sub.add_argument("--offset", help="rows to skip")
        if name == "calls":
            sub.add_argument("--session", help="MCP or Claude Code session id, or the start of exactly one (at "
                             "least 6 characters)")
        sub.set_defaults(run=_report)


def listen_arg(*, free_port: bool) -> Callable[[str], str]:
    """The argparse type of every command's --listen: HOST:PORT as the config's `server.listen` is checked
    (`parse_listen`), so a typo is a usage error (exit 2) rather than an address printed or served. Port 0 only
    where Tollgate binds (`free_port`)."""
    from gateway.config import parse_listen

    def check(value: str) -> str:
        try:
            parse_listen(value, free_port=free_port)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}: got {value!r} (for example 127.0.0.1:8765)") from None
        return value

    return check


def _config_args(parser: argparse.ArgumentParser, why: str = "") -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"TOML config{' ' + why if why else ''} (default: {DEFAULT_CONFIG} when present)")


def _load(args: argparse.Namespace, **overrides: Any) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    return load_config(path, overrides=overrides)


# ----- serve ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    config = _load(args, listen=args.listen, data_dir=args.data_dir)
    try:
        import uvloop

        uvloop.run(_run_server(config, store=not args.no_store))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep serving without it
        asyncio.run(_run_server(config, store=not args.no_store))
    return 0


async def _run_server(config: Config, *, store: bool = True) -> None:
    from aiohttp import web

    from gateway import listen
    from gateway.app import create_app
    from gateway.budget_cli import pid_path, remove_pid, write_pid
    from gateway.config import parse_listen

    # Bound first: a port in use is said at once, before migrations and upstream startup.
    sockets = listen.bind(*parse_listen(config.server.listen))
    otlp_listen = (config.server.otlp_listen or "") if store else ""
    try:
        otlp_sockets = listen.bind(*parse_listen(otlp_listen)) if otlp_listen else []
    except ListenError:
        listen.close(sockets)
        raise
    try:
        service = await open_service(config) if store else Service(create_app(config), None, None)
    except BaseException:
        listen.close(sockets + otlp_sockets)
        raise
    runner = web.AppRunner(service.app, access_log=None, auto_decompress=False)
    await runner.setup()
    runners = [runner]
    # Only a server that owns the store owns its data directory (and so the pid file `reload` and reports read);
    # a `--no-store` gateway beside it must not replace or remove the owner's.
    pid_file = pid_path(config) if store else None
    if not store and any(u.budget for u in config.upstreams):
        log.warning("--no-store: budgets are off (they are charged from the store's spend)")
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, service.reload)  # `tollgate reload`: budgets only
        await _serve_on(runner, sockets)
        if service.otlp_app is not None and otlp_sockets:
            runners.append(await _listen_otlp(service.otlp_app, otlp_sockets, otlp_listen))
        elif config.server.otlp_listen:
            log.warning("server.otlp_listen ignored: --no-store runs no OTLP receiver")
        if pid_file:
            write_pid(pid_file, config.server.listen)
        _announce(config)
        await stop.wait()
        log.info("shutting down")
    finally:
        if pid_file:
            remove_pid(pid_file)
        for each in reversed(runners):
            await each.cleanup()
        listen.close(sockets + otlp_sockets)
        await service.close()


async def _listen_otlp(app: Any, sockets: list[Any], listen: str) -> Any:
    """Serve the OTLP-only app (no /mcp, /api or UI) on its own runner, e.g. the standard port 4318."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    try:
        await _serve_on(runner, sockets)
    except BaseException:
        await runner.cleanup()
        raise
    log.info("OTLP/HTTP also on http://%s/v1/{logs,metrics,traces}", listen)
    return runner


async def _serve_on(runner: Any, sockets: list[Any]) -> None:
    from aiohttp import web

    for sock in sockets:
        await web.SockSite(runner, sock).start()


@dataclass
class Service:
    """Everything `tollgate serve` runs, opened in order and closed in reverse."""

    app: Any
    store: Any
    writer: Any
    policy: Any = None  # gateway.enforcement.BudgetPolicy
    spend: Any = None  # gateway.budget_store.SpendLoader
    reloader: Any = None  # gateway.budget_cli.BudgetReloader
    otlp_app: Any = None  # the OTLP routes alone, for server.otlp_listen

    def reload(self) -> bool:
        """Re-read the config file and apply its budgets (SIGHUP); sessions stay as they are."""
        return self.reloader is not None and bool(self.reloader.reload())

    async def close(self) -> None:
        if self.spend is not None:
            await self.spend.close()
        if self.writer is not None:
            await self.writer.stop()
        if self.store is not None:
            await self.store.close()


async def open_service(config: Config, *, now: Callable[[], float] = time.time) -> Service:
    """Open the store and writer, then build the app with ingest, API and UI routes mounted; `now` is the
    budgets' clock (day windows, resets, the spend rebuild's end)."""
    from gateway.accounting import StoreRecorder
    from gateway.app import create_app
    from gateway.budget_cli import BudgetReloader
    from gateway.budget_store import SpendLoader
    from gateway.enforcement import BudgetPolicy
    from gateway.prometheus import Metrics
    from store.client import Store
    from store.deferred import open_store
    from store.schema import migrate
    from store.writer import Writer

    # A DeferredStore (server down at startup) has the Store interface; the writer spills until it connects.
    store = cast(Store, await open_store(config.store.dsn, cluster=config.store.cluster, on_connect=migrate))
    try:
        writer = Writer(store, _spill_dir(config), flush_rows=config.store.flush_rows,
                        flush_seconds=config.store.flush_seconds, max_spill_bytes=config.store.max_spill_bytes)
        await writer.start()
    except BaseException:
        await store.close()
        raise
    metrics = Metrics()
    recorder = StoreRecorder(writer)
    policy = BudgetPolicy(config, sink=writer, metrics=metrics, now=now)
    spend = SpendLoader(store, policy.budgets, replay=writer.replay_leftovers)
    await spend.start()
    service = Service(None, store, writer, policy, spend, BudgetReloader(config, policy))
    service.app = create_app(config, observers=[recorder, metrics, policy], policy=policy,
                             extend=lambda app, hub: _mount(app, hub, service, config, metrics))
    return service


def _spill_dir(config: Config) -> Path:
    if config.store.spill_dir:
        return Path(config.store.spill_dir)
    if config.store.dsn.startswith("chdb://"):
        from store.client import chdb_path

        return Path(chdb_path(config.store.dsn)) / "spill"
    return Path("data") / "spill"


def _mount(app: Any, hub: Any, service: Service, config: Config, metrics: Any) -> None:
    """Routes beside /mcp: OTLP ingest, /metrics, /api/budgets, and (when present) the API and UI; for
    `server.otlp_listen`, a second app with the OTLP routes only (same writer, stats and binder)."""
    from aiohttp import web

    from gateway.app import RELAY_KEY
    from gateway.binding import Binder
    from gateway.budget_report import add_budget_routes
    from gateway.guards import rebinding_guard
    from gateway.rejections import REJECTIONS_KEY
    from ingest.app import OtlpSettings, add_otlp_routes, create_otlp_app

    store, writer, policy = service.store, service.writer, service.policy
    rejections = app[REJECTIONS_KEY]
    binder = Binder(hub.sessions, on_bound=hub.session_started)  # MCP session -> Claude Code session, inline
    hub.observers.append(binder)
    settings = OtlpSettings(
        max_body_bytes=config.telemetry.max_body_bytes, store_prompt_text=config.telemetry.store_prompt_text,
        auth_tokens=config.server.auth_tokens)
    otlp = add_otlp_routes(app, writer, settings, on_rows=binder.telemetry_rows, on_refused=rejections.refused)
    if config.server.otlp_listen:  # the same DNS-rebinding guard, judged by the OTLP listener's own address
        guard = rebinding_guard(replace(config.server, listen=config.server.otlp_listen), rejections)
        service.otlp_app = create_otlp_app(writer, settings, stats=otlp, on_rows=binder.telemetry_rows,
                                           middlewares=[rejections.middleware(), guard],
                                           on_refused=rejections.refused)
    hub.health_checks["store"] = writer.health
    hub.health_checks["budgets"] = policy.health
    metrics.gauges["tollgate_upstream_up"] = lambda: {
        (("upstream", name),): 1.0 if u.state.value == "ready" else 0.0 for name, u in hub.upstreams.items()}
    metrics.sampled_counters["tollgate_upstream_non_json_lines_total"] = lambda: {
        (("upstream", name),): float(u.non_json_lines) for name, u in hub.upstreams.items()}
    metrics.gauges["tollgate_sessions_open"] = lambda: {(): float(len(hub.sessions))}
    # initialize requests refused with 503 because server.max_sessions sessions were open
    metrics.sampled_counters["tollgate_sessions_refused_total"] = lambda: {(): float(hub.sessions.refused)}
    metrics.gauges["tollgate_writer_pending_rows"] = lambda: {(): float(writer.stats().get("queued_rows", 0))}
    metrics.gauges["tollgate_writer_spill_bytes"] = lambda: {(): float(writer.stats().get("spilled_bytes", 0))}
    metrics.gauges["tollgate_writer_max_spill_bytes"] = lambda: {(): float(writer.max_spill_bytes)}
    # Rows dropped since start because the spill was full (a long store outage); only the gateway's own.
    metrics.sampled_counters["tollgate_writer_dropped_rows_total"] = lambda: {
        (): float(writer.stats().get("dropped_rows", 0))}
    _otlp_series(metrics, otlp)
    # Client messages dropped on purpose (a cancel naming no request id, ...) and upstream notifications that no
    # single session could be told were its own (stdio logs while several sessions have calls in flight).
    metrics.sampled_counters["tollgate_client_messages_ignored_total"] = lambda: {
        (("reason", k),): float(v) for k, v in app[RELAY_KEY].ignored.items()}
    # Requests refused at the HTTP edge (every 4xx answer of every route: token, Host, Origin, media type, size,
    # unknown session, path or method, bad query), by route and status.
    metrics.sampled_counters["tollgate_http_rejections_total"] = lambda: {
        (("route", route), ("status", str(status))): float(n) for (route, status), n in rejections.counts.items()}
    metrics.sampled_counters["tollgate_upstream_notifications_unrouted_total"] = lambda: {
        (("upstream", name),): float(u.unrouted) for name, u in hub.upstreams.items()}

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain")

    app.router.add_get("/metrics", prometheus)
    add_budget_routes(app, policy.budgets, config.server.auth_tokens)
    try:
        from ui.app import add_ui_routes
    except ImportError:
        return
    add_ui_routes(app, store, hub=hub, config=config)


def _otlp_series(metrics: Metrics, otlp: OtlpStats) -> None:
    """The OTLP receiver's counters (ingest.app.OtlpStats, both listen addresses together) on /metrics: every
    request by signal and answer (429 and 503 are back-pressure: the exporter retries), records stored,
    records dropped whole (`partial_success.rejected_*`) and values stored as NULL."""
    metrics.sampled_counters["tollgate_otlp_requests_total"] = lambda: {
        (("signal", signal), ("status", str(status))): float(n) for (signal, status), n in otlp.requests.items()}
    metrics.sampled_counters["tollgate_otlp_records_accepted_total"] = lambda: _by_signal(otlp.records_accepted)
    metrics.sampled_counters["tollgate_otlp_records_rejected_total"] = lambda: _by_signal(otlp.records_rejected)
    metrics.sampled_counters["tollgate_otlp_invalid_values_total"] = lambda: _by_signal(otlp.invalid_values)


def _by_signal(counts: Mapping[str, int]) -> dict[tuple[tuple[str, str], ...], float]:
    return {(("signal", signal),): float(n) for signal, n in counts.items()}


TOKEN_PLACEHOLDER = "<token>"  # the log never holds a token; `tollgate setup claude` prints the command with it


def _announce(config: Config) -> None:
    from ingest.claude_settings import mcp_add_command

    listen = config.server.listen
    log.info("Tollgate listening on http://%s (MCP at /mcp, health at /healthz)", listen)
    token = TOKEN_PLACEHOLDER if config.server.auth_tokens else None
    log.info("register it: %s%s", mcp_add_command(listen, config.server.registered_name, token),
             f" ({TOKEN_PLACEHOLDER}: one of server.auth_tokens; `tollgate setup claude` prints it filled in)"
             if token else "")


# ----- other commands ------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    from gateway.config import describe_config

    config = _load(args)
    print(describe_config(config))
    if args.offline or not config.upstreams:
        return 0
    return asyncio.run(_print_exposed_tools(config))


async def _print_exposed_tools(config: Config) -> int:
    from gateway.hub import Hub
    from gateway.upstreams.factory import make_transport
    from ui.terminal import visible

    hub = Hub(config, make_transport)
    await hub.start()
    try:
        prefix = f"mcp__{config.server.registered_name}__"
        print(f"\nexposed tools ({len(hub.catalog.tools)}):")
        for tool in hub.catalog.tools:
            upstream, original = hub.catalog.tool_routes[tool["name"]]
            print(visible(f"  {prefix}{tool['name']}  <-  {upstream}/{original}"))  # names from upstreams
        _warn_unknown_budget_tools(config, hub.catalog)
        unhealthy = [u for u in hub.upstreams.values() if u.state.value != "ready"]
        for client in unhealthy:
            print(visible(f"upstream {client.name} is {client.state.value}: {client.last_error}"))
        return 1 if unhealthy else 0
    finally:
        await hub.close()


def _warn_unknown_budget_tools(config: Config, catalog: Any) -> None:
    from gateway.catalog import snapshots
    from gateway.enforcement import budget_rules, unknown_tools_warning

    rules = budget_rules(config)
    for snapshot in snapshots(catalog):
        tools = [tool for tool, _, _ in snapshot.tools]
        if text := unknown_tools_warning(snapshot.upstream, rules.get(snapshot.upstream), tools):
            print(f"tollgate: warning: {text}", file=sys.stderr)


def _reload(args: argparse.Namespace) -> int:
    from gateway.budget_cli import send_reload

    pid, path = send_reload(_load(args, data_dir=args.data_dir))
    if pid is None:
        print(f"tollgate: no running server found (no live pid in {path})", file=sys.stderr)
        return 1
    # The server, not this command, knows the settings it serves: only its log can say what changed.
    print(f"sent SIGHUP to tollgate (pid {pid}); its log lists the budget changes it applied and every other "
          "changed setting, which takes effect after a restart")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ui.cli_report import ReportError, api_path
    from ui.terminal import visible

    session_id = getattr(args, "session_id", None)
    if session_id is not None and not session_id.strip():
        print("tollgate: report session: a session id is required (got an empty one); `report sessions` lists "
              "them, and `report usage` shows requests that carry none as '(no session id)'", file=sys.stderr)
        return 2
    config = _load(args, data_dir=args.data_dir)
    path = api_path(args.report, session_id, getattr(args, "name", None))
    keys = ("since", "until", "server", "limit", "user", "offset", "session")
    query = {k: str(getattr(args, k)) for k in keys if getattr(args, k, None) not in (None, "")}
    try:
        with _store_clients_quiet(args.log_level):
            print(asyncio.run(_fetch_report(config, args.report, path, query, args.json)))
    except ReportError as exc:
        print(f"tollgate: report {args.report}: {visible(str(exc))}", file=sys.stderr)  # names stored ids
        return 1 if exc.status == 404 else 2
    except StoreUnavailable as exc:
        return _store_down(config, exc)
    return 0


@contextlib.contextmanager
def _store_clients_quiet(log_level: str) -> Iterator[None]:
    """A report says in one line that the store is down: the HTTP client libraries' own retry and driver warnings,
    and the store's health line meant for a long-running server's log, would only repeat it, so they are silenced
    (unless --log-level debug) while it runs."""
    from store.health import DRIVER_LOGGERS

    names = (*DRIVER_LOGGERS, "store.health")
    loggers = [logging.getLogger(name) for name in names] if log_level != "debug" else []
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def _store_down(config: Config, exc: StoreUnavailable) -> int:
    from store.client import redact_dsn
    from store.errors import network_cause

    where = redact_dsn(config.store.dsn)
    if (cause := network_cause(exc)) is not None:
        print(f"tollgate: store unreachable at {where}: {cause}", file=sys.stderr)
    else:
        print(f"tollgate: store unavailable at {where}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
    return 3


async def _fetch_report(config: Config, command: str, path: str, query: dict[str, str], as_json: bool) -> str:
    """Read through the running server's API when it owns the embedded store, else from the store directly."""
    from gateway.budget_cli import server_url
    from store.client import Store, require_existing_data
    from store.errors import StoreLocked
    from store.schema import migrate
    from ui.api import settings_of
    from ui.cli_report import fetch_direct, fetch_http, fetch_report, render

    require_existing_data(config.store.dsn)
    try:
        store = await Store.open(config.store.dsn, cluster=config.store.cluster)
    except StoreLocked:
        token = config.server.auth_tokens[0] if config.server.auth_tokens else None
        base_url = server_url(config)

        async def through_server(api_path: str, api_query: Mapping[str, str]) -> Any:
            return await fetch_http(base_url, api_path, api_query, token)

        return render(command, await fetch_report(through_server, path, query), as_json)
    try:
        await migrate(store)

        async def direct(api_path: str, api_query: Mapping[str, str]) -> Any:
            return await fetch_direct(store, api_path, api_query, settings_of(config))  # as the server has them

        return render(command, await fetch_report(direct, path, query), as_json)
    finally:
        await store.close()


def _report_budgets(args: argparse.Namespace) -> int:
    from gateway.budget_cli import budgets_report, print_report

    config = _load(args, data_dir=args.data_dir)
    try:
        with _store_clients_quiet(args.log_level):
            print_report(asyncio.run(budgets_report(config)), args.json)
    except StoreUnavailable as exc:
        return _store_down(config, exc)
    return 0


def _import_mcp_json(args: argparse.Namespace) -> int:
    from gateway.config import mcp_json_to_toml
    from gateway.mcp_json import project_scoped

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}"]) from None
    problems: list[str] = []
    skipped: list[str] = []
    server = _load(args).server  # an entry that points at this Tollgate would proxy it to itself
    print(mcp_json_to_toml(text, problems, server=server, skipped=skipped), end="")
    for problem in problems:
        print(f"tollgate: left out {problem}", file=sys.stderr)
    for entry in skipped:
        print(f"tollgate: warning: skipped {entry}: it points at this Tollgate itself ({server.listen})",
              file=sys.stderr)
    if scoped := project_scoped(text):
        print(f"tollgate: {len(scoped)} project-scoped server(s) not converted ({', '.join(scoped[:5])}"
              f"{', ...' if len(scoped) > 5 else ''}); convert that project's .mcp.json instead",
              file=sys.stderr)
    return 1 if problems else 0


def _setup(args: argparse.Namespace) -> int:
    from gateway.budget_cli import served_listen
    from ingest.claude_settings import run_setup_claude

    config = _load(args, data_dir=args.data_dir)
    listen = args.listen or served_listen(config) or config.server.listen  # a `serve --listen` is found too
    if listen != config.server.listen:
        print(f"# Tollgate serves {listen} (the config says {config.server.listen})")
    token = config.server.auth_tokens[0] if config.server.auth_tokens else None
    return run_setup_claude(listen=listen, registered_name=config.server.registered_name,
                            token=token, write=args.write, home=Path.home(), cwd=Path.cwd(), out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
