"""Processes under test: the bench upstream, Tollgate (`tollgate serve`, with or without store) and mcp-proxy.

Each target is a separate process on a free loopback port, started and stopped here; a target knows
how to open raw clients to itself and where its peak RSS is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.client import Client, HttpClient, StdioClient

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_SCRIPT = ROOT / "bench" / "upstream.py"
FLOOR_SCRIPT = ROOT / "bench" / "floor.py"
MCP_PROXY_VENV = ROOT / "bench" / ".venv-mcp-proxy"
MCP_PROXY_VERSION = "0.13.0"  # the reference peer, pinned so runs compare like with like
UPSTREAM_STDIO = [sys.executable, str(UPSTREAM_SCRIPT), "--transport", "stdio"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_status(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status in bytes (VmHWM, VmRSS); 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own processes); False when not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Target:
    """One way of reaching the bench upstream: a name, how to open a client, the process to watch."""

    name: str
    url: str | None = None  # Streamable HTTP endpoint; None for a stdio target
    argv: list[str] | None = None  # stdio command for a direct stdio target
    proc: subprocess.Popen[bytes] | None = None
    note: str = ""
    clients: list[Client] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def open_client(self, http: aiohttp.ClientSession) -> Client:
        if self.url is not None:
            client: Client = await HttpClient(http, self.url).open()
        else:
            assert self.argv is not None
            client = await StdioClient(self.argv, cwd=str(ROOT)).open()
        self.clients.append(client)
        return client


class Processes:
    """Starts processes and stops every one of them (process group first TERM, then KILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{log_name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def read_listening(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    """The URL from the `LISTENING <url>` line the bench upstream prints."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if line.startswith("LISTENING "):
            return line.split(" ", 1)[1]
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("bench upstream did not start")


def start_upstream_http(procs: Processes) -> Target:
    proc = procs.spawn([sys.executable, str(UPSTREAM_SCRIPT), "--transport", "http", "--port", "0"], "upstream-http")
    return Target("direct http", url=read_listening(proc), proc=proc)


def start_floor(procs: Processes, upstream: Target) -> Target:
    """The bare aiohttp pass-through relay (bench/floor.py) in front of the HTTP upstream."""
    assert upstream.url is not None
    proc = procs.spawn([sys.executable, str(FLOOR_SCRIPT), "--upstream", upstream.url], "floor")
    return Target("aiohttp floor", url=read_listening(proc), proc=proc)


def tollgate_config(workdir: Path, name: str, port: int, upstream: Target | None) -> Path:
    """A TOML config for one Tollgate instance with its own data directory."""
    lines = [
        "[server]", f'listen = "127.0.0.1:{port}"', "max_body_bytes = 67108864", "",
        "[store]", f'dsn = "chdb://{workdir}/{name}/chdb"', "flush_rows = 5000", "flush_seconds = 1.0", "",
        "[telemetry]", "max_body_bytes = 67108864", "",
    ]
    if upstream is not None and upstream.url is not None:
        lines += ["[upstreams.bench]", 'type = "http"', f'url = "{upstream.url}"', "max_message_bytes = 67108864"]
    elif upstream is not None:
        args = ", ".join(f'"{a}"' for a in UPSTREAM_STDIO[1:])
        lines += ["[upstreams.bench]", 'type = "stdio"', f'command = "{UPSTREAM_STDIO[0]}"', f"args = [{args}]",
                  "max_message_bytes = 67108864"]
    (workdir / name).mkdir(parents=True, exist_ok=True)
    path = workdir / name / "tollgate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        body = await response.json()
                        if body.get("status") in (None, "ok", "ready"):
                            return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy in {timeout:g}s")


async def start_tollgate(procs: Processes, name: str, upstream: Target | None, *, store: bool = True) -> Target:
    port = free_port()
    config = tollgate_config(procs.workdir, name, port, upstream)
    argv = [sys.executable, "-m", "gateway.cli", "--log-level", "warning", "serve", "--config", str(config)]
    if not store:
        argv.append("--no-store")
    proc = procs.spawn(argv, name)
    await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
    return Target(name, url=f"http://127.0.0.1:{port}/mcp", proc=proc)


def installed_version(venv: Path, package: str) -> str | None:
    """The version of `package` installed in `venv`, or None."""
    try:
        done = subprocess.run([str(venv / "bin" / "python"), "-c",
                               f"import importlib.metadata as m; print(m.version({package!r}))"],
                              capture_output=True, text=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_mcp_proxy() -> tuple[Path | None, str]:
    """mcp-proxy MCP_PROXY_VERSION from its own venv (created, or refreshed when it holds another version):
    the executable and its version, or None and why not."""
    exe = MCP_PROXY_VENV / "bin" / "mcp-proxy"
    if exe.exists() and installed_version(MCP_PROXY_VENV, "mcp-proxy") == MCP_PROXY_VERSION:
        return exe, MCP_PROXY_VERSION
    try:
        if not (MCP_PROXY_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(MCP_PROXY_VENV)], check=True, capture_output=True,
                           timeout=120)
        subprocess.run([str(MCP_PROXY_VENV / "bin" / "pip"), "install", "-q", f"mcp-proxy=={MCP_PROXY_VERSION}"],
                       check=True, capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"mcp-proxy {MCP_PROXY_VERSION} could not be installed into {MCP_PROXY_VENV.name}: {exc}"
    version = installed_version(MCP_PROXY_VENV, "mcp-proxy")
    if not exe.exists() or version != MCP_PROXY_VERSION:
        return None, f"mcp-proxy install left version {version} (wanted {MCP_PROXY_VERSION})"
    return exe, version


async def start_mcp_proxy(procs: Processes) -> Target | str | None:
    """mcp-proxy serving Streamable HTTP in front of the stdio bench upstream; a note when it cannot run."""
    exe, version = ensure_mcp_proxy()
    if exe is None:
        return version
    port = free_port()
    argv = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING", "--cwd", str(ROOT),
            "--", *UPSTREAM_STDIO]
    proc = procs.spawn(argv, "mcp-proxy")
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"mcp-proxy exited with {proc.returncode} (see its log)"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/status") as response:
                    if response.status < 500:
                        break
            await asyncio.sleep(0.2)
    return Target("mcp-proxy (stdio)", url=f"http://127.0.0.1:{port}/mcp", proc=proc, note=f"mcp-proxy {version}")
