"""Exposed tool names: Claude-safe, deterministic, and reversible only through the map built here.

No I/O and no config: callers pass the registered name and the (upstream, tool) pairs, and optionally the
`NameLedger` of names already handed out, which no later listing may give to another tool.
Nothing outside this module may derive an upstream or tool from an exposed name by splitting it.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

CLAUDE_PREFIX = "mcp__"  # Claude Code names a tool mcp__<registered>__<exposed>
SEPARATOR = "__"
MAX_FULL_LENGTH = 64  # the Anthropic API's limit on a tool name: ^[a-zA-Z0-9_-]{1,64}$
MIN_EXPOSED_LENGTH = 16  # room left for <upstream>__<tool> after the prefix; config enforces it
MAX_REGISTERED_LENGTH = MAX_FULL_LENGTH - len(CLAUDE_PREFIX) - len(SEPARATOR) - MIN_EXPOSED_LENGTH
HASH_DIGITS = 8
LEGAL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ILLEGAL_CHAR = re.compile(r"[^A-Za-z0-9_-]")

SANITIZED = "illegal characters replaced"
SHORTENED = "shortened to fit 64 characters with the Claude Code prefix"
COLLIDED = "collided with another tool after sanitizing"
TAKEN = "its name was handed out earlier to another tool"


class ToolRef(NamedTuple):
    """An upstream's own tool: the upstream's config name and the tool name it lists."""

    upstream: str
    tool: str


@dataclass(frozen=True)
class Renamed:
    """One tool whose exposed name is not the plain `<upstream>__<tool>`; for a startup log line."""

    upstream: str
    tool: str
    exposed: str
    reason: str  # SANITIZED, SHORTENED, COLLIDED joined by "; "


@dataclass(frozen=True)
class NameMap:
    """Both directions between exposed names and upstream tools; the only way to route a call."""

    registered_name: str
    by_exposed: Mapping[str, ToolRef] = field(default_factory=dict)
    by_tool: Mapping[ToolRef, str] = field(default_factory=dict)
    renamed: tuple[Renamed, ...] = ()

    def route(self, exposed: str) -> ToolRef | None:
        """The upstream tool behind an exposed name, or None when the name is unknown."""
        return self.by_exposed.get(exposed)

    def exposed_name(self, upstream: str, tool: str) -> str:
        """The exposed name of an upstream tool; KeyError when it was not in the listing."""
        return self.by_tool[ToolRef(upstream, tool)]

    exposed_for = exposed_name  # alias used by gateway.catalog

    def full_name(self, exposed: str) -> str:
        """The name Claude Code shows the model: `mcp__<registered>__<exposed>`."""
        return f"{CLAUDE_PREFIX}{self.registered_name}{SEPARATOR}{exposed}"

    def __iter__(self) -> Iterator[tuple[ToolRef, str]]:
        """(tool, exposed) pairs in catalog order: upstream, then tool, by code point."""
        return iter(sorted(self.by_tool.items()))

    def __len__(self) -> int:
        return len(self.by_tool)


def exposed_room(registered_name: str) -> int:
    """Characters left for `<upstream>__<tool>` once Claude Code adds its prefix."""
    if not LEGAL_NAME.fullmatch(registered_name):
        raise ValueError(f"registered name must match {LEGAL_NAME.pattern}")
    if len(registered_name) > MAX_REGISTERED_LENGTH:
        raise ValueError(
            f"must be at most {MAX_REGISTERED_LENGTH} characters: mcp__<name>__<upstream>__<tool>"
            f" must fit Claude's {MAX_FULL_LENGTH} with at least {MIN_EXPOSED_LENGTH} left for the tool"
        )
    return MAX_FULL_LENGTH - len(CLAUDE_PREFIX) - len(registered_name) - len(SEPARATOR)


def sanitize(text: str) -> str:
    """`text` in [A-Za-z0-9_-]: accents dropped (ü -> u), every other illegal character -> `_`."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _ILLEGAL_CHAR.sub("_", stripped)


def original_title(upstream: str, tool: str) -> str:
    """The full original name as shown to people and the model: `<upstream>/<tool>`."""
    return f"{upstream}/{tool}"


