"""The fault suite prints one line per scenario at the end of the run (pytest captures output while it runs)."""

from __future__ import annotations

from typing import Any

from .harness import LINES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LINES:
        terminalreporter.section("fault suite")
        for line in LINES:
            terminalreporter.write_line(line)
