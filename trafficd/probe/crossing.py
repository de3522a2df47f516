"""A running probe's early records: it is reported over an SLO threshold when it passes it, not when it ends.

A probe still running past the total-latency SLO threshold (or past the TTFT threshold with no first token yet)
already counts as over it. `Crossing` sets a timer at each threshold of the probe (`policy.slo_threshold_ms`,
`policy.ttft_threshold_ms`); when one fires and the probe is still running, an early record goes to the agent's
outbox at once — n and the over-count of each threshold passed (`stats/records.py`, the same records derived from
a finished probe) — and the probe's final record later carries `counted`, so nothing is counted twice: it adds
only the error (a stall that times out), the over-counts not yet made and the real latency (the histogram).

The agent's own stalls (`StallWatch`) are taken out: a timer fires with the probe's elapsed time less the time
local stalls took of it (a lower bound of the worker's), and writes only what is over its threshold even so. A
probe over only because the agent stalled writes nothing then; its timer is set again for when it would pass the
threshold with the stall taken out (the probe may also have finished during the stall: its record is then
handled when the loop reads it). A probe that ends without an early record and overlapped a local stall is
decided by its final record (`despite_stall`): discarded for the stall, unless it is over a threshold even with
the stall's time taken out — then its final record, with that time taken out, counts what is over even so, its
error and n, once. Once an early
record is written the probe is counted: its final record is always written (never discarded for a later local
stall), with its latency and TTFT less the time local stalls took of each (`Crossing.final`), so a stall after an
early TTFT over-count cannot add a total over-count the worker did not earn; and a probe cut short by the agent's
shutdown gets a final record too, with the latency so far (a lower bound) and no error (the worker did not fail;
the agent stopped). Probes are never cut short by this: deadlines are unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from trafficd.model import Sample
from trafficd.probe.prober import Prober
from trafficd.probe.target import ProbeResult, Target
from trafficd.probe.timing import Run
from trafficd.stats.records import past
from trafficd.stats.sketch import COUNTED_N, COUNTED_TTFT, counts_of


class Crossing:
    """One probe's SLO thresholds: an early record at each it passes still running; what they counted."""

    def __init__(
        self,
        target: Target,
        thresholds_ms: tuple[float, float | None],
        emit: Callable[[Sample], None],
        stall_s: Callable[[float], float] = lambda elapsed_s: 0.0,
    ) -> None:
        self.target = target
        self.total_ms, self.ttft_ms = thresholds_ms
        self.emit = emit
        self.stall_s = stall_s  # how long the agent's own stalls took of the probe's first elapsed_s
        self.counted = 0  # sketch.COUNTED_* of the early records written
        self.at_ms = 0.0  # elapsed less the agent's stalls at the last early record
        self.run: Run | None = None
        self.t_wall = 0.0
        self.ended = False
        self._timers: list[asyncio.TimerHandle] = []

    def start(self, run: Run, t_wall: float) -> None:
        """The probe has its t0: set a timer at each threshold (the prober calls this before sending)."""
        self.run, self.t_wall = run, t_wall
        for ms in {self.total_ms, self.ttft_ms}:
            if ms is not None and ms < run.d.total * 1000.0:
                self._at(run.t0 + past(ms) / 1000.0)

    def _at(self, when: float) -> None:
        self._timers.append(asyncio.get_running_loop().call_at(when, self._cross))

    def _cross(self) -> None:
        run = self.run
        if self.ended or run is None or run.done_at is not None or run.finished_at is not None:
            return
        loop = asyncio.get_running_loop()
        elapsed_s = loop.time() - run.t0
        stall_s = self.stall_s(elapsed_s)
        at_ms = max((elapsed_s - stall_s) * 1000.0, self.at_ms)
        ttft = None if run.ttft is None else (run.ttft - self.stall_s(run.ttft)) * 1000.0
        t = self.target
        record = Sample(
            t.region, t.worker, t.model, self.t_wall, True, None, at_ms, ttft, early=True, counted=self.counted
        )
        bits = counts_of(record, self.total_ms, self.ttft_ms)
        if bits & ~COUNTED_N:
            self.counted |= bits
            self.at_ms = at_ms
            self.emit(record)
            return
        # Over only because the agent stalled: look again when it would be over with the stall taken out.
        pending = [ms for ms in (self.total_ms, self.ttft_ms if run.ttft is None else None) if ms is not None]
        due = [past(ms) / 1000.0 + stall_s for ms in pending if past(ms) / 1000.0 + stall_s < run.d.total]
        if due:
            self._at(run.t0 + min(due))

    def end(self) -> None:
        """The probe is over (finished, failed or cancelled): no more early records."""
        self.ended = True
        for timer in self._timers:
            timer.cancel()

    def final(self, sample: Sample) -> Sample:
        """The probe's final record: what its early records counted is not counted again; its latency and its TTFT
        are less the time local stalls took of each (lower bounds of the worker's), never below the time at its
        last early record, nor the TTFT below its threshold once that was counted."""
        if not self.counted:
            return sample
        less = less_stall(sample, self.stall_s)
        ttft = less.ttft_ms
        if ttft is not None and self.counted & COUNTED_TTFT and self.ttft_ms is not None:
            ttft = max(ttft, past(self.ttft_ms))
        return replace(less, counted=self.counted, total_ms=max(less.total_ms, self.at_ms), ttft_ms=ttft)

    def abandoned(self) -> Sample | None:
        """The final record of a probe cut short by the agent's shutdown after an early record (else None): the
        latency so far, no error."""
        run = self.run
        if not self.counted or run is None:
            return None
        elapsed_ms = max((asyncio.get_running_loop().time() - run.t0) * 1000.0, self.at_ms)
        t = self.target
        return Sample(t.region, t.worker, t.model, self.t_wall, True, None, elapsed_ms, counted=self.counted)


