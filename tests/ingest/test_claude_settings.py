"""`tollgate setup claude`: printed settings, and merging into Claude Code's settings.json."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

from ingest.claude_settings import endpoint_url, run_setup_claude, telemetry_env


def setup(tmp_path: Path, write: str | None, token: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    status = run_setup_claude("127.0.0.1:8765", "tollgate", token, write, tmp_path / "home", tmp_path / "proj", out)
    return status, out.getvalue()


def test_print_mode_shows_env_block_and_mcp_add_line_without_writing(tmp_path: Path) -> None:
    status, text = setup(tmp_path, None)
    assert status == 0
    assert '"CLAUDE_CODE_ENABLE_TELEMETRY": "1"' in text
    assert '"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:8765"' in text
    assert '"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"' in text
    assert "claude mcp add --transport http tollgate http://127.0.0.1:8765/mcp\n" in text
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in text
    assert not (tmp_path / "home").exists()


def test_token_adds_otlp_headers_and_mcp_header(tmp_path: Path) -> None:
    _, text = setup(tmp_path, None, token="tok-1")
    assert telemetry_env("127.0.0.1:8765", "tok-1")["OTEL_EXPORTER_OTLP_HEADERS"] == "Authorization=Bearer tok-1"
    line = next(line for line in text.splitlines() if line.startswith("claude mcp add"))
    assert shlex.split(line)[-2:] == ["--header", "Authorization: Bearer tok-1"]


def test_wildcard_listen_addresses_become_connectable_urls() -> None:
    assert endpoint_url("0.0.0.0:4318") == "http://127.0.0.1:4318"
    assert endpoint_url("[::]:8765") == "http://[::1]:8765"
    assert endpoint_url("gateway.internal:8765") == "http://gateway.internal:8765"


def test_user_write_merges_env_and_keeps_unrelated_keys(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    before = {"model": "opus", "permissions": {"allow": ["Bash(ls)"]},
              "env": {"MY_VAR": "keep", "OTEL_LOGS_EXPORTER": "console"}}
    path.write_text(json.dumps(before))
    status, text = setup(tmp_path, "user")
    assert status == 0
    after = json.loads(path.read_text())
    assert after["model"] == "opus" and after["permissions"] == {"allow": ["Bash(ls)"]}
    assert after["env"]["MY_VAR"] == "keep"
    assert after["env"]["OTEL_LOGS_EXPORTER"] == "otlp"
    assert after["env"]["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert '+    "OTEL_LOGS_EXPORTER": "otlp",' in text
    assert f"+++ {path}" in text and '+    "OTEL_LOG_TOOL_DETAILS": "1"' in text


def test_project_write_creates_the_file_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "proj" / ".claude" / "settings.json"
    status, _ = setup(tmp_path, "project")
    assert status == 0
    first = path.read_text()
    status, text = setup(tmp_path, "project")
    assert status == 0
    assert path.read_text() == first
    assert "nothing to change" in text
    assert not list(path.parent.glob("*.tmp"))


def test_invalid_settings_json_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    status, text = setup(tmp_path, "user")
    assert status == 1
    assert "not valid JSON" in text
    assert path.read_text() == "{ not json"


def test_unknown_write_scope_is_an_error(tmp_path: Path) -> None:
    status, text = setup(tmp_path, "global")
    assert status == 1 and "error:" in text
