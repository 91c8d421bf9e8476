"""The Dockerfile, checked without a Docker engine: what it copies exists, and the config it serves is valid
and names only paths the image has.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]


def test_every_copied_source_exists() -> None:
    for args in instructions("COPY"):
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_the_image_runs_as_a_non_root_user_with_a_data_volume_and_the_port() -> None:
    assert instructions("USER") == ["tollgate"]
    assert instructions("VOLUME") == ['["/data"]']
    assert instructions("EXPOSE") == ["8765"]
    assert json.loads(instructions("CMD")[0])[0] == "serve"


def test_the_image_config_needs_a_token_and_serves_from_paths_the_image_has() -> None:
    copied = next(a.split() for a in instructions("COPY") if a.split()[-1] == "/etc/tollgate/config.toml")
    config_path = ROOT / copied[0]
    with pytest.raises(ConfigError) as caught:
        load_config(config_path, environ={})
    assert "server.auth_tokens[0]: environment variable TOLLGATE_TOKEN is not set" in caught.value.problems
    config = load_config(config_path, environ={"TOLLGATE_TOKEN": "t"})
    assert config.server.listen == "0.0.0.0:8765" and config.store.dsn == "chdb:///data/tollgate"
    # Each stdio command lives in the image: /app is the WORKDIR, node_modules comes from the npm install line,
    # the rest from COPY lines.
    npm_pins = re.findall(r"npm install .*?(@[\w/-]+)@([\w.]+)", DOCKERFILE)
    assert npm_pins, "the image installs the npm demo upstream"
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    for package, version in npm_pins:
        assert pinned[package] == version, f"{package}: the image and package.json pin different versions"
    for upstream in config.upstreams:
        for path in [upstream.command or "", *upstream.args, upstream.cwd or ""]:
            if path.startswith("/app/"):
                local = ROOT / path.removeprefix("/app/")
                assert local.exists() or path.startswith("/app/node_modules/"), path
