"""`StallWatch`: the agent's own stalls, so it never reports them as the worker's latency.

A ticker on the agent's event loop wakes every TICK_S and compares the monotonic clock with the tick it expected.
A gap longer than TICK_S + threshold is a local stall: the event loop was blocked (`busy`: the process used CPU
for most of the gap) or the whole process was paused (`paused`: SIGSTOP, a VM or container freeze, swap; little
CPU used). Stalls are kept for KEEP_S; `overlapping(start, end)` tells the agent whether a probe's measurement
(monotonic start and end) overlaps one, in which case the sample measured the agent, not the worker, and is
discarded (counted, logged) — unless it is over its SLO even with the stalls' time (`overlap_s`) taken out
(`probe/crossing.py: despite_stall`). `overlapping` first checks the clock itself, so a probe that completes
right after a pause, before the ticker has run, is caught too. The ticker also keeps how late its recent ticks
woke (`lag_s`): the event loop's lag, which delays every chunk a probe reads, so the concurrency sizing holds off
growing while it is high (`probe/schedule.py`).

Event: `agent.stalled` (`duration_ms`, `cpu_ms`, `kind`, `threshold_ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trafficd.runtime.logs import get_logger

TICK_S = 0.05
STALL_THRESHOLD_S = 0.25  # a local stall longer than this is not measured as the worker's latency
KEEP_S = 600.0  # longer than any probe deadline
LAG_TICKS = 40  # the recent ticks `lag_s` looks at (2 s)

log = get_logger("agent")


@dataclass(frozen=True, slots=True)
class Stall:
    start: float  # monotonic
    end: float
    cpu_s: float  # this process's CPU time during the gap

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def kind(self) -> str:
        return "busy" if self.cpu_s >= 0.5 * self.duration_s else "paused"


class StallWatch:
    def __init__(
        self,
        region: str = "",
        *,
        threshold_s: float = STALL_THRESHOLD_S,
        tick_s: float = TICK_S,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.region, self.threshold_s, self.tick_s = region, threshold_s, tick_s
        self.clock, self.cpu = clock, cpu
        self.stalls: deque[Stall] = deque()
        self.stalls_total = 0
        self._last, self._last_cpu = clock(), cpu()
        self.late: deque[float] = deque(maxlen=LAG_TICKS)  # how late each recent tick woke, seconds

    def lag_s(self) -> float:
        """The event loop's recent lag: the 90th percentile of how late the last LAG_TICKS ticks woke."""
        if len(self.late) < LAG_TICKS // 2:
            return 0.0  # too few ticks yet (the agent's own start-up would dominate them)
        ordered = sorted(self.late)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]

    def check(self) -> Stall | None:
        """Record (and log) a stall if the time since the last check is longer than a tick plus the threshold."""
        now, cpu = self.clock(), self.cpu()
        gap = now - self._last
        stall = None
        if gap > self.tick_s + self.threshold_s:
            stall = Stall(self._last, now, max(0.0, cpu - self._last_cpu))
            self.stalls.append(stall)
            self.stalls_total += 1
            log.warning(
                "agent.stalled",
                region=self.region,
                duration_ms=round(stall.duration_s * 1000.0, 1),
                cpu_ms=round(stall.cpu_s * 1000.0, 1),
                kind=stall.kind,
                threshold_ms=round(self.threshold_s * 1000.0, 1),
            )
        self._last, self._last_cpu = now, cpu
        while self.stalls and self.stalls[0].end < now - KEEP_S:
            self.stalls.popleft()
        return stall

    def overlapping(self, start: float, end: float) -> Stall | None:
        """The longest local stall overlapping [start, end] (monotonic), checking the clock first."""
        self.check()
        hits = [s for s in self.stalls if s.start < end and s.end > start]
        return max(hits, key=lambda s: s.duration_s) if hits else None

    def overlap_s(self, start: float, end: float) -> float:
        """How long local stalls took of [start, end] (monotonic), checking the clock first."""
        self.check()
        return sum(max(0.0, min(s.end, end) - max(s.start, start)) for s in self.stalls)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set (the time before the first tick is not a stall)."""
        self._last, self._last_cpu = self.clock(), self.cpu()
        while not stop.is_set():
            slept_from = self.clock()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_s)
            self.late.append(max(0.0, self.clock() - slept_from - self.tick_s))
            self.check()
