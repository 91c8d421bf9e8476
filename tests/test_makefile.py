"""The Makefile's install step, checked with `make -n` in a copy of the files it depends on: pip and npm run
on a fresh checkout and again only when their manifests change, so a second `make run` starts at once (and
`make test` does not empty node_modules under a running `make run` server)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP = "pip install -q -e '.[demo,test]'"
NPM = "npm ci --no-audit --no-fund --loglevel=error"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")  # CI installs it (.ci/run)
    for name in ("Makefile", "pyproject.toml", "package.json", "package-lock.json"):
        shutil.copy2(ROOT / name, tmp_path / name)
        os.utime(tmp_path / name, (1_000_000, 1_000_000))
    return tmp_path


def planned(where: Path, target: str = "install") -> list[str]:
    """The commands `make` would run for `target`, without running them. Run from `make test`, the outer make's
    variables would make this one a sub-make that prints 'Entering directory' lines: they are left out."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    result = subprocess.run(["make", "-n", target], cwd=where, capture_output=True, text=True, timeout=60, check=True,
                            env=env)
    return [line.strip() for line in result.stdout.splitlines()]


def installed(where: Path, at: int = 2_000_000) -> None:
    """What a finished `make install` leaves behind at time `at`: the venv's python and both stamps."""
    for path in (".venv/bin/python", ".venv/.installed", "node_modules/.installed"):
        (where / path).parent.mkdir(parents=True, exist_ok=True)
        (where / path).touch()
        os.utime(where / path, (at, at))


def test_a_fresh_checkout_creates_the_venv_and_installs_both(checkout: Path) -> None:
    assert planned(checkout) == ["python3 -m venv .venv", f".venv/bin/{PIP}", "touch .venv/.installed", NPM,
                                 "touch node_modules/.installed"]


def test_a_second_install_or_run_does_nothing_until_a_manifest_changes(checkout: Path) -> None:
    installed(checkout)
    assert planned(checkout) == ["make: Nothing to be done for 'install'."]
    assert [line for line in planned(checkout, "run") if "tollgate serve" not in line] == []
    os.utime(checkout / "package-lock.json", (3_000_000, 3_000_000))
    assert planned(checkout) == [NPM, "touch node_modules/.installed"]
    installed(checkout, at=4_000_000)
    os.utime(checkout / "pyproject.toml", (5_000_000, 5_000_000))
    assert planned(checkout) == [f".venv/bin/{PIP}", "touch .venv/.installed"]
