"""End-to-end test hooks: figures a test measured are printed in the run's summary, so `pytest -q` (as CI runs
it) shows them, not only `-s` or a JUnit file.

A test reports one with `record_property(MEASURED, "text")` (before its assertions, so a failing run shows it too).
"""

from __future__ import annotations

import pytest

MEASURED = "measured"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [f"{report.nodeid}: {value}"
             for reports in terminalreporter.stats.values() for report in reports
             if isinstance(report, pytest.TestReport) and report.when == "call"
             for name, value in report.user_properties if name == MEASURED]
    if lines:
        terminalreporter.write_sep("-", "measured")
        for line in lines:
            terminalreporter.write_line(line)
