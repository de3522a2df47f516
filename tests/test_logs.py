"""Logs are an interface: every line JSON (trafficd's events and every library's), rounded figures, ISO times."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from trafficd.runtime import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("INFO", stream=out)
    yield out
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.captureWarnings(False)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_own_events_are_json_with_iso_timestamp(stream: io.StringIO) -> None:
    """A trafficd event is one JSON object with event, level, component and an ISO 8601 UTC timestamp."""
    logs.get_logger("controller").info("controller.started", regions=["a"])
    [line] = lines(stream)
    assert line["event"] == "controller.started" and line["level"] == "info" and line["component"] == "controller"
    assert str(line["timestamp"]).endswith("Z") and "T" in str(line["timestamp"])


def test_library_loggers_and_warnings_are_json(stream: io.StringIO) -> None:
    """apscheduler, asyncio, aiohttp and botocore records and `warnings.warn` become `library.logged` JSON."""
    logging.getLogger("apscheduler.scheduler").warning("Execution of job %r skipped", "evaluate")
    logging.getLogger("asyncio").error("Task was destroyed but it is pending!")
    logging.getLogger("aiohttp.server").error("Error handling request")
    logging.getLogger("botocore.credentials").warning("Found credentials in environment variables.")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    got = lines(stream)
    assert [g["event"] for g in got] == ["library.logged"] * 5
    assert [g["logger"] for g in got] == [
        "apscheduler.scheduler",
        "asyncio",
        "aiohttp.server",
        "botocore.credentials",
        "py.warnings",
    ]
    assert got[0]["message"] == "Execution of job 'evaluate' skipped" and got[0]["level"] == "warning"
    assert "an old API" in str(got[4]["message"])


def test_library_debug_is_held_back(stream: io.StringIO) -> None:
    """botocore DEBUG (signed headers) and apscheduler INFO are not written at all."""
    logging.getLogger("botocore.endpoint").debug("Authorization: AWS4-HMAC-SHA256 secret")
    logging.getLogger("apscheduler.scheduler").info("Added job")
    assert stream.getvalue() == ""


def test_a_repeated_library_message_is_written_once_per_window() -> None:
    """The same library message every tick is written once; the next one after the window counts the rest."""
    flt = logs.RepeatFilter(window_s=0.0)
    record = logging.LogRecord("apscheduler.scheduler", logging.WARNING, "f", 1, "skipped %s", ("x",), None)
    assert flt.filter(record) and vars(record)["repeated"] == 0  # an attribute the filter adds to the record
    flt = logs.RepeatFilter(window_s=3600.0)
    results = [
        flt.filter(logging.LogRecord("apscheduler.scheduler", logging.WARNING, "f", 1, "skipped %s", (i,), None))
        for i in range(10)
    ]
    assert results == [True] + [False] * 9


def test_figures_are_rounded_and_epochs_are_iso(stream: io.StringIO) -> None:
    """Floats: `_ms` whole milliseconds, others 4 significant digits; `*_at`/`*_until`/`since` epochs as ISO."""
    logs.get_logger("controller").info(
        "controller.weights_shifted",
        p99_ms=330.14355828849347,
        small_ms=2.345678,
        error_rate=0.0012345678,
        serving_fraction_after=0.6612345,
        hold_down_until=1_764_645_120.25,
        expires_at=1_764_645_120,
        weights_after={"eu-west": 0.3333333333},
        evidence=[{"since": 1_764_645_120.0, "p99_ms": 1234.56}],
        lease_token=17,
        dry_run=False,
    )
    [line] = lines(stream)
    assert line["p99_ms"] == 330 and line["small_ms"] == 2.346
    assert line["error_rate"] == 0.001235 and line["serving_fraction_after"] == 0.6612
    assert line["hold_down_until"] == "2025-12-02T03:12:00.250Z"
    assert line["expires_at"] == "2025-12-02T03:12:00.000Z"
    assert line["weights_after"] == {"eu-west": 0.3333}
    assert line["evidence"] == [{"since": "2025-12-02T03:12:00.000Z", "p99_ms": 1235}]
    assert line["lease_token"] == 17 and line["dry_run"] is False


def test_round_figure_keeps_zero_and_infinity() -> None:
    """0, inf and NaN pass through rounding unchanged."""
    assert logs.round_figure(0.0) == 0.0
    assert logs.round_figure(float("inf")) == float("inf")
    assert logs.round_figure(123456.789) == 123500.0
