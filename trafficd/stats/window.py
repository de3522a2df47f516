"""Incremental window bookkeeping for one region (pure: no Redis, `now` passed in).

The controller holds the region totals of the slices of the longest window in memory. Each evaluation it reads the
region's slice index (slice id → number of samples written into it) and `plan()` says which slices changed and must
be fetched; every other slice is served from memory. On start the memory is empty, so the first plan fetches the
whole long window: the rebuild is the same code path.

Clock skew (see docs/stats.md): samples are stamped by the agent's clock and placed in the slice of their
completion time. A write observed by the controller is accepted only if its slice lies within `skew_s` of the
controller's clock *when the write was observed*:
- a slice first seen starting more than `skew_s` in the future is rejected for good (its samples never count,
  even once the clock reaches it), and every sample written into it is counted as rejected;
- samples arriving in a slice that ended more than `skew_s` before the previous evaluation (a clock behind, or a
  late flush) are counted as rejected and not fetched.
The decision is made per slice, so its resolution is one slice length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from trafficd import keys
from trafficd.model import RegionEvidence, SliceCounts
from trafficd.policy.schema import Policy
from trafficd.stats.sketch import Sketch, merge

QUANTILES = (0.5, 0.9, 0.99, 0.999)


def slice_of(t: float, slice_s: float) -> int:
    return math.floor(t / slice_s)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    slice_s: float
    trip_s: float
    long_s: float
    skew_s: float

    def slices(self, span_s: float) -> int:
        """How many slices (the current one included) make a window of `span_s`."""
        return max(1, math.ceil(span_s / self.slice_s - 1e-9))

    def span_ids(self, now: float, span_s: float) -> range:
        """Slice ids of the window ending now: the last `slices(span_s)` slices, plus future ones within skew."""
        cur = slice_of(now, self.slice_s)
        return range(cur - self.slices(span_s) + 1, slice_of(now + self.skew_s, self.slice_s) + 1)

    def keep_ids(self, now: float) -> range:
        return self.span_ids(now, max(self.trip_s, self.long_s))


@dataclass(frozen=True, slots=True)
class SliceFetch:
    fetch: tuple[int, ...]  # slice ids whose content must be (re)read
    rejected: int  # samples newly rejected for clock skew at this evaluation (future + late)
    rejected_future: int  # stamped in a slice that started more than skew_s ahead of the clock
    rejected_late: int  # arrived in a slice that ended more than skew_s before the previous evaluation
    rejected_offsets_s: tuple[float, ...]  # start of each rejecting slice relative to now (s)
    seen: dict[int, int] = field(default_factory=dict)  # index counts to remember once committed
    newly_rejected_ids: frozenset[int] = frozenset()


@dataclass(slots=True)
class RegionWindow:
    """The in-memory slices of one region and the clock-skew accounting."""

    region: str
    spec: WindowSpec
    slices: dict[int, Sketch] = field(default_factory=dict)  # region totals of accepted slices (long window)
    seen: dict[int, int] = field(default_factory=dict)  # slice id → samples the index reported last time
    rejected_ids: set[int] = field(default_factory=set)  # first seen too far ahead: never counted
    rejected_total: int = 0
    prev_now: float | None = None
    counts: dict[int, SliceCounts] = field(default_factory=dict)  # the judge's exact counts of each slice

    def plan(self, index: Mapping[int, int], now: float) -> SliceFetch:
        """Compare the index with what was seen; decide what to fetch and what to reject (changes nothing)."""
        spec = self.spec
        keep = spec.keep_ids(now)
        newest_ok = slice_of(now + spec.skew_s, spec.slice_s)
        late_before = None if self.prev_now is None else self.prev_now - spec.skew_s
        fetch: list[int] = []
        seen_now: dict[int, int] = {}
        new_rejected: set[int] = set()
        future = late = 0
        offsets: list[float] = []
        for sid, count in index.items():
            seen = self.seen.get(sid, 0)
            if count == seen:
                continue
            seen_now[sid] = count
            growth = max(0, count - seen)
            start_s = sid * spec.slice_s
            if sid > newest_ok and sid not in self.slices:
                new_rejected.add(sid)
            if sid in self.rejected_ids or sid in new_rejected:
                future += growth
            elif late_before is not None and start_s + spec.slice_s < late_before:
                late += growth
            elif sid >= keep.start:
                fetch.append(sid)
                continue
            else:
                continue  # on start: older than the longest window, not needed
            if growth:
                offsets.append(round(start_s - now, 3))
        return SliceFetch(
            tuple(sorted(fetch)), future + late, future, late, tuple(sorted(offsets)), seen_now, frozenset(new_rejected)
        )

    def commit(self, plan: SliceFetch, fetched: Mapping[int, Sketch], now: float) -> None:
        """Apply a plan once its slices were read: nothing changes if the read failed, so nothing is lost."""
        self.seen.update(plan.seen)
        self.rejected_ids |= plan.newly_rejected_ids
        self.rejected_total += plan.rejected
        self.slices.update(fetched)
        self.counts.update((sid, slice_counts(sid, sk)) for sid, sk in fetched.items())
        first = self.spec.keep_ids(now).start
        for sid in [s for s in self.slices if s < first]:
            del self.slices[sid]
            self.counts.pop(sid, None)
        horizon = first - 2 * keys.EPOCH_SLICES  # older than any index key still read
        self.seen = {s: c for s, c in self.seen.items() if s >= horizon}
        self.rejected_ids = {s for s in self.rejected_ids if s >= horizon}
        self.prev_now = now

    def window(self, now: float, span_s: float) -> Sketch:
        """The region's exact merge over the window of `span_s` ending now."""
        return merge(self.slices[sid] for sid in self.spec.span_ids(now, span_s) if sid in self.slices)

    def slice_counts(self, now: float) -> tuple[SliceCounts, ...]:
        """Exact counts of every accepted slice of the longest window, oldest first (the judge consumes each once)."""
        keep = self.spec.keep_ids(now)
        return tuple(self.counts[sid] for sid in sorted(self.counts) if sid in keep)

    def accepted_ids(self, now: float, span_s: float) -> list[int]:
        """Accepted slices of the window (the ones whose per-series detail is worth reading)."""
        return [sid for sid in self.spec.span_ids(now, span_s) if sid in self.slices]


