"""Budget plumbing for the CLI: the server's pid file, `tollgate reload` (SIGHUP), reloading budgets in place,
and `tollgate report budgets` (from the running server's /api/budgets, else straight from the store).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, UpstreamConfig, load_config
from gateway.config_diff import unapplied_changes

log = logging.getLogger("tollgate.budgets")
PID_FILE = "tollgate.pid"


def pid_path(config: Config) -> Path:
    """`<data dir>/tollgate.pid`: the chDB directory, or the spill directory's parent for a remote store."""
    if config.store.dsn.startswith("chdb://"):
        from store.client import chdb_path

        return Path(chdb_path(config.store.dsn)) / PID_FILE
    spill = Path(config.store.spill_dir) if config.store.spill_dir else Path("data") / "spill"
    return spill.parent / PID_FILE


def write_pid(path: Path, listen: str) -> None:
    """The pid, then the address actually served (a `--listen` may differ from the config file's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n{listen}\n", encoding="utf-8")


def _pid_lines(path: Path) -> tuple[int, str]:
    """(pid, served address) from a pid file; raises OSError or ValueError for a missing or foreign one."""
    pid, _, listen = path.read_text(encoding="utf-8").partition("\n")
    return int(pid), listen.strip()


def remove_pid(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if _pid_lines(path)[0] == os.getpid():
            path.unlink()


def running_pid(path: Path) -> int | None:
    """The pid in `path` when that process is alive, else None."""
    try:
        pid = _pid_lines(path)[0]
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def served_listen(config: Config) -> str | None:
    """The address the live server owning this config's data directory serves (its pid file's second line; a
    `--listen` may differ from the config's), or None when no such server runs."""
    with contextlib.suppress(OSError, ValueError):
        pid, served = _pid_lines(pid_path(config))
        os.kill(pid, 0)
        return served or None
    return None


def server_url(config: Config) -> str:
    """`http://host:port` of the server that owns this config's data directory, else of `server.listen`."""
    from ingest.claude_settings import endpoint_url

    return endpoint_url(served_listen(config) or config.server.listen)


def send_reload(config: Config) -> tuple[int | None, Path]:
    """SIGHUP the server that wrote the pid file for this config's data directory."""
    path = pid_path(config)
    pid = running_pid(path)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    return pid, path


class BudgetReloader:
    """Re-reads the config file and swaps budgets in the running policy; an invalid file keeps the old ones."""

    def __init__(self, config: Config, policy: Any) -> None:
        self.config = config
        self.policy = policy

    def reload(self) -> bool:
        source = self.config.source
        if source is None:
            log.warning("reload: started without a config file; nothing to re-read")
            return False
        try:
            new = load_config(source, overrides=dict(self.config.overrides))  # as served: --listen, --data-dir
        except ConfigError as exc:
            log.error("reload: %s is invalid; the old budgets stay:\n%s", source, exc)
            return False
        changes = self.policy.apply_config(new)
        for line in changes:
            log.info("reload: budget %s", line)
        log.info("reload: %s re-read, %d budget change(s)", source, len(changes))
        for line in unapplied_changes(self.config, new):
            log.warning("reload: %s", line)
        # Compared with the settings served, not the last file read: a setting changed and changed back is
        # served as it was, and one still changed is said again at each reload until a restart.
        self.config = dataclasses.replace(self.config, upstreams=_with_budgets_of(self.config.upstreams, new),
                                          budget_default=new.budget_default)
        return True


def _with_budgets_of(served: tuple[UpstreamConfig, ...], new: Config) -> tuple[UpstreamConfig, ...]:
    """The served upstreams, each with the budget `new` gives it (the part a reload applies)."""
    budgets = {upstream.name: upstream.budget for upstream in new.upstreams}
    return tuple(dataclasses.replace(u, budget=budgets.get(u.name)) for u in served)


async def budgets_report(config: Config) -> dict[str, Any]:
    """The running server's /api/budgets, or, when none answers, the same view rebuilt from the store."""
    import aiohttp

    url = server_url(config) + "/api/budgets"
    headers = {"Authorization": f"Bearer {config.server.auth_tokens[0]}"} if config.server.auth_tokens else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(url, headers=headers) as response:
            if response.status == 200:
                body: dict[str, Any] = await response.json()
                return {**body, "source": url}
    except (aiohttp.ClientError, TimeoutError):
        pass
    return await _report_from_store(config)


async def _report_from_store(config: Config) -> dict[str, Any]:
    from gateway.budget_report import budgets_snapshot
    from gateway.budget_store import load_spend
    from gateway.budgets import Budgets
    from gateway.enforcement import budget_rules
    from store.client import Store, require_existing_data
    from store.schema import migrate

    require_existing_data(config.store.dsn)
    store = await Store.open(config.store.dsn, cluster=config.store.cluster)
    try:
        await migrate(store)
        budgets = Budgets(budget_rules(config))
        await load_spend(store, budgets)
    finally:
        await store.close()
    return {**budgets_snapshot(budgets), "source": store.display_dsn}


def print_report(snapshot: dict[str, Any], as_json: bool) -> None:
    from gateway.budget_report import render_budgets
    from ui.terminal import visible_doc

    if as_json:
        print(json.dumps(snapshot, indent=2))
    else:  # tool names come from upstreams: no raw control characters to the terminal
        shown = visible_doc(snapshot)
        print(render_budgets(shown) + f"\n\n(source: {shown.get('source', '?')})")