def annotate_tool(tool_def: Mapping[str, Any], upstream: str, exposed: str) -> dict[str, Any]:
    """A new tool definition under its exposed name.

    A plainly named tool only changes `name`. A renamed one keeps its original name visible: the
    description gets a `[<upstream>/<tool>] ` prefix and `title` is set to `<upstream>/<tool>` when
    the upstream gave none. Plain names stay untouched because every description byte is context.
    """
    original = str(tool_def.get("name", ""))
    annotated = dict(tool_def)
    annotated["name"] = exposed
    if exposed == f"{upstream}{SEPARATOR}{original}":
        return annotated
    title = original_title(upstream, original)
    annotated.setdefault("title", title)
    description = tool_def.get("description")
    annotated["description"] = f"[{title}] {description}" if description else f"[{title}]"
    return annotated


annotate = annotate_tool  # short alias used by gateway.catalog


class NameLedger:
    """The exposed names this process has handed out to clients, each bound to one tool for good.

    Clients keep calling a name they were given without listing again (Claude Code does not re-list on
    `list_changed`), so once handed out a name must reach the same tool for the life of the process, whatever
    joins or leaves later. Lives as long as the process (the hub owns one per list); never persisted, so a new
    process names a set of tools exactly as `expose` without a ledger does.
    """

    def __init__(self) -> None:
        self._holders: dict[str, ToolRef] = {}
        self._bound: dict[ToolRef, tuple[str, str]] = {}  # tool -> (its name, why it is not plain or "")

    def bind(self, name_map: NameMap) -> None:
        """Bind every name of `name_map` to its tool; a tool already bound keeps its first name."""
        reasons = {ToolRef(r.upstream, r.tool): r.reason for r in name_map.renamed}
        for ref, name in name_map.by_tool.items():
            if ref in self._bound:
                continue
            holder = self._holders.setdefault(name, ref)
            if holder != ref:  # only a map not built against this ledger can get here
                raise ValueError(f"{name!r} is bound to {holder}, cannot bind it to {ref}")
            self._bound[ref] = (name, reasons.get(ref, ""))

    def binding(self, ref: ToolRef) -> tuple[str, str] | None:
        """The name `ref` was handed out under and why it is not plain (or ""); None if it never was."""
        return self._bound.get(ref)

    def holder(self, name: str) -> ToolRef | None:
        return self._holders.get(name)

    def __len__(self) -> int:
        return len(self._bound)


def expose(registered_name: str, tools: Iterable[tuple[str, str]], ledger: NameLedger | None = None) -> NameMap:
    """Exposed names for (upstream, tool) pairs; the result depends on the set (and the ledger), never its order.

    Rules, in order:
    1. base = sanitize(upstream) + "__" + sanitize(tool).
    2. A base longer than the room left after `mcp__<registered>__` is shortened with a hash.
    3. Pairs sharing a base: a pair whose names were already legal keeps the base when it is the
       only legal one in the group; every other member gets a hash suffix.
    4. Otherwise the base is the exposed name (plain names stay plain, sanitized ones readable).
    A hashed name is a shortened base + "_" + the first 8 hex digits of sha256 of the JSON array
    [upstream, tool]; if it still clashes with another name, more digits are used until unique.
    With a `ledger`, after those rules: a tool it binds keeps its bound name, and a tool whose name it binds to
    another tool (a newcomer) is hashed instead, with more digits while that is taken too.
    """
    room = exposed_room(registered_name)
    names, reasons = _fresh_names(sorted({ToolRef(upstream, tool) for upstream, tool in tools}), room)
    if ledger is not None:
        _keep_handed_out(names, reasons, ledger, room)
    renamed = tuple(
        Renamed(ref.upstream, ref.tool, names[ref], "; ".join(why)) for ref, why in sorted(reasons.items()) if why
    )
    by_exposed = {name: ref for ref, name in names.items()}
    return NameMap(registered_name, MappingProxyType(by_exposed), MappingProxyType(names), renamed)