def region_evidence(
    policy: Policy,
    win: RegionWindow,
    now: float,
    newest_age: float | None,
    heartbeat_age: float | None,
    recent: list[bool] | None = None,
) -> RegionEvidence:
    """The judge's evidence for one region: the accepted slices' exact counts plus trip-window statistics.
    Used by the controller's view of Redis and by `trafficd simulate --samples` alike."""
    w = policy.windows
    sk = win.window(now, w.trip)
    n = sk.n
    p50, p90, p99, p999 = sk.quantiles("total", (0.5, 0.9, 0.99, 0.999))
    stale = newest_age is None or newest_age > w.stale_after or heartbeat_age is None or heartbeat_age > w.stale_after
    return RegionEvidence(
        region=win.region,
        n=n,
        errors=min(sk.errors, n),  # a window's edge may hold an error whose probe counted n before it
        over_slo_fraction=sk.over_fraction("total"),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        ttft_n=n,
        ttft_over_slo_fraction=sk.over_fraction("ttft") if policy.ttft_threshold_ms else 0.0,
        ttft_p99_ms=sk.quantile("ttft", 0.99),
        recent_over=sum(recent or ()),
        recent_n=len(recent or ()),
        newest_sample_age_s=newest_age,
        heartbeat_age_s=heartbeat_age,
        stale=stale,
        slices=win.slice_counts(now),
    )


def slice_counts(sid: int, sk: Sketch) -> SliceCounts:
    return SliceCounts(sid, sk.n, sk.over("total"), sk.errors, sk.over("ttft"))


def merge_series(slices: Iterable[Mapping[str, bytes | None]]) -> dict[str, Sketch]:
    """Per `worker|model` merges of raw series slices (as read from Redis) over a window."""
    out: dict[str, list[Sketch]] = {}
    for content in slices:
        for series, raw in content.items():
            if raw:
                out.setdefault(series, []).append(Sketch.from_redis(raw))
    return {s: merge(parts) for s, parts in out.items()}


# ---------------------------------------------------------------- statistics of a window (for humans and the judge)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of one merge over one window. Fractions over the SLO are exact; percentiles are ±1 %."""

    window_s: float
    n: int
    errors: int
    error_rate: float
    over_slo_fraction: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    ttft_over_slo_fraction: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None


def window_stats(sketch: Sketch, window_s: float) -> WindowStats:
    n = sketch.n
    p50, p90, p99, p999 = sketch.quantiles("total", QUANTILES)
    t50, _, t99, _ = sketch.quantiles("ttft", QUANTILES)
    return WindowStats(
        window_s=window_s,
        n=n,
        errors=sketch.errors,
        error_rate=sketch.error_rate(),
        over_slo_fraction=sketch.over_fraction("total"),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        ttft_over_slo_fraction=sketch.over_fraction("ttft"),
        ttft_p50_ms=t50,
        ttft_p99_ms=t99,
    )


def group(per_series: Mapping[str, Sketch], by: Literal["worker", "model"]) -> dict[str, Sketch]:
    """Merge `worker|model` sketches per worker (`by="worker"`) or per model (`by="model"`)."""
    out: dict[str, list[Sketch]] = {}
    for series, sk in per_series.items():
        worker, model = keys.split_series(series)
        out.setdefault(worker if by == "worker" else model, []).append(sk)
    return {k: merge(v) for k, v in out.items()}
