"""mcpServers JSON (Claude Code `.mcp.json`, Claude Desktop config) to upstream tables and to TOML text.

Checks the JSON shape only; gateway.config validates values and expands `${VAR}` like any TOML upstream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gateway import naming
from gateway.config_reader import join, toml_string, type_name

_log = logging.getLogger(__name__)
_TYPES = {"stdio": "stdio", "http": "http", "streamable-http": "http", "streamableHttp": "http", "sse": "sse"}
_STDIO_KEYS = ("command", "args", "env", "cwd")
_HTTP_KEYS = ("url", "headers")


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())


_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "command": (lambda v: isinstance(v, str), "a string"),
    "args": (_is_str_list, "an array of strings"),
    "env": (_is_str_map, "an object of strings"),
    "cwd": (lambda v: isinstance(v, str), "a string"),
    "url": (lambda v: isinstance(v, str), "a string"),
    "headers": (_is_str_map, "an object of strings"),
}


class McpJsonError(Exception):
    """The JSON is unusable; `problems` holds one `<json path>: <what is wrong>` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problems))


def servers_to_tables(json_text: str) -> dict[str, dict[str, Any]]:
    """Each `mcpServers` entry as a TOML-shaped upstream table, in file order, names unchanged."""
    try:
        data = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise McpJsonError([f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise McpJsonError(["mcpServers: expected an object"])
    problems: list[str] = []
    tables = {}
    for name, entry in servers.items():
        table = _entry_table(entry, join("mcpServers", name), problems)
        if table is not None:
            tables[name] = table
    if problems:
        raise McpJsonError(problems)
    return tables


def _entry_table(entry: object, path: str, problems: list[str]) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        problems.append(f"{path}: expected an object, got {type_name(entry)}")
        return None
    given = {key: value for key, value in entry.items() if value is not None}
    kind = given.get("type", "stdio" if "command" in given else "http" if "url" in given else None)
    if kind is None:
        problems.append(f"{path}: needs command (stdio) or url (http, sse)")
        return None
    if kind not in _TYPES:
        problems.append(f"{join(path, 'type')}: must be one of {', '.join(_TYPES)}")
        return None
    table: dict[str, Any] = {"type": _TYPES[kind]}
    used = _STDIO_KEYS if table["type"] == "stdio" else _HTTP_KEYS
    count = len(problems)
    for key, (check, what) in _CHECKS.items():
        if key in given and key not in used:
            problems.append(f'{join(path, key)}: not used by type "{kind}"')
        elif key in given and not check(given[key]):
            problems.append(f"{join(path, key)}: expected {what}, got {type_name(given[key])}")
        elif key in given:
            table[key] = given[key]
    if "disabled" in given:
        if isinstance(given["disabled"], bool):
            table["enabled"] = not given["disabled"]
        else:
            problems.append(f"{join(path, 'disabled')}: expected true or false")
    ignored = sorted(set(given) - set(_CHECKS) - {"type", "disabled"})
    if ignored:
        _log.info("%s: ignoring keys Tollgate does not use: %s", path, ", ".join(ignored))
    return table if len(problems) == count else None


def mcp_json_to_toml(json_text: str) -> str:
    """TOML `[upstreams.*]` tables for an mcpServers file; names outside [A-Za-z0-9_-] are sanitized."""
    lines = ["# Upstreams converted from mcpServers JSON by `tollgate import-mcp-json`."]
    tables = servers_to_tables(json_text)
    taken = {name for name in tables if naming.LEGAL_NAME.fullmatch(name)}
    for name, table in tables.items():
        key = name if name in taken else _free_name(naming.sanitize(name), taken)
        taken.add(key)
        lines.append("")
        if key != name:
            lines.append(f"# {toml_string(name)} in the JSON; upstream names must match [A-Za-z0-9_-]+")
        lines.extend(_table_lines(join("upstreams", key), table))
    return "\n".join(lines) + "\n"


def _free_name(base: str, taken: set[str]) -> str:
    base = base or "upstream"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _table_lines(path: str, table: Mapping[str, Any]) -> list[str]:
    lines = [f"[{path}]"]
    lines += [f"{join('', key)} = {toml_value(value)}" for key, value in table.items() if not isinstance(value, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", *_table_lines(join(path, key), value)]
    return lines


def toml_value(value: str | bool | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    return "[" + ", ".join(toml_string(item) for item in value) + "]"
