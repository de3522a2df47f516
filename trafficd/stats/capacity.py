"""Live load and headroom of workers and regions, in requests per second (pure maths; docs/capacity.md).

Per worker, from one scrape (`WorkerLoad`) and the completed-request counter's rate since the previous one:

    λ  = completed rate (req/s) over the last RATE_READINGS scrapes (the counter's increase ÷ the time between
         the first and the last; a counter that went down was reset and the window restarts there)
    N  = requests running now, N̄ their mean over the same scrapes, Q = requests waiting now
    μ  = λ / N̄, each busy slot's completion rate (Little's law: N̄ = λ·W, so μ = 1/W, W the mean request time);
         1 / capacity.request_time while the worker completes nothing or runs nothing (no measurement)
    C  = usable concurrency = min(target × limit, N × kv_target / kv_usage), whichever the worker publishes
         (KV usage grows with the requests it holds: at usage u with N running, kv_target is reached at N·kv_target/u;
         at or over kv_target it takes nothing more)
    load     = λ + max(0, growth of N + Q per second): the requests arriving, even while a slow worker falls behind
               (N·μ for a server without a completed counter; with one, nothing is stored before its second reading)
    headroom = max(0, C − N − Q) × μ   requests/s it can take before reaching its targets; None when neither a
               limit nor a KV usage is known

A region's figures are the sums over its workers, *live* only while every worker's figures are younger than
`capacity.max_age`; one stale worker makes the region `stale` (the planner then uses the declared
`capacity_headroom`: a stale region's load is unknown, and under-counting a source's load would overfill its
receivers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal

from trafficd.policy.capacity import Capacity

Source = Literal["live", "stale", "missing"]


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One worker's load and headroom at `at` (unix s, the agent's clock), as stored in Redis."""

    at: float
    running: float
    waiting: float
    limit: float | None
    kv_usage: float | None
    load_rps: float
    headroom_rps: float | None
    per_slot_rps: float

    def to_json(self) -> str:
        return json.dumps({k: _round(v) for k, v in asdict(self).items()}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerFigures | None:
        """None for anything that is not what `to_json` writes (another version, a hand edit)."""
        try:
            d = json.loads(raw)
            fig = cls(**{k: (None if d[k] is None else float(d[k])) for k in cls.__slots__})  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError):
            return None
        return fig if math.isfinite(fig.at) else None


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


@dataclass(frozen=True, slots=True)
class Reading:
    """One scrape's counter and running gauge, kept by the scraper for the rate window."""

    at: float
    completed: float
    running: float
    waiting: float = 0.0


RATE_READINGS = 6  # scrapes the rate and the mean concurrency are taken over (30 s at the default 5 s)


def window_rates(readings: list[Reading]) -> tuple[float | None, float | None, float]:
    """(λ, N̄, backlog growth) over the readings: completed requests/s from the counter's first to last reading,
    the mean running over them, and how fast the requests in flight (running + waiting) grew, per second. A
    counter that went down was reset: the window starts again at the reset."""
    for i in range(len(readings) - 1, 0, -1):
        if readings[i].completed < readings[i - 1].completed:
            readings = readings[i:]
            break
    if len(readings) < 2 or readings[-1].at <= readings[0].at:
        return None, None, 0.0
    span = readings[-1].at - readings[0].at
    rate = (readings[-1].completed - readings[0].completed) / span
    first, last = readings[0], readings[-1]
    growth = (last.running + last.waiting - first.running - first.waiting) / span
    return rate, sum(r.running for r in readings) / len(readings), growth


def usable_concurrency(running: float, limit: float | None, kv_usage: float | None, cfg: Capacity) -> float | None:
    """How many requests the worker may hold within both targets; None when it publishes neither bound."""
    bounds: list[float] = []
    if limit is not None:
        bounds.append(cfg.target * limit)
    if kv_usage is not None:
        if kv_usage >= cfg.kv_target:
            bounds.append(running)
        elif kv_usage > 0 and running > 0:
            bounds.append(running * cfg.kv_target / kv_usage)
    return min(bounds) if bounds else None


def worker_figures(
    running: float,
    waiting: float | None,
    limit: float | None,
    kv_usage: float | None,
    rate_rps: float | None,
    cfg: Capacity,
    at: float,
    mean_running: float | None = None,
    backlog_rps: float = 0.0,
) -> WorkerFigures:
    """Load and headroom of one worker (module docstring); `mean_running` is N̄ over the rate's window (default:
    the running gauge now), `backlog_rps` how fast its requests in flight grew (arrivals beyond completions)."""
    queued = waiting or 0.0
    busy = running if mean_running is None else mean_running
    measured = rate_rps is not None and rate_rps > 0 and busy > 0
    per_slot = rate_rps / busy if measured and rate_rps is not None else 1.0 / cfg.request_time
    load = rate_rps + max(0.0, backlog_rps) if rate_rps is not None else running * per_slot
    cap = usable_concurrency(running, limit, kv_usage, cfg)
    headroom = None if cap is None else max(0.0, cap - running - queued) * per_slot
    return WorkerFigures(at, running, queued, limit, kv_usage, load, headroom, per_slot)


@dataclass(frozen=True, slots=True)
class RegionCapacity:
    """A region's live figures (None unless `source` is live) and the age of its oldest worker figures."""

    source: Source
    load_rps: float | None = None
    headroom_rps: float | None = None
    age_s: float | None = None
    workers: int = 0
    stale_workers: tuple[str, ...] = ()
    kv_usage: float | None = None  # the fullest worker's


def region_capacity(
    figures: Mapping[str, WorkerFigures], now: float, max_age_s: float, queried: WorkerFigures | None = None
) -> RegionCapacity:
    """Sum a region's workers; `stale` when any worker's figures are older than `max_age_s`. A fresh `queried`
    load (capacity.load_query) replaces the workers' sum, and keeps the load live while their figures are not."""
    fresh_query = queried if queried is not None and now - queried.at <= max_age_s else None
    cap = _workers_capacity(figures, now, max_age_s)
    if fresh_query is None:
        return cap
    if cap.source != "live":
        age = max(0.0, now - fresh_query.at)
        return RegionCapacity("live", fresh_query.load_rps, None, age, cap.workers, cap.stale_workers)
    return replace(cap, load_rps=fresh_query.load_rps)


def _workers_capacity(figures: Mapping[str, WorkerFigures], now: float, max_age_s: float) -> RegionCapacity:
    if not figures:
        return RegionCapacity("missing")
    ages = {w: max(0.0, now - f.at) for w, f in figures.items()}
    oldest = max(ages.values())
    stale = tuple(sorted(w for w, a in ages.items() if a > max_age_s))
    if stale:
        return RegionCapacity("stale", age_s=oldest, workers=len(figures), stale_workers=stale)
    rooms = [f.headroom_rps for f in figures.values()]
    kvs = [f.kv_usage for f in figures.values() if f.kv_usage is not None]
    return RegionCapacity(
        "live",
        load_rps=sum(f.load_rps for f in figures.values()),
        headroom_rps=None if any(h is None for h in rooms) else sum(h or 0.0 for h in rooms),
        age_s=oldest,
        workers=len(figures),
        kv_usage=max(kvs) if kvs else None,
    )
