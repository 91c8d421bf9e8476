"""The `calls.status` vocabulary and which statuses count as errors, for every report and /metrics alike.

An error is a call that failed on the server's side of the gateway (or in the gateway itself). Budget decisions
(denied, truncated) are reported with budgets, cancelled is the client's choice, and ok and truncated delivered a
result. docs/store.md lists what records each status.
"""

from __future__ import annotations

OK = "ok"
TOOL_ERROR = "tool_error"  # the tool answered with isError (or the tool is no longer offered)
PROTOCOL_ERROR = "protocol_error"  # a JSON-RPC error answer: Tollgate's (unknown tool, bad params) or the upstream's
UPSTREAM_ERROR = "upstream_error"  # the upstream crashed, closed mid-call, is restarting or not configured
TIMEOUT = "timeout"  # no answer within the upstream's timeout
INTERNAL_ERROR = "internal_error"  # a bug in Tollgate while relaying (the call's row is still recorded)
CANCELLED = "cancelled"  # the client cancelled or went away
DENIED = "denied"  # a budget refused the call
TRUNCATED = "truncated"  # a budget cut the result; the client got the shortened result

STATUSES = (OK, TOOL_ERROR, PROTOCOL_ERROR, UPSTREAM_ERROR, TIMEOUT, INTERNAL_ERROR, CANCELLED, DENIED, TRUNCATED)
ERRORS = frozenset({TOOL_ERROR, PROTOCOL_ERROR, UPSTREAM_ERROR, TIMEOUT, INTERNAL_ERROR})


def errors_sql() -> str:
    """The SQL condition on `status` that holds for exactly the error statuses."""
    return "status IN (" + ", ".join(f"'{s}'" for s in sorted(ERRORS)) + ")"
