"""TOML configuration to frozen dataclasses, validated at startup.

SHAPE ONLY (skeleton): the config helper owns loading and validation. Every other module reads
these dataclasses and nothing else of the config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

UpstreamType = Literal["stdio", "http", "sse"]
BudgetAction = Literal["deny", "truncate", "warn"]


@dataclass(frozen=True)
class Timeouts:
    init_seconds: float = 20.0  # start + initialize + first catalog
    call_seconds: float = 120.0  # per request, reset by progress
    call_max_seconds: float = 600.0  # absolute cap even with progress


@dataclass(frozen=True)
class BudgetConfig:
    max_request_bytes: int | None = None
    max_result_bytes: int | None = None
    session_bytes: int | None = None
    session_calls: int | None = None
    session_tokens: int | None = None
    day_bytes: int | None = None
    day_calls: int | None = None
    day_tokens: int | None = None
    action: BudgetAction = "deny"
    tools: dict[str, BudgetConfig] = field(default_factory=dict)  # per-tool overrides


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    type: UpstreamType
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    stateful: bool = False  # stdio: one process per client session
    max_message_bytes: int = 64 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    budget: BudgetConfig | None = None


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8765"
    registered_name: str = "tollgate"
    auth_tokens: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    session_idle_seconds: float = 3600.0
    max_body_bytes: int = 16 * 1024 * 1024
    otlp_listen: str | None = None


@dataclass(frozen=True)
class StoreConfig:
    dsn: str = "chdb:///./data/tollgate"
    cluster: str | None = None
    spill_dir: str | None = None
    flush_rows: int = 5000
    flush_seconds: float = 1.0


@dataclass(frozen=True)
class TelemetryConfig:
    store_prompt_text: bool = False
    max_body_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()
    budget_default: BudgetConfig | None = None
    source: Path | None = None
