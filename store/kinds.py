"""The kinds of call a `calls` row records, and how views name what was called.

`tools/call`, `resources/read` and `prompts/get` each leave one row (DESIGN-NOTES: all three are metered and
budgeted), and every view that counts calls counts all three: the servers views, budgets and the calls list.
A tool is named as itself; a resource or prompt as "resource <uri>" or "prompt <name>", so a per-tool row never
passes one off as a tool (and a prompt named like a tool is not counted as that tool).
"""

from __future__ import annotations

KINDS = {"tools/call": "tool", "resources/read": "resource", "prompts/get": "prompt"}

# `kind` and the labelled name of a `calls` row, in SQL (over its `method` and `tool` columns).
KIND_SQL = "multiIf(method = 'resources/read', 'resource', method = 'prompts/get', 'prompt', 'tool')"
LABEL_SQL = ("if(method = 'tools/call', tool, concat(if(method = 'prompts/get', 'prompt ', 'resource '), tool))")


def kind(method: str) -> str:
    return KINDS.get(method, "tool")


def label(method: str, tool: str) -> str:
    """The name views show for what a call called: `tool`, or "resource <uri>" / "prompt <name>" (as LABEL_SQL)."""
    return tool if kind(method) == "tool" else f"{kind(method)} {tool}"
