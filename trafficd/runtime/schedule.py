"""apscheduler 3.x — the design card's scheduler — kept on the monotonic clock.

apscheduler 3 computes every fire time from `datetime.now()` (`BaseScheduler._process_jobs`): a wall clock
stepped back one hour (NTP, a resumed VM, an operator's `date`) would hold every job for that hour, and a step
forward makes every job due at once. Its asyncio timer, though, is the event loop's `call_later`, which runs on
the monotonic clock. `MonotonicScheduler` keeps what apscheduler does well (interval jobs, no overlapping runs,
missed runs coalesced, rescheduling from a reload) and, each time apscheduler is about to look at the wall clock,
first compares the offset between the wall and the monotonic clock with the one it saw last: when it moved by
more than `step_tolerance_s`, every job's next run time is shifted by the same step. A job therefore stays due
`interval` after its last run on the monotonic clock whatever the wall clock does; the step is logged once as
`schedule.clock_stepped`. (This overrides apscheduler's `_process_jobs`; pyproject pins apscheduler < 4 and
tests/test_schedule.py steps a real process's clock with libfaketime both ways.)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

STEP_TOLERANCE_S = 0.5  # a smaller change between the clocks is slewing or scheduling noise, not a step


def _offset() -> float:
    """Wall minus monotonic clock, read between two monotonic readings close together (a process preempted
    between the readings would otherwise look like a step)."""
    for _ in range(5):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if after - before < 0.01:
            break
    return wall - (before + after) / 2


class _SteppedClockAware(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler that re-anchors its jobs before each look at the wall clock."""

    def __init__(self, on_step: Callable[[float], None], step_tolerance_s: float, **kw: Any) -> None:
        super().__init__(**kw)
        self._on_step = on_step
        self._step_tolerance_s = step_tolerance_s
        self._anchor = _offset()

    def _process_jobs(self) -> float | None:
        now = _offset()
        step, self._anchor = now - self._anchor, now
        if abs(step) > self._step_tolerance_s:
            self._shift(step)
            self._on_step(step)
        wait: float | None = super()._process_jobs()
        return wait

    def _shift(self, step_s: float) -> None:
        with self._jobstores_lock:
            for job in self.get_jobs():
                if job.next_run_time is not None:
                    job._modify(next_run_time=job.next_run_time + timedelta(seconds=step_s))
                    self._lookup_jobstore(job._jobstore_alias).update_job(job)


class MonotonicScheduler:
    """Interval jobs on apscheduler's AsyncIOScheduler that keep their pace across wall-clock steps."""

    def __init__(self, log: Any, *, step_tolerance_s: float = STEP_TOLERANCE_S) -> None:
        self.log = log
        self.steps_seen = 0
        self.scheduler = _SteppedClockAware(
            self._stepped,
            step_tolerance_s,
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def _stepped(self, step_s: float) -> None:
        self.steps_seen += 1
        self.log.warning("schedule.clock_stepped", step_s=round(step_s, 3), jobs=len(self.scheduler.get_jobs()))

    def start(self) -> None:
        """Start on the running event loop."""
        self.scheduler.start()

    def every(self, job_id: str, func: Callable[[], Awaitable[None]], interval_s: float) -> None:
        """Run the coroutine function `func` now and then every `interval_s`, never two runs at once."""
        self.scheduler.add_job(
            func, IntervalTrigger(seconds=interval_s, timezone=UTC), id=job_id, next_run_time=datetime.now(UTC)
        )

    def reschedule(self, job_id: str, interval_s: float) -> None:
        """A new interval for `job_id`, counted from now (a reload takes effect at once, not after the old one)."""
        self.scheduler.reschedule_job(job_id, trigger=IntervalTrigger(seconds=interval_s, timezone=UTC))

    def shutdown(self) -> None:
        """No further runs; a run in progress is the caller's to finish or abandon."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
