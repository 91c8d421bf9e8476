"""Budgets as the real Claude Code CLI meets them: a denial and a truncation, read back from what it told the model.

The fake Messages API records every request Claude Code makes; the `tool_result` blocks in them are exactly what
the model was given for each MCP call through Tollgate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gateway.config import BudgetConfig
from tests.e2e.test_claude_through_tollgate import NAME, stdio_upstream, tollgate, wait_for_rows
from tests.fixtures.claude_cli import require_claude, run_claude
from tests.fixtures.fake_anthropic import FakeAnthropic, Usage, call, say, serve, tool_search

A_ECHO, B_BLOB = f"mcp__{NAME}__alpha__echo", f"mcp__{NAME}__beta__blob"
RESULT_LIMIT = 5_000
BLOB_N = 50_000
SCRIPT = [[
    tool_search([A_ECHO, B_BLOB], Usage(120, 25, 5000, 2000)),
    call(Usage(140, 30, 6000), (A_ECHO, {"text": "first"})),
    call(Usage(150, 20, 6500), (A_ECHO, {"text": "second"})),
    call(Usage(160, 20, 7000), (B_BLOB, {"n": BLOB_N})),
    say("Done.", Usage(170, 12, 7500)),
]]
UPSTREAMS = (
    dataclasses.replace(stdio_upstream("alpha"), budget=BudgetConfig(session_calls=1)),
    dataclasses.replace(stdio_upstream("beta"), budget=BudgetConfig(max_result_bytes=RESULT_LIMIT, action="truncate")),
)


def text_of(content: Any) -> str:
    """A tool_result's content as text: Claude Code sends a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content or [] if isinstance(block, dict))


def tool_result_block(fake: FakeAnthropic, tool_use_id: str) -> dict[str, Any]:
    """The first tool_result block Claude Code sent for `tool_use_id`, whole (content and is_error)."""
    for request in fake.main_requests():
        for message in request.body.get("messages", []):
            content = message.get("content")
            for block in content if isinstance(content, list) else []:
                if block.get("type") == "tool_result" and block.get("tool_use_id") == tool_use_id:
                    return dict(block)
    raise AssertionError(f"no tool_result for {tool_use_id}")


async def test_claude_code_shows_the_model_a_denial_and_a_truncation(tmp_path: Path) -> None:
    require_claude()
    fake = FakeAnthropic(SCRIPT)
    async with tollgate(tmp_path, UPSTREAMS) as (base, service), serve(fake.app()) as api:
        await run_claude(["use the tools"], mcp_url=f"{base}/mcp", mcp_name=NAME, otlp_endpoint=base,
                         anthropic_url=api, allowed_tools=[A_ECHO, B_BLOB], home=tmp_path / "home", timeout=120)
        rows = await wait_for_rows(service, f"SELECT tool, status, tool_use_id, resp_bytes_upstream, resp_bytes_client "
                                   f"FROM {service.store.database}.calls FINAL ORDER BY started_at", 3, 20.0)

    assert (fake.errors, fake.unexpected()) == ([], [])
    uses = {use.input.get("text") or f"blob {use.input['n']}": use.tool_use_id for use in fake.issued.values()
            if use.name in (A_ECHO, B_BLOB)}
    told = {key: text_of(fake.tool_results()[tool_use_id]) for key, tool_use_id in uses.items()}
    for key, text in told.items():
        shown = text if len(text) < 800 else f"{text[:120]} ... ({len(text):,} characters) ... {text[-400:]}"
        print(f"\n--- what Claude Code gave the model for {key}:\n{shown}")

    assert "first" in told["first"] and "Tollgate" not in told["first"]
    denial = told["second"]
    assert "Tollgate budget" in denial and "'alpha'" in denial and "session_calls" in denial
    assert "used 1 of 1" in denial and "resets" in denial
    assert tool_result_block(fake, uses["second"]).get("is_error") is True
    assert not tool_result_block(fake, uses["first"]).get("is_error")
    blob = told[f"blob {BLOB_N}"]
    assert blob.startswith("x" * 1000) and "[Tollgate: result truncated from" in blob
    assert len(blob.encode()) < RESULT_LIMIT

    by_use = {row["tool_use_id"]: row for row in rows}
    assert by_use[uses["first"]]["status"] == "ok"
    assert by_use[uses["second"]]["status"] == "denied"
    truncated = by_use[uses[f"blob {BLOB_N}"]]
    assert truncated["status"] == "truncated"
    assert truncated["resp_bytes_upstream"] > BLOB_N > truncated["resp_bytes_client"]
