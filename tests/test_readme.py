"""The README's Commands block against the real argument parser: every command and every flag is listed."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from gateway.cli import _parser

ROOT = Path(__file__).resolve().parents[1]


def commands_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Commands\n\n```\n") + len("## Commands\n\n```\n")
    return text[start:text.index("```\n", start)].splitlines()


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Each runnable command (`report calls`, `serve`, ...) with its parser."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
    for action in subcommands:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def described(lines: list[str], prefix: str) -> str:
    """The block's line starting with `prefix` and its indented continuation lines."""
    for i, line in enumerate(lines):
        if line.startswith(prefix + " ") or line == prefix:
            rest = lines[i + 1:]
            follow = next((j for j, more in enumerate(rest) if not more.startswith(" ")), len(rest))
            return "\n".join([line, *rest[:follow]])
    raise AssertionError(f"the README's Commands block has no line for `{prefix}`")


def test_every_command_is_listed_with_every_flag_it_takes() -> None:
    lines = commands_block()
    parser = _parser()
    assert {f"[{flag}" for flag in flags(parser)} <= set(described(lines, "tollgate").split())
    for path, sub in leaves(parser):
        words = ("tollgate", *path, "claude") if path == ("setup",) else ("tollgate", *path)
        text = described(lines, " ".join(words))
        missing = sorted(flag for flag in flags(sub) if f"[{flag}" not in text)
        assert missing == [], f"README lists `{' '.join(words)}` without {', '.join(missing)}"
