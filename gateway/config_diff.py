"""What a reload does not apply: the settings that differ between the served config and the re-read one.

`tollgate reload` swaps budgets only; every other changed setting (server, store, telemetry, upstreams added,
removed or changed, imported files) is named so that an edit is never ignored silently. Values are shown only
when they cannot be secrets: never one that came from a `${VAR}`, nor a token, header, env or DSN value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.config import Config, UpstreamConfig

SECTIONS = ("server", "store", "telemetry")
UNLISTED = frozenset({"name", "budget", "origin", "withheld_env"})  # budgets apply; the rest follows from others
SECRET_KEYS = frozenset({"auth_tokens", "headers", "env", "dsn"})  # may hold credentials whatever their source
RESTART = "takes effect after a restart"


def unapplied_changes(old: Config, new: Config) -> list[str]:
    """One line per setting `new` changes that a reload leaves as `old` has it."""
    before, after = settings(old), settings(new)
    secret = old.from_env | new.from_env
    lines = [_upstream_line(name, "added" if name in upstream_names(new) else "removed")
             for name in sorted(set(upstream_names(old)) ^ set(upstream_names(new)))]
    kept = set(upstream_names(old)) & set(upstream_names(new))
    for key in sorted(before.keys() | after.keys()):
        upstream = key.split(".")[1] if key.startswith("upstreams.") else None
        if upstream is not None and upstream not in kept:
            continue  # said once, as added or removed
        if before.get(key) != after.get(key):
            lines.append(_changed_line(key, before.get(key), after.get(key), _is_secret(key, secret)))
    return lines


def upstream_names(config: Config) -> tuple[str, ...]:
    return tuple(upstream.name for upstream in config.upstreams)


def settings(config: Config) -> dict[str, Any]:
    """Every setting a reload does not apply, by TOML path (`server.listen`, `upstreams.a.timeouts.init_seconds`)."""
    flat: dict[str, Any] = {"import_mcp_servers": config.import_mcp_servers}
    for section in SECTIONS:
        part = getattr(config, section)
        flat |= {f"{section}.{f.name}": getattr(part, f.name) for f in dataclasses.fields(part)}
    for upstream in config.upstreams:
        flat |= _upstream_settings(upstream)
    return flat


def _upstream_settings(upstream: UpstreamConfig) -> dict[str, Any]:
    prefix = f"upstreams.{upstream.name}"
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(upstream):
        value = getattr(upstream, f.name)
        if f.name in UNLISTED:
            continue
        if dataclasses.is_dataclass(value):
            flat |= {f"{prefix}.{f.name}.{sub.name}": getattr(value, sub.name) for sub in dataclasses.fields(value)}
        else:
            flat[f"{prefix}.{f.name}"] = value
    return flat


def _is_secret(key: str, from_env: frozenset[str]) -> bool:
    """A key whose value may be a credential: by its name, or because a `${VAR}` filled (part of) it."""
    if set(key.split(".")) & SECRET_KEYS:
        return True
    return any(path == key or path.startswith((key + ".", key + "[")) for path in from_env)


def _upstream_line(name: str, what: str) -> str:
    return f"upstream {name} {what}: {RESTART}"


def _changed_line(key: str, old: Any, new: Any, secret: bool) -> str:
    if secret:
        return f"{key} changed (value not shown): {RESTART}"
    return f"{key} changed ({_shown(old)} -> {_shown(new)}): {RESTART}"


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)
