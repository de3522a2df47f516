"""Each fault scenario's one line goes into its test report (`user_properties`, which pytest-xdist carries back to
the main process); tests/conftest.py prints them in a "fault suite" section at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import LINES


@pytest.fixture(autouse=True)
def _fault_line(request: pytest.FixtureRequest) -> Iterator[None]:
    LINES.clear()
    yield
    request.node.user_properties.extend(("fault", line) for line in LINES)
