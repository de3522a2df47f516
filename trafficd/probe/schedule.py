"""How much one agent probes, and saying so when it cannot keep up (pure, except the log and metric calls).

* **Shards.** Several agents may probe one region: `trafficd agent --region R --shard I/N` (or the systemd
  instance `trafficd-agent@R:IofN`, since `--region R:IofN` is read the same way) probes only the series whose
  stable hash (SHA-256 of `worker|model`, not Python's per-process `hash`) falls in shard I of N. Each series is
  probed by exactly one of the N agents, whichever host runs them, so a region of 1,000 series is split without
  double counting; agents with different N would overlap, so run one N per region.
* **Capacity.** A round needs about `series × expected probe duration ÷ interval` probes in flight
  (`needed_concurrency`); with fewer slots, probes wait for a slot until their round's interval ends and are then
  skipped. `SkipWatch` turns skipped probes into one `agent.falling_behind` warning per episode (with the
  concurrency the measured probe durations call for) and `agent.caught_up` once rounds have skipped nothing for
  CAUGHT_UP_AFTER_S (a host that skips every few rounds stays in one episode instead of logging a pair each time);
  `trafficd_probes_skipped_total{region}` counts every skipped probe.
* **Automatic concurrency** (`probe.concurrency: auto`, the default). `ConcurrencySizer` sizes the slots
  (`Slots`, a semaphore that can be resized while probes wait) from the series of a round and the mean duration of
  the last 256 probes — Little's law: probes in flight = probes started per second × mean time each holds a slot —
  with 25 % headroom, never below one slot per series and at most `probe.max_concurrency`. The mean, not a high
  percentile: one worker stalling at its deadline raises the mean by its share, while a p95 would size every
  series as if it stalled. An agent starts at START_SLOTS (64, the old fixed default, at most the ceiling) and
  sizes itself when its first round completes; then it grows as soon as a round needs more (also when a round
  skipped probes although the sizing said it had enough: probes hanging towards their deadline are not measured
  until they end) — by 10 % to 50 % a step, GROW_WAIT_ROUNDS apart, so the loop lag can answer each step — and
  shrinks only after `SHRINK_AFTER_ROUNDS` rounds in a row needed less than two thirds of it, so a short lull
  does not undo it.
* **Fidelity before throughput.** Growth needs the agent's event loop to be responsive (lag under
  LAG_GROW_BELOW_S, `probe/stall.py`); while it lags more than LAG_SHRINK_ABOVE_S the slots shrink by a fifth
  every LAG_WAIT_ROUNDS, even below the need, and come back in 10 % steps once it eases. On a saturated host more
  probes in flight would measure the host, not the workers; skipped probes only thin the evidence (which holds).
  Each change is one `agent.concurrency_changed` line (INFO at most every 5 min, DEBUG between) and the
  `trafficd_probe_concurrency{region}` gauge. A fixed number keeps the old behaviour: the agent only warns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEADROOM = 1.25  # slots beyond the average need: durations vary, jitter bunches starts
GROW_STEP = 1.10  # a growth is at least 10 % (no line per extra slot while durations creep up) ...
GROW_MAX = 1.5  # ... and at most half as many again (also when a round skipped with enough slots by the mean)
GROW_WAIT_ROUNDS = 4  # rounds after a growth before the next: the loop lag (2 s of ticks) shows its effect first
SHRINK_BELOW = 2 / 3  # shrink only when the need falls under two thirds of the slots ...
SHRINK_AFTER_ROUNDS = 20  # ... for this many rounds in a row (5 s at the default 250 ms interval)
RECENT_PROBES = 256  # the durations the sizing averages
START_SLOTS = 64  # before anything is measured: the old fixed default (≤ 3 ms TTFT added at p99 on idle 2 cores)
CAUGHT_UP_AFTER_S = 30.0  # skipped-probe episodes end after this long without a skip (not a pair of lines per flap)
# The agent's event-loop lag (probe/stall.py) delays every chunk it reads: measured with bench-probe on 2 cores,
# a lag (p90 of 2 s of ticks) of ~3 ms went with ≤ 17 ms TTFT added at p99, 13 ms with 46 ms, 21 ms with 65 ms,
# 74 ms with 228 ms: roughly 3–4 × the lag, so the 30 ms fidelity target needs it under ~8 ms.
LAG_GROW_BELOW_S = 0.005  # grow only while the loop lags less than this ...
LAG_SHRINK_ABOVE_S = 0.010  # ... and shrink (by LAG_SHRINK) while it lags more: fidelity before throughput
LAG_SHRINK = 0.8
LAG_MIN_SLOTS = 4
LAG_WAIT_ROUNDS = 8  # after a lag-driven change, rounds before the next (the lag needs time to answer)
CHANGE_INFO_EVERY_S = 300.0  # `agent.concurrency_changed` at INFO at most this often (the log budget); DEBUG between


class ShardError(ValueError):
    """A shard spec that is not I/N (or IofN) with 1 ≤ I ≤ N."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*(?:/|of)\s*(\d+)\s*", text)
        if not m:
            raise ShardError(f"shard {text!r}: expected I/N or IofN, e.g. 1/3")
        index, count = int(m.group(1)), int(m.group(2))
        if not 1 <= index <= count:
            raise ShardError(f"shard {text!r}: I must be between 1 and N (e.g. 1/3, 2/3, 3/3)")
        return cls(index, count)

    def owns(self, worker: str, model: str) -> bool:
        """Whether this shard probes the series (worker, model)."""
        return self.count == 1 or shard_of(worker, model, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(worker: str, model: str, count: int) -> int:
    """The 1-based shard of a series among `count`: stable across processes, hosts and Python versions."""
    digest = hashlib.sha256(f"{worker}|{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def split_region_arg(text: str) -> tuple[str, Shard | None]:
    """`us-east` → (us-east, None); `us-east:2of3` → (us-east, 2/3) (the systemd instance form)."""
    region, sep, spec = text.rpartition(":")
    if not sep or not re.fullmatch(r"\s*\d+\s*(?:/|of)\s*\d+\s*", spec):
        return text, None
    return region, Shard.parse(spec)


def needed_concurrency(series: int, expected_s: float, interval_s: float) -> int:
    """Probes in flight a round needs: series × expected duration ÷ interval, with HEADROOM (at least 1)."""
    if series <= 0 or interval_s <= 0:
        return 1
    return max(1, math.ceil(series * max(expected_s, 0.0) / interval_s * HEADROOM))


@dataclass
class SkipWatch:
    """Skipped probes as episodes: one warning when they start, one line when rounds have skipped none for
    `caught_up_after_s`."""

    region: str
    log: Any
    counter: Any = None  # a prometheus Counter with a `region` label, or None
    behind: bool = False
    skipped_in_episode: int = 0
    skipped_total: int = 0
    caught_up_after_s: float | None = None  # None: CAUGHT_UP_AFTER_S
    clean_s: float = 0.0  # rounds without a skip since the last skip, in seconds of their intervals

    def __post_init__(self) -> None:
        if self.counter is not None:
            self.counter.labels(self.region)  # exported at 0 from the start, so the first skips show in rate()

    def round_done(
        self,
        *,
        round_number: int,
        probes: int,
        skipped: int,
        concurrency: int,
        interval_s: float,
        mean_probe_s: float,
        auto_max: int | None = None,
        lag_s: float = 0.0,
    ) -> None:
        """`auto_max`: the ceiling when the concurrency is `auto` (None when it is fixed)."""
        if skipped:
            self.skipped_total += skipped
            self.skipped_in_episode += skipped
            if self.counter is not None:
                self.counter.labels(self.region).inc(skipped)
            self.clean_s = 0.0
            if not self.behind:
                self.behind = True
                self.log.warning(
                    "agent.falling_behind",
                    region=self.region,
                    round=round_number,
                    probes=probes,
                    skipped=skipped,
                    concurrency=concurrency,
                    concurrency_mode="fixed" if auto_max is None else "auto",
                    max_concurrency=concurrency if auto_max is None else auto_max,
                    needed_concurrency=needed_concurrency(probes, mean_probe_s, interval_s),
                    mean_probe_ms=round(mean_probe_s * 1000.0, 1),
                    interval_s=interval_s,
                    loop_lag_ms=round(lag_s * 1000.0, 1),
                    hint=_hint(concurrency, auto_max, lag_s),
                )
            return
        self.clean_s += interval_s
        after = CAUGHT_UP_AFTER_S if self.caught_up_after_s is None else self.caught_up_after_s
        if self.behind and self.clean_s >= after:
            self.log.info("agent.caught_up", region=self.region, round=round_number, skipped=self.skipped_in_episode)
            self.behind = False
            self.skipped_in_episode = 0


def _hint(concurrency: int, auto_max: int | None, lag_s: float = 0.0) -> str:
    shard = "lengthen probe.interval, or split the region with --shard I/N"
    if auto_max is not None and lag_s >= LAG_GROW_BELOW_S:
        return f"the agent's event loop lags ({lag_s * 1000.0:.0f} ms): the host is saturated; {shard} on idle hosts"
    if auto_max is None:
        return f"raise probe.concurrency (or set it to auto), {shard}"
    if concurrency < auto_max:
        return f"probe.concurrency is auto and growing towards the need (at most {auto_max}); if it persists, {shard}"
    return f"auto concurrency is at probe.max_concurrency: raise it if the host has idle CPU, {shard}"


class Slots:
    """At most `limit` holders at once, like `asyncio.Semaphore`, but `resize` applies at once: a larger limit
    lets waiting probes in, a smaller one lets holders finish and admits no one until they are under it."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over as the waiter was cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._admit()

    def resize(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)


@dataclass(frozen=True, slots=True)
class Resize:
    """A change of the probe concurrency and what it was decided from (the `agent.concurrency_changed` fields)."""

    before: int
    after: int
    needed: int
    series: int
    mean_probe_s: float
    interval_s: float
    ceiling: int
    reason: str  # measured (the first sizing), slow_probes, skipped_probes, fast_probes, loop_lagging, lag_eased
    lag_s: float = 0.0  # the event loop's lag when decided


@dataclass
class ConcurrencySizer:
    """`probe.concurrency: auto`: the slots a round needs, from measured durations (pure; no clock, no I/O)."""

    ceiling: int
    limit: int = 0  # 0 until `start`
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_PROBES))
    low_rounds: int = 0
    sized: bool = False  # sized from measured durations at least once
    lag_capped: bool = False  # below the need because the loop lagged: grow back in small, spaced steps
    wait_rounds: int = 0

    def start(self) -> int:
        """Before any probe is measured: START_SLOTS (at most the ceiling)."""
        self.limit = min(self.ceiling, START_SLOTS)
        return self.limit

    def probe_took(self, seconds: float) -> None:
        self.durations.append(seconds)

    def mean_s(self) -> float:
        return sum(self.durations) / len(self.durations) if self.durations else 0.0

    def review(self, *, series: int, interval_s: float, skipped: int, lag_s: float = 0.0) -> Resize | None:
        """After a round: the new limit when the measured need (or the event loop's lag) calls for one, else None."""
        if not self.durations:
            return None
        if self.wait_rounds > 0:
            self.wait_rounds -= 1
            return None
        mean = self.mean_s()
        floor = min(self.ceiling, max(1, series))  # one slot per series: a short probe overlaps none of its own
        needed = min(self.ceiling, max(floor, needed_concurrency(series, mean, interval_s)))
        if not self.sized:
            self.sized = True
            new, reason = (self._capped(needed) if lag_s < LAG_GROW_BELOW_S else min(needed, self.limit)), "measured"
        elif lag_s > LAG_SHRINK_ABOVE_S:
            new, reason = self._lagging(needed)
        else:
            new, reason = self._next_limit(needed, skipped, lag_s < LAG_GROW_BELOW_S)
        if new == self.limit:
            return None
        change = Resize(self.limit, new, needed, series, mean, interval_s, self.ceiling, reason, lag_s)
        self.limit, self.low_rounds = new, 0
        return change

    def _lagging(self, needed: int) -> tuple[int, str]:
        """The loop lags: more probes in flight would measure the host, not the workers. Shrink, even below the
        need (skipped probes thin the evidence, which holds; inflated TTFTs would judge healthy workers slow)."""
        new = max(min(LAG_MIN_SLOTS, self.limit), int(self.limit * LAG_SHRINK))
        if new < self.limit:
            self.wait_rounds = LAG_WAIT_ROUNDS
            self.lag_capped = new < needed
        return new, "loop_lagging"

    def _next_limit(self, needed: int, skipped: int, may_grow: bool) -> tuple[int, str]:
        if needed > self.limit or (skipped and self.limit < self.ceiling):
            return self._grown(needed, skipped) if may_grow else (self.limit, "")
        self.lag_capped = False
        if skipped or needed >= self.limit * SHRINK_BELOW:
            self.low_rounds = 0
            return self.limit, ""
        self.low_rounds += 1
        if self.low_rounds < SHRINK_AFTER_ROUNDS:
            return self.limit, ""
        return needed, "fast_probes"

    def _grown(self, needed: int, skipped: int) -> tuple[int, str]:
        step = math.ceil(self.limit * GROW_STEP)
        if self.lag_capped:  # back towards the need in 10 % steps, LAG_WAIT_ROUNDS apart
            eased = min(self.ceiling, needed, step)
            if eased > self.limit:
                self.wait_rounds = LAG_WAIT_ROUNDS
                return eased, "lag_eased"
            self.lag_capped = False  # the need fell under the slots: the usual rules again
        if needed > self.limit:
            return self._capped(max(needed, step)), "slow_probes"
        return self._capped(math.ceil(self.limit * GROW_MAX)), "skipped_probes"

    def _capped(self, wanted: int) -> int:
        """A growth towards `wanted`, at most GROW_MAX at once and the ceiling; the next waits GROW_WAIT_ROUNDS."""
        if wanted <= self.limit:
            return wanted
        self.wait_rounds = GROW_WAIT_ROUNDS
        return min(self.ceiling, wanted, math.ceil(self.limit * GROW_MAX))


@dataclass
class ConcurrencyControl:
    """The agent's side of the sizing: applies `probe.concurrency` (fixed or auto) to the round's `Slots`, feeds
    the sizer the measured durations and logs each change (`agent.concurrency_changed`)."""

    region: str
    log: Any
    lag_s: Callable[[], float] = lambda: 0.0  # the event loop's recent lag (StallWatch.lag_s)
    sizer: ConcurrencySizer = field(default_factory=lambda: ConcurrencySizer(ceiling=1))
    clock: Callable[[], float] = time.monotonic
    _info_at: float | None = None  # when a change was last logged at INFO
    _quiet_changes: int = 0  # changes logged at DEBUG since then

    def probe_took(self, seconds: float) -> None:
        self.sizer.probe_took(seconds)

    def before_round(self, cfg: Any, slots: Slots, series: int) -> None:
        """Set the slots for a round of `series` probes (a reload may have changed the mode or the ceiling)."""
        if cfg.concurrency != "auto":
            if slots.limit != cfg.concurrency:
                slots.resize(cfg.concurrency)
            return
        sizer = self.sizer
        if sizer.ceiling != cfg.max_concurrency:
            sizer.ceiling = cfg.max_concurrency
            sizer.limit = min(sizer.limit, sizer.ceiling)
        if sizer.limit == 0:
            sizer.start()
        if slots.limit != sizer.limit:
            slots.resize(sizer.limit)

    def log_change(self, **fields: Any) -> None:
        """One `agent.concurrency_changed`: INFO for the first change in CHANGE_INFO_EVERY_S, DEBUG for the rest
        (under a CPU squeeze the lag rule adapts every few rounds; the gauge shows each step). `changes_at_debug`
        counts the quiet ones since the last INFO line."""
        now = self.clock()
        loud = self._info_at is None or now - self._info_at >= CHANGE_INFO_EVERY_S
        emit = self.log.info if loud else self.log.debug
        emit("agent.concurrency_changed", region=self.region, changes_at_debug=self._quiet_changes, **fields)
        if loud:
            self._info_at, self._quiet_changes = now, 0
        else:
            self._quiet_changes += 1

    def after_round(self, cfg: Any, slots: Slots, *, round_number: int, series: int, skipped: int) -> None:
        if cfg.concurrency != "auto":
            return
        change = self.sizer.review(series=series, interval_s=cfg.interval, skipped=skipped, lag_s=self.lag_s())
        if change is None:
            return
        slots.resize(change.after)
        self.log_change(
            round=round_number,
            concurrency_before=change.before,
            concurrency=change.after,
            needed_concurrency=change.needed,
            reason=change.reason,
            series=change.series,
            mean_probe_ms=round(change.mean_probe_s * 1000.0, 1),
            interval_s=change.interval_s,
            max_concurrency=change.ceiling,
            loop_lag_ms=round(change.lag_s * 1000.0, 1),
        )
