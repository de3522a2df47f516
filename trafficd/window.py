"""Incremental window bookkeeping for one region (pure: no Redis, `now` passed in).

The controller holds the slices of the longest window in memory. Each evaluation it reads the region's slice
index (slice id → number of samples written into it) and `plan()` says which slices changed and must be fetched;
every other slice is served from memory. On start the memory is empty, so the first plan fetches the whole long
window: the rebuild is the same code path.

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
from trafficd.sketch import Sketch

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
class Plan:
    fetch: tuple[int, ...]  # slice ids whose content must be (re)read
    rejected: int  # samples newly rejected for clock skew at this evaluation (future + late)
    rejected_future: int  # stamped in a slice that started more than skew_s ahead of the clock
    rejected_late: int  # arrived in a slice that ended more than skew_s before the previous evaluation
    rejected_offsets_s: tuple[float, ...]  # start of each rejecting slice relative to now (s)


@dataclass(slots=True)
class _Slice:
    seen: int = 0  # samples the index reported when we last looked
    rejected: bool = False  # first seen too far in the future: never counted
    series: dict[str, bytes] = field(default_factory=dict)  # raw slice words per series, as read
    total: Sketch = field(default_factory=Sketch)  # exact merge of the series


@dataclass(slots=True)
class RegionWindow:
    """The in-memory slices of one region and the clock-skew accounting."""

    region: str
    spec: WindowSpec
    slices: dict[int, _Slice] = field(default_factory=dict)
    rejected_total: int = 0
    prev_now: float | None = None

    def plan(self, index: Mapping[int, int], now: float) -> Plan:
        """Compare the index with what is held; decide what to fetch and what to reject."""
        spec = self.spec
        keep = spec.keep_ids(now)
        newest_ok = slice_of(now + spec.skew_s, spec.slice_s)
        late_before = None if self.prev_now is None else self.prev_now - spec.skew_s
        fetch: list[int] = []
        future = late = 0
        offsets: list[float] = []
        for sid, count in index.items():
            held = self.slices.get(sid)
            seen = held.seen if held else 0
            if count == seen:
                continue
            growth = max(0, count - seen)
            start_s = sid * spec.slice_s
            end_s = start_s + spec.slice_s
            too_new = sid > newest_ok
            too_late = late_before is not None and end_s < late_before
            if (held is not None and held.rejected) or too_new or too_late:
                if growth:
                    if too_late:
                        late += growth
                    else:
                        future += growth
                    offsets.append(round(start_s - now, 3))
                if too_new and held is None:
                    self.slices[sid] = _Slice(seen=count, rejected=True)
                elif held is not None:
                    held.seen = count
                continue
            if sid < keep.start:
                continue  # older than the longest window (rebuild): not needed
            if held is None:
                held = self.slices[sid] = _Slice()
            held.seen = count
            fetch.append(sid)
        self.rejected_total += future + late
        return Plan(tuple(sorted(fetch)), future + late, future, late, tuple(sorted(offsets)))

    def apply(self, sid: int, content: Mapping[str, bytes | None]) -> None:
        """Replace a slice's content with what was just read (every series of the region)."""
        held = self.slices.setdefault(sid, _Slice())
        held.series = {s: raw for s, raw in content.items() if raw}
        total = 0
        for raw in held.series.values():
            total += Sketch.from_redis(raw).packed
        held.total = Sketch(total)

    def advance(self, now: float) -> None:
        """Forget slices older than the longest window; remember `now` for the late-arrival rule."""
        first = self.spec.keep_ids(now).start
        for sid in [s for s in self.slices if s < first]:
            del self.slices[sid]
        self.prev_now = now

    def window(self, now: float, span_s: float) -> Sketch:
        """The region's exact merge over the window of `span_s` ending now."""
        total = 0
        for sid in self.spec.span_ids(now, span_s):
            held = self.slices.get(sid)
            if held is not None and not held.rejected:
                total += held.total.packed
        return Sketch(total)

    def by_series(self, now: float, span_s: float) -> dict[str, Sketch]:
        """Per `worker|model` merges over the window of `span_s` ending now."""
        out: dict[str, int] = {}
        for sid in self.spec.span_ids(now, span_s):
            held = self.slices.get(sid)
            if held is None or held.rejected:
                continue
            for series, raw in held.series.items():
                out[series] = out.get(series, 0) + Sketch.from_redis(raw).packed
        return {s: Sketch(p) for s, p in out.items()}


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
        error_rate=sketch.errors / n if n else 0.0,
        over_slo_fraction=sketch.over_fraction("total"),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        ttft_over_slo_fraction=sketch.over_fraction("ttft"),
        ttft_p50_ms=t50,
        ttft_p99_ms=t99,
    )


def merge(sketches: Iterable[Sketch]) -> Sketch:
    return Sketch(sum(s.packed for s in sketches))


def group(per_series: Mapping[str, Sketch], by: Literal["worker", "model"]) -> dict[str, Sketch]:
    """Merge `worker|model` sketches per worker (`by="worker"`) or per model (`by="model"`)."""
    out: dict[str, int] = {}
    for series, sk in per_series.items():
        worker, model = keys.split_series(series)
        name = worker if by == "worker" else model
        out[name] = out.get(name, 0) + sk.packed
    return {k: Sketch(v) for k, v in out.items()}
