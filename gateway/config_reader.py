"""Typed getters over parsed TOML tables that collect problems instead of raising, for gateway.config.

Owns `${VAR}` expansion and the `<toml path>: <problem>` wording; knows nothing of Tollgate's keys.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from typing import Any, TypeVar

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# ${NAME} or ${NAME:-default}; $${NAME} stays literal as ${NAME}.
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
T = TypeVar("T", bound=str)


def join(path: str, *keys: str) -> str:
    """`path` followed by each key, quoted as TOML does when it is not a bare key."""
    for key in keys:
        shown = key if _BARE_KEY.fullmatch(key) else toml_string(key)
        path = f"{path}.{shown}" if path else shown
    return path


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def present(**values: Any) -> dict[str, Any]:
    """The values that were given: None means absent or invalid, so the dataclass default applies."""
    return {key: value for key, value in values.items() if value is not None}


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {str: "string", int: "integer", float: "float", list: "array", dict: "table"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "date/time" if isinstance(value, date | datetime | time) else type(value).__name__


class Reader:
    """Reads values with their TOML path; each getter returns None when the key is absent or bad."""

    def __init__(self, environ: Mapping[str, str] | None, problems: list[str] | None = None) -> None:
        self.environ = environ  # None: leave ${VAR} references as written
        self.problems: list[str] = [] if problems is None else problems
        self.references: list[tuple[str, str]] = []  # (toml path, variable name) of each ${VAR} expanded
        self.failed_paths: set[str] = set()

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)
        self.failed_paths.add(path)

    def failed(self, *paths: str) -> bool:
        """Whether a problem was already said of any of `paths`: a check that depends on such a value would only
        follow on from it (its getter returned None, as for an absent key) and says nothing."""
        return any(path in self.failed_paths for path in paths)

    def expand(self, value: str, path: str) -> str | None:
        """`value` with every ${VAR} replaced; None (and one problem per missing variable) if unset."""
        environ = self.environ
        if environ is None:
            return value
        missing: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            self.references.append((path, name))
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            missing.append(name)
            return ""

        expanded = _ENV_REF.sub(substitute, value)
        for name in missing:
            self.error(path, f"environment variable {name} is not set")
        return None if missing else expanded

    def check_keys(self, table: Mapping[str, Any], path: str, known: Iterable[str]) -> None:
        known = tuple(known)
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.error(join(path, key), f"unknown key{hint}")

    def _get(self, table: Mapping[str, Any], key: str, path: str, kinds: tuple[type, ...], what: str) -> Any:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            self.error(join(path, key), f"expected {what}, got {type_name(value)}")
            return None
        return value

    def table(self, table: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        value = self._get(table, key, path, (dict,), "a table")
        return value if isinstance(value, dict) else {}

    def string(self, table: Mapping[str, Any], key: str, path: str) -> str | None:
        value = self._get(table, key, path, (str,), "a string")
        return None if value is None else self.expand(value, join(path, key))

    def boolean(self, table: Mapping[str, Any], key: str, path: str) -> bool | None:
        value: bool | None = self._get(table, key, path, (bool,), "true or false")
        return value

    def integer(self, table: Mapping[str, Any], key: str, path: str) -> int | None:
        """A positive integer."""
        value: int | None = self._get(table, key, path, (int,), "a positive integer")
        if value is not None and value <= 0:
            self.error(join(path, key), "must be a positive integer")
            return None
        return value

    def number(self, table: Mapping[str, Any], key: str, path: str) -> float | None:
        """A positive number (integer or float)."""
        value = self._get(table, key, path, (int, float), "a positive number")
        if value is not None and not value > 0:
            self.error(join(path, key), "must be a positive number")
            return None
        return None if value is None else float(value)

    def choice(self, table: Mapping[str, Any], key: str, path: str, options: tuple[T, ...]) -> T | None:
        value = self._get(table, key, path, (str,), "a string")
        for option in options:
            if value == option:
                return option
        if value is not None:
            self.error(join(path, key), f"must be one of {', '.join(sorted(options))}")
        return None

    def strings(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
        value = self._get(table, key, path, (list,), "an array of strings")
        if value is None:
            return None
        items = [self._item(item, f"{join(path, key)}[{i}]") for i, item in enumerate(value)]
        return None if any(item is None for item in items) else tuple(i for i in items if i is not None)

    def string_map(self, table: Mapping[str, Any], key: str, path: str) -> dict[str, str] | None:
        value = self._get(table, key, path, (dict,), "a table of strings")
        if value is None:
            return None
        items = {name: self._item(item, join(path, key, name)) for name, item in value.items()}
        return {name: item for name, item in items.items() if item is not None}

    def _item(self, value: object, path: str) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {type_name(value)}")
            return None
        return self.expand(value, path)
