"""Exposed tool names: cases C01, C02, C03, the properties every listing must keep, and names handed out staying
with their tools (the ledger)."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.naming import (
    COLLIDED,
    SANITIZED,
    SHORTENED,
    TAKEN,
    NameLedger,
    NameMap,
    ToolNamer,
    ToolRef,
    annotate_tool,
    expose,
    exposed_room,
    sanitize,
)

CLAUDE_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
HASH_SUFFIX = re.compile(r"_[0-9a-f]{8}$")


def names_of(name_map: NameMap) -> dict[ToolRef, str]:
    return dict(name_map.by_tool)


def test_c01_long_name_is_shortened_to_fit_with_the_claude_code_prefix() -> None:
    tool = ("enterprise-database-management", "synchronize-all-customer-data-across-multiple-systems")
    name_map = expose("tollgate", [tool])
    exposed = name_map.exposed_name(*tool)

    assert CLAUDE_TOOL_NAME.match(name_map.full_name(exposed))
    assert name_map.full_name(exposed).startswith("mcp__tollgate__enterprise")
    assert HASH_SUFFIX.search(exposed)
    assert name_map.route(exposed) == tool
    renamed = [(r.upstream, r.tool, r.exposed, r.reason) for r in name_map.renamed]
    assert renamed == [(*tool, exposed, SHORTENED)]


def test_c01_shortened_name_is_the_same_across_calls_and_start_orders() -> None:
    tools = [
        ("enterprise-database-management", "synchronize-all-customer-data-across-multiple-systems"),
        ("other", "search"),
        ("enterprise-database-management", "synchronize-all-customer-data-across-multiple-regions"),
    ]
    first = names_of(expose("tollgate", tools))
    for seed in range(5):
        shuffled = tools[:]
        random.Random(seed).shuffle(shuffled)
        assert names_of(expose("tollgate", shuffled)) == first
    assert len(set(first.values())) == 3


def test_c02_illegal_characters_are_replaced_and_get_time_stays_plain() -> None:
    tools = [("time", name) for name in ("time.get-current-time", "a:b/c", "ünïcode_tool", "get_time")]
    name_map = expose("tollgate", tools)

    assert names_of(name_map) == {
        ToolRef("time", "time.get-current-time"): "time__time_get-current-time",
        ToolRef("time", "a:b/c"): "time__a_b_c",
        ToolRef("time", "ünïcode_tool"): "time__unicode_tool",
        ToolRef("time", "get_time"): "time__get_time",
    }
    for exposed in name_map.by_exposed:
        assert CLAUDE_TOOL_NAME.match(name_map.full_name(exposed))
    assert {r.tool for r in name_map.renamed} == {"time.get-current-time", "a:b/c", "ünïcode_tool"}
    assert all(r.reason == SANITIZED for r in name_map.renamed)


def test_c02_upstream_is_called_with_its_original_name() -> None:
    tools = [("time", name) for name in ("time.get-current-time", "a:b/c", "ünïcode_tool", "get_time")]
    name_map = expose("tollgate", tools)
    for upstream, tool in tools:
        assert name_map.route(name_map.exposed_name(upstream, tool)) == (upstream, tool)


def test_c02_names_colliding_after_sanitizing_get_distinct_stable_suffixes() -> None:
    tools = [("a", "x.y"), ("a", "x:y"), ("a", "x_y"), ("a", "p.q"), ("a", "p/q")]
    name_map = expose("tollgate", tools)
    names = names_of(name_map)

    assert names[ToolRef("a", "x_y")] == "a__x_y"  # the already-legal name keeps its plain form
    hashed = [names[ToolRef("a", t)] for t in ("x.y", "x:y", "p.q", "p/q")]
    assert all(HASH_SUFFIX.search(name) for name in hashed)
    assert len(set(names.values())) == len(tools)
    assert names == names_of(expose("tollgate", list(reversed(tools))))
    collided = {r.tool for r in name_map.renamed if COLLIDED in r.reason}
    assert collided == {"x.y", "x:y", "p.q", "p/q"}


def test_c02_suffix_of_a_colliding_name_does_not_depend_on_other_tools() -> None:
    alone = expose("tollgate", [("a", "x.y"), ("a", "x_y")]).exposed_name("a", "x.y")
    crowded = expose("tollgate", [("a", "x.y"), ("a", "x_y"), ("a", "x:y"), ("b", "x.y")])
    assert crowded.exposed_name("a", "x.y") == alone


def test_c03_same_tool_on_two_upstreams_gets_distinct_names_in_sorted_order() -> None:
    name_map = expose("tollgate", [("b", "search"), ("a", "search")])

    assert list(name_map) == [(ToolRef("a", "search"), "a__search"), (ToolRef("b", "search"), "b__search")]
    assert name_map.route("a__search") == ("a", "search")
    assert name_map.route("b__search") == ("b", "search")
    assert name_map.renamed == ()


def test_legal_names_that_join_to_the_same_string_are_both_hashed() -> None:
    name_map = expose("tollgate", [("a__b", "c"), ("a", "b__c")])
    names = list(name_map.by_exposed)
    assert len(names) == 2
    assert all(HASH_SUFFIX.search(name) for name in names)


def test_unknown_exposed_name_routes_nowhere() -> None:
    assert expose("tollgate", [("a", "search")]).route("a__other") is None


def test_registered_name_that_leaves_too_little_room_is_rejected() -> None:
    assert exposed_room("tollgate") == 64 - len("mcp__tollgate__")
    with pytest.raises(ValueError, match="at most 41 characters"):
        ToolNamer("x" * 50)
    with pytest.raises(ValueError, match="must match"):
        ToolNamer("toll gate")


def test_sanitize_drops_accents_and_replaces_other_characters() -> None:
    assert sanitize("ünïcode_tool") == "unicode_tool"
    assert sanitize("a:b/c d") == "a_b_c_d"
    assert sanitize("搜索") == "__"


def test_annotate_leaves_a_plain_tool_alone_except_its_name() -> None:
    tool = {"name": "search", "description": "Find things.", "inputSchema": {"type": "object"}}
    annotated = annotate_tool(tool, "a", "a__search")
    assert annotated == {**tool, "name": "a__search"}
    assert tool["name"] == "search"  # a new dict, the upstream's definition is untouched


def test_annotate_shows_the_original_name_of_a_renamed_tool() -> None:
    tool = {"name": "time.now", "description": "Current time."}
    annotated = annotate_tool(tool, "clock", "clock__time_now")
    assert annotated["name"] == "clock__time_now"
    assert annotated["title"] == "clock/time.now"
    assert annotated["description"] == "[clock/time.now] Current time."

    titled = annotate_tool({"name": "time.now", "title": "Now"}, "clock", "clock__time_now")
    assert titled["title"] == "Now"
    assert titled["description"] == "[clock/time.now]"


registered_names = st.from_regex(r"[A-Za-z0-9_-]{1,41}", fullmatch=True)
listings = st.lists(st.tuples(st.text(max_size=40), st.text(max_size=80)), max_size=25)


@settings(max_examples=300, deadline=None)
@given(registered=registered_names, tools=listings, seed=st.integers(0, 2**32 - 1))
def test_any_listing_gets_legal_unique_reversible_order_independent_names(
    registered: str, tools: list[tuple[str, str]], seed: int
) -> None:
    name_map = expose(registered, tools)

    assert set(name_map.by_tool) == set(tools)
    assert len(name_map.by_exposed) == len(name_map.by_tool)
    for ref, exposed in name_map.by_tool.items():
        assert CLAUDE_TOOL_NAME.match(name_map.full_name(exposed))
        assert name_map.route(exposed) == ref
    shuffled = tools[:]
    random.Random(seed).shuffle(shuffled)
    assert names_of(expose(registered, shuffled)) == names_of(name_map)


@settings(max_examples=100, deadline=None)
@given(
    tools=st.lists(
        st.tuples(
            st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True),
            st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
        ),
        max_size=20,
    )
)
def test_short_legal_names_are_never_renamed(tools: list[tuple[str, str]]) -> None:
    name_map = expose("tollgate", tools)
    assert name_map.renamed == ()
    assert all(exposed == f"{ref.upstream}__{ref.tool}" for ref, exposed in name_map)


def suffix(upstream: str, tool: str) -> str:
    """The 8 hex digits of a hashed name: sha256 of the JSON array [upstream, tool]."""
    return hashlib.sha256(json.dumps([upstream, tool]).encode()).hexdigest()[:8]


def handed_out(registered: str, *listings: list[tuple[str, str]]) -> tuple[NameMap, NameLedger]:
    """The names of the last listing, each listing before it having been handed out to a client."""
    ledger = NameLedger()
    name_map = expose(registered, [])
    for tools in listings:
        name_map = expose(registered, tools, ledger)
        ledger.bind(name_map)
    return name_map, ledger


def test_a_handed_out_name_keeps_its_tool_and_a_newcomer_that_would_take_it_gets_a_stable_suffix() -> None:
    name_map, _ = handed_out("tollgate", [("a", "x.y")], [("a", "x.y"), ("a", "x_y")])
    names = names_of(name_map)

    assert names[ToolRef("a", "x.y")] == "a__x_y"
    assert names[ToolRef("a", "x_y")] == f"a__x_y_{suffix('a', 'x_y')}"  # the tool's own hash, as C02's suffixes
    assert [(r.tool, r.reason) for r in name_map.renamed] == [("x.y", SANITIZED), ("x_y", TAKEN)]
    # A new process (an empty ledger) names the same set as today: the plain name keeps its plain form.
    assert names_of(expose("tollgate", [("a", "x.y"), ("a", "x_y")]))[ToolRef("a", "x_y")] == "a__x_y"


def test_an_upstream_joining_with_a_name_that_joins_to_a_handed_out_one_gets_the_suffix_alone() -> None:
    # Without a ledger both would be hashed (test_legal_names_that_join_to_the_same_string_are_both_hashed).
    name_map, _ = handed_out("tollgate", [("a", "b__c")], [("a", "b__c"), ("a__b", "c")])
    assert names_of(name_map) == {
        ToolRef("a", "b__c"): "a__b__c", ToolRef("a__b", "c"): f"a__b__c_{suffix('a__b', 'c')}"}


def test_a_handed_out_name_stays_reserved_while_its_tool_is_away_and_returns_with_it() -> None:
    ledger = NameLedger()
    ledger.bind(expose("tollgate", [("a", "x.y")], ledger))
    away = expose("tollgate", [("a", "x_y")], ledger)  # x.y dropped, or its upstream restarting
    back = expose("tollgate", [("a", "x_y"), ("a", "x.y")], ledger)

    assert away.exposed_name("a", "x_y") == f"a__x_y_{suffix('a', 'x_y')}"
    assert away.route("a__x_y") is None
    assert names_of(back) == {ToolRef("a", "x.y"): "a__x_y", ToolRef("a", "x_y"): f"a__x_y_{suffix('a', 'x_y')}"}


def test_names_not_handed_out_yet_are_not_bound() -> None:
    ledger = NameLedger()
    expose("tollgate", [("a", "x.y")], ledger)  # listed by the catalog, never given to a client
    assert names_of(expose("tollgate", [("a", "x.y"), ("a", "x_y")], ledger)) == names_of(
        expose("tollgate", [("a", "x.y"), ("a", "x_y")]))
    assert len(ledger) == 0


def test_binding_a_name_held_by_another_tool_is_refused() -> None:
    ledger = NameLedger()
    ledger.bind(expose("tollgate", [("a", "x.y")]))
    with pytest.raises(ValueError, match="is bound to"):
        ledger.bind(expose("tollgate", [("a", "x_y"), ("a", "x.y")]))  # built without the ledger


crowded_tools = st.lists(st.tuples(st.sampled_from(["a", "a__b", "a.b", "a_b"]),
                                   st.sampled_from(["x.y", "x_y", "x:y", "b__c", "c", "b_c", "b.c"])), max_size=10)


@settings(max_examples=300, deadline=None)
@given(listings=st.lists(crowded_tools, min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_over_any_sequence_of_listings_a_handed_out_name_never_reaches_another_tool(
    listings: list[list[tuple[str, str]]], seed: int
) -> None:
    ledger = NameLedger()
    seen: dict[str, ToolRef] = {}
    for tools in listings:
        name_map = expose("tollgate", tools, ledger)
        shuffled = tools[:]
        random.Random(seed).shuffle(shuffled)
        assert names_of(expose("tollgate", shuffled, ledger)) == names_of(name_map)
        assert set(name_map.by_tool) == set(tools) and len(name_map.by_exposed) == len(name_map.by_tool)
        for ref, exposed in name_map.by_tool.items():
            assert CLAUDE_TOOL_NAME.match(name_map.full_name(exposed))
            assert seen.get(exposed, ref) == ref, f"{exposed} went from {seen.get(exposed)} to {ref}"
        ledger.bind(name_map)
        seen.update(name_map.by_exposed)
    for exposed, ref in seen.items():  # and each tool keeps the one name it was given
        assert ledger.binding(ref) is not None and ledger.binding(ref)[0] == exposed  # type: ignore[index]
