"""`tollgate setup claude`: the Claude Code telemetry env block and `claude mcp add` line pointing at Tollgate,
printed, or merged into the user's or project's `.claude/settings.json` (other keys kept, diff shown, atomic).

Knows Claude Code's settings file and environment variables only; the CLI wiring lives in gateway/cli.py.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any, TextIO

LOGS_EXPORT_INTERVAL_MS = 5000
METRIC_EXPORT_INTERVAL_MS = 10000
SCOPES = ("user", "project")


class SettingsError(Exception):
    """The settings file cannot be merged safely (it is left untouched)."""


def endpoint_url(listen: str) -> str:
    """`http://host:port` a client can connect to; wildcard binds become loopback."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = listen, "8765"
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def telemetry_env(listen: str, token: str | None) -> dict[str, str]:
    env = {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint_url(listen),
        "OTEL_LOG_TOOL_DETAILS": "1",
        "OTEL_LOGS_EXPORT_INTERVAL": str(LOGS_EXPORT_INTERVAL_MS),
        "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_EXPORT_INTERVAL_MS),
    }
    if token:
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer {token}"
    return env


def mcp_add_command(listen: str, registered_name: str, token: str | None) -> str:
    words = ["claude", "mcp", "add", "--transport", "http", registered_name, f"{endpoint_url(listen)}/mcp"]
    if token:
        words += ["--header", f"Authorization: Bearer {token}"]
    return shlex.join(words)


def settings_path(scope: str, home: Path, cwd: Path) -> Path:
    if scope not in SCOPES:
        raise SettingsError(f"--write takes 'user' or 'project', not {scope!r}")
    return (home if scope == "user" else cwd) / ".claude" / "settings.json"


def merged_settings(current_text: str | None, env: dict[str, str], path: Path) -> dict[str, Any]:
    """The settings with `env` merged into its `env` block; every other key and env variable kept."""
    settings: Any = {}
    if current_text is not None and current_text.strip():
        try:
            settings = json.loads(current_text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path} is not valid JSON ({exc}); fix it or move it aside") from exc
    if not isinstance(settings, dict):
        raise SettingsError(f"{path} does not hold a JSON object")
    block = settings.get("env", {})
    if not isinstance(block, dict):
        raise SettingsError(f"{path}: 'env' is not an object")
    settings["env"] = {**block, **env}
    return settings


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=".settings.", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_settings(path: Path, env: dict[str, str], out: TextIO) -> None:
    current = path.read_text(encoding="utf-8") if path.exists() else None
    new_text = json.dumps(merged_settings(current, env, path), indent=2, ensure_ascii=False) + "\n"
    if current == new_text:
        out.write(f"{path} already has these settings; nothing to change.\n")
        return
    diff = difflib.unified_diff(
        (current or "").splitlines(keepends=True), new_text.splitlines(keepends=True),
        fromfile=f"{path} (before)" if current is not None else "/dev/null", tofile=str(path),
    )
    out.writelines(diff)
    write_atomically(path, new_text)
    out.write(f"Wrote {path}\n")


def run_setup_claude(
    listen: str, registered_name: str, token: str | None, write: str | None, home: Path, cwd: Path, out: TextIO
) -> int:
    """Print the settings (and write them when `write` is 'user' or 'project'); returns the exit status."""
    env = telemetry_env(listen, token)
    out.write("# Claude Code settings.json \"env\" block for Tollgate telemetry:\n")
    out.write(json.dumps({"env": env}, indent=2) + "\n\n")
    out.write("# or as shell exports:\n")
    out.writelines(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    out.write("\n# register Tollgate as an MCP server in Claude Code:\n")
    out.write(mcp_add_command(listen, registered_name, token) + "\n")
    if write is None:
        return 0
    try:
        path = settings_path(write, home, cwd)
        if write == "project" and token:
            out.write(f"\nwarning: {path} is often committed; it will hold the bearer token\n")
        out.write("\n")
        write_settings(path, env, out)
    except (SettingsError, OSError) as exc:
        out.write(f"error: {exc}\n")
        return 1
    return 0
