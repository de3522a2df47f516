"""The records one probe becomes (pure): an early record at each SLO threshold it runs past, then its final one.

This is what the agent writes live (probe/crossing.py watches the running probe); here the same records are
derived from a finished `Sample`, for the probe-level replay (`trafficd simulate --samples`) and the tests:

- the TTFT threshold, passed with no first token yet (`ttft_ms` missing or later) → an early record counting
  n and TTFT over its SLO;
- the total-latency threshold, passed before the probe ended → an early record counting n (unless counted) and
  total latency over its SLO;
- the end → the final record: the error (if it failed) and both histogram buckets, plus whatever was not counted.

Each record is stamped `t + total_ms` (its `total_ms` is the time elapsed when it was written), so it is filed
in the slice of the moment it became known. See docs/stats.md "Early records".
"""

from __future__ import annotations

import math
from dataclasses import replace

from trafficd.model import Sample
from trafficd.stats.sketch import counts_of


def stamp(record: Sample) -> float:
    """When a record is written: the probe's start plus the time elapsed then (the slice it is filed under)."""
    return record.t + record.total_ms / 1000.0


def past(threshold_ms: float) -> float:
    """The first elapsed time that is over a threshold (over means strictly greater)."""
    return math.nextafter(threshold_ms, math.inf)


def early_record(final: Sample, at_ms: float, counted: int) -> Sample:
    """The record of a probe still running `at_ms` after its start: counts only, no error, no latency yet."""
    ttft = final.ttft_ms if final.ttft_ms is not None and final.ttft_ms <= at_ms else None
    return Sample(
        final.region, final.worker, final.model, final.t, True, None, at_ms, ttft, early=True, counted=counted
    )


def records_of(final: Sample, total_threshold_ms: float, ttft_threshold_ms: float | None) -> list[Sample]:
    """The records of one finished probe, oldest first, as the agent writes them."""
    crossings = []
    no_token_yet = ttft_threshold_ms is not None and (final.ttft_ms is None or final.ttft_ms > ttft_threshold_ms)
    if ttft_threshold_ms is not None and no_token_yet and final.total_ms > ttft_threshold_ms:
        crossings.append(past(ttft_threshold_ms))
    if final.total_ms > total_threshold_ms:
        crossings.append(past(total_threshold_ms))
    out: list[Sample] = []
    counted = 0
    for at_ms in sorted(set(crossings)):
        record = early_record(final, at_ms, counted)
        bits = counts_of(record, total_threshold_ms, ttft_threshold_ms)
        if bits:
            out.append(record)
            counted |= bits
    out.append(replace(final, counted=counted) if counted else final)
    return out