async def probe_reporting_early(
    prober: Prober,
    target: Target,
    slo_ms: tuple[float, float | None],
    emit: Callable[[Sample], None],
    stall_s: Callable[[float], float] = lambda elapsed_s: 0.0,
) -> tuple[ProbeResult, bool]:
    """Probe `target`, writing an early record at each SLO threshold it passes still running (the agent's own
    stalls taken out): its result (the final record) and whether it was counted early (then never discarded)."""
    watch = Crossing(target, slo_ms, emit, stall_s)
    try:
        result = await prober.probe_detailed(target, on_start=watch.start)
    except asyncio.CancelledError:
        if (last := watch.abandoned()) is not None:  # counted already: its final record, so n has its end
            emit(last)
        raise
    finally:
        watch.end()
    return replace(result, sample=watch.final(result.sample)), bool(watch.counted)


def stall_time_since(start: float, overlap_s: Callable[[float, float], float]) -> Callable[[float], float]:
    """`stall_s` for a probe started at monotonic `start`: how long local stalls took of its first `elapsed_s`."""
    return lambda elapsed_s: overlap_s(start, start + elapsed_s)


def despite_stall(
    sample: Sample, stall_s: Callable[[float], float], slo_ms: tuple[float, float | None]
) -> Sample | None:
    """A probe not counted early whose measurement overlapped the agent's own stalls: its record with its latency
    and TTFT less the time the stalls took of each (lower bounds of the worker's) when that is still over a
    threshold — it then counts what is over even so, and its error — else None: it measured the agent (discarded)."""
    less = less_stall(sample, stall_s)
    return less if counts_of(less, *slo_ms) & ~COUNTED_N else None


def less_stall(sample: Sample, stall_s: Callable[[float], float]) -> Sample:
    """`sample` with its latency and TTFT less the time the agent's own stalls took of each (`stall_s(elapsed_s)`:
    the stalls' time within the probe's first elapsed_s): lower bounds of the worker's."""
    ttft = None if sample.ttft_ms is None else sample.ttft_ms - stall_s(sample.ttft_ms / 1000.0) * 1000.0
    return replace(sample, total_ms=sample.total_ms - stall_s(sample.total_ms / 1000.0) * 1000.0, ttft_ms=ttft)