def _fresh_names(refs: list[ToolRef], room: int) -> tuple[dict[ToolRef, str], dict[ToolRef, list[str]]]:
    """Rules 1-4 of `expose` for sorted `refs`: each one's name, and why it is not plain."""
    bases = {ref: _base(ref) for ref in refs}
    groups: dict[str, list[ToolRef]] = defaultdict(list)
    for ref in refs:
        groups[bases[ref]].append(ref)

    names: dict[ToolRef, str] = {}
    digits: dict[ToolRef, int] = {}
    reasons: dict[ToolRef, list[str]] = {}
    for ref in refs:
        base = bases[ref]
        why = [SANITIZED] if not _is_plain(ref) else []
        if len(base) > room:
            why.append(SHORTENED)
        elif len(groups[base]) > 1 and not _keeps_base(ref, groups[base]):
            why.append(COLLIDED)
        if SHORTENED in why or COLLIDED in why:
            digits[ref] = HASH_DIGITS
            names[ref] = _hashed(ref, room, HASH_DIGITS)
        else:
            names[ref] = base
        if why:
            reasons[ref] = why
    _resolve_clashes(names, digits, room)
    return names, reasons


def _keep_handed_out(names: dict[ToolRef, str], reasons: dict[ToolRef, list[str]], ledger: NameLedger,
                     room: int) -> None:
    """Put bound tools back on their bound names; hash each newcomer whose name is bound to another tool."""
    displaced: list[ToolRef] = []
    for ref in sorted(names):
        bound = ledger.binding(ref)
        if bound is not None:
            names[ref], why = bound
            reasons[ref] = why.split("; ") if why else []
        elif ledger.holder(names[ref]) not in (None, ref):
            displaced.append(ref)
    taken = set(names.values())
    for ref in displaced:  # sorted, so two newcomers in one listing get the same names in any order
        digits = HASH_DIGITS
        name = _hashed(ref, room, digits)
        while name in taken or ledger.holder(name) not in (None, ref):
            digits += 2
            if digits > room - 1 - len(SEPARATOR):
                raise RuntimeError(f"cannot give {ref} a unique name")  # needs a sha256 collision
            name = _hashed(ref, room, digits)
        names[ref] = name
        taken.add(name)
        reasons[ref] = [*(why for why in reasons.get(ref, []) if why != COLLIDED), TAKEN]


class ToolNamer:
    """`expose` bound to one registered name, checked once at construction."""

    def __init__(self, registered_name: str) -> None:
        self.registered_name = registered_name
        self.room = exposed_room(registered_name)

    def expose(self, tools: Iterable[tuple[str, str]], ledger: NameLedger | None = None) -> NameMap:
        return expose(self.registered_name, tools, ledger)


def _base(ref: ToolRef) -> str:
    return f"{sanitize(ref.upstream)}{SEPARATOR}{sanitize(ref.tool)}"


def _is_plain(ref: ToolRef) -> bool:
    return _base(ref) == f"{ref.upstream}{SEPARATOR}{ref.tool}"


def _keeps_base(ref: ToolRef, group: list[ToolRef]) -> bool:
    plain = [member for member in group if _is_plain(member)]
    return plain == [ref]


def _digest(ref: ToolRef) -> str:
    key = json.dumps([ref.upstream, ref.tool], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()


def _hashed(ref: ToolRef, room: int, digits: int) -> str:
    """Both parts cut to fit `room` with `_<digits hex>`; the tool part gets at least 2/3."""
    upstream, tool = sanitize(ref.upstream), sanitize(ref.tool)
    keep = room - digits - 1 - len(SEPARATOR)
    upstream_keep = min(len(upstream), max(keep // 3, keep - len(tool)))
    tool_keep = keep - upstream_keep
    return f"{upstream[:upstream_keep]}{SEPARATOR}{tool[:tool_keep]}_{_digest(ref)[:digits]}"


def _resolve_clashes(names: dict[ToolRef, str], digits: dict[ToolRef, int], room: int) -> None:
    """Lengthen the hash of hashed names that clash with any other name (a 2^-32 event per pair)."""
    max_digits = room - 1 - len(SEPARATOR)
    while True:
        holders: dict[str, list[ToolRef]] = defaultdict(list)
        for ref, name in names.items():
            holders[name].append(ref)
        clashing = [ref for refs in holders.values() if len(refs) > 1 for ref in refs if ref in digits]
        if not clashing:
            return
        for ref in clashing:
            digits[ref] += 2
            if digits[ref] > max_digits:
                raise RuntimeError(f"cannot give {ref} a unique name")  # needs a sha256 collision
            names[ref] = _hashed(ref, room, digits[ref])
