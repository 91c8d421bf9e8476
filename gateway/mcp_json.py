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


def servers_to_tables(json_text: str, problems: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each `mcpServers` entry as a TOML-shaped upstream table, in file order, names unchanged.

    Strict without `problems` (any bad entry raises McpJsonError); given a list, bad entries are left out and
    described there. An unreadable document always raises.
    """
    data = _document(json_text)
    servers = data.get("mcpServers", {} if "projects" in data else None)
    if not isinstance(servers, dict):
        raise McpJsonError(["mcpServers: expected an object"])
    found: list[str] = []
    tables = {}
    for name, entry in servers.items():
        table = _entry_table(entry, join("mcpServers", name), found)
        if table is not None:
            tables[name] = table
    if found and problems is None:
        raise McpJsonError(found)
    if problems is not None:
        problems.extend(found)
    return tables


def _document(json_text: str) -> dict[str, Any]:
    try:
        data = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise McpJsonError([f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None
    if not isinstance(data, dict):
        raise McpJsonError([f"expected a JSON object with mcpServers, got {type_name(data)}"])
    return data


def project_scoped(json_text: str) -> list[str]:
    """`projects.<dir>.mcpServers.<name>` paths of a ~/.claude.json: servers of one project, not imported."""
    projects = _document(json_text).get("projects")
    found: list[str] = []
    for directory, project in (projects.items() if isinstance(projects, dict) else ()):
        servers = project.get("mcpServers") if isinstance(project, dict) else None
        if isinstance(servers, dict):
            found += [join(join(join("projects", directory), "mcpServers"), name) for name in servers]
    return found


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
    if used[0] not in given:
        problems.append(f'{path}: type "{kind}" needs {used[0]}')
        return None
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


def mcp_json_to_toml(json_text: str, problems: list[str] | None = None,
                     keep: Callable[[str, Mapping[str, Any]], bool] | None = None) -> str:
    """TOML `[upstreams.*]` tables for an mcpServers file; names outside [A-Za-z0-9_-] are sanitized.

    With `problems`, entries that cannot be converted are left out and described there (see servers_to_tables);
    with `keep`, so are the entries it refuses (by JSON name and table).
    """
    lines = ["# Upstreams converted from mcpServers JSON by `tollgate import-mcp-json`."]
    tables = servers_to_tables(json_text, problems)
    if keep is not None:
        tables = {name: table for name, table in tables.items() if keep(name, table)}
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
