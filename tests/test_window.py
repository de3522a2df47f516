"""Incremental window bookkeeping (pure): what is fetched, what is rejected for clock skew, what a window sums."""

from __future__ import annotations

from trafficd import keys
from trafficd.model import Sample
from trafficd.stats import sketch
from trafficd.stats.window import RegionWindow, SliceFetch, WindowSpec, group, merge_series, slice_of, window_stats

SPEC = WindowSpec(slice_s=10.0, trip_s=60.0, long_s=300.0, skew_s=30.0)
NOW = 1_000_000.0  # slice 100000 starts here


def _sk(raw: bytes) -> sketch.Sketch:
    return sketch.Sketch.from_redis(raw)


def step(win: RegionWindow, index: dict[int, int], now: float, per_slice: int = 1) -> SliceFetch:
    """One evaluation: plan, read every planned slice (`per_slice` samples each), commit."""
    plan = win.plan(index, now)
    win.commit(plan, {sid: _sk(_raw(per_slice)) for sid in plan.fetch}, now)
    return plan


def _raw(n: int, total_ms: float = 100.0, ok: bool = True) -> bytes:
    samples = [Sample("r", "w", "m", 0.0, ok, None if ok else "http_5xx", total_ms)] * n
    return sketch.encode_be(sketch.increments(samples, 3000.0, None))


def test_first_plan_fetches_the_whole_long_window_and_the_next_only_changes() -> None:
    """On start every slice of the long window is fetched (rebuild); afterwards only slices whose count changed."""
    win = RegionWindow("r", SPEC)
    cur = slice_of(NOW, SPEC.slice_s)
    index = {cur - i: 5 for i in range(40)}  # 40 slices, the oldest beyond the 5-min window
    plan = step(win, index, NOW, per_slice=5)
    assert plan.fetch == tuple(range(cur - 29, cur + 1))
    assert plan.rejected == 0
    index[cur] = 7
    index[cur + 1] = 2
    assert step(win, index, NOW + 10).fetch == (cur, cur + 1)
    assert step(win, index, NOW + 10).fetch == ()


def test_a_plan_whose_read_failed_changes_nothing() -> None:
    """Planning alone does not mark slices as seen: after a failed read the next plan fetches them again."""
    win = RegionWindow("r", SPEC)
    cur = slice_of(NOW, SPEC.slice_s)
    first = win.plan({cur: 3}, NOW)  # the read of this plan fails: no commit
    assert win.plan({cur: 3}, NOW).fetch == first.fetch == (cur,)
    assert win.rejected_total == 0 and not win.slices


def test_window_sums_exactly_the_slices_in_its_span() -> None:
    """The trip window sums the last trip/slice slices (current included); the long window all 30."""
    win = RegionWindow("r", SPEC)
    cur = slice_of(NOW, SPEC.slice_s)
    plan = win.plan({cur - i: 1 + i for i in range(30)}, NOW)
    win.commit(plan, {cur - i: _sk(_raw(1 + i)) for i in range(30)}, NOW)
    assert win.window(NOW, SPEC.trip_s).n == sum(1 + i for i in range(6))
    assert win.window(NOW, SPEC.long_s).n == sum(1 + i for i in range(30))


def test_old_slices_are_forgotten_as_time_passes() -> None:
    """After the clock moves a slice past the long window, it is dropped and no longer counted."""
    win = RegionWindow("r", SPEC)
    cur = slice_of(NOW, SPEC.slice_s)
    step(win, {cur: 3}, NOW, per_slice=3)
    assert win.window(NOW, SPEC.long_s).n == 3
    later = NOW + SPEC.long_s + SPEC.slice_s
    step(win, {cur: 3}, later)
    assert cur not in win.slices
    assert win.window(later, SPEC.long_s).n == 0


def test_slice_far_in_the_future_is_rejected_counted_and_never_accepted() -> None:
    """Samples stamped beyond max_clock_skew ahead are counted as rejected, even once the clock reaches them."""
    win = RegionWindow("r", SPEC)
    ahead = slice_of(NOW + 60, SPEC.slice_s)
    plan = step(win, {ahead: 4}, NOW)
    assert (plan.fetch, plan.rejected, plan.rejected_future) == ((), 4, 4)
    plan = step(win, {ahead: 6}, NOW + 60)  # the clock caught up; the slice stays rejected
    assert (plan.fetch, plan.rejected) == ((), 2)
    assert win.rejected_total == 6
    assert win.window(NOW + 60, SPEC.trip_s).n == 0


def test_slice_within_skew_ahead_is_accepted() -> None:
    """Samples stamped less than max_clock_skew ahead of the controller's clock count in the window."""
    win = RegionWindow("r", SPEC)
    ahead = slice_of(NOW + 20, SPEC.slice_s)
    plan = step(win, {ahead: 4}, NOW, per_slice=4)
    assert plan.fetch == (ahead,)
    assert win.window(NOW, SPEC.trip_s).n == 4


def test_late_arrivals_in_an_old_slice_are_rejected_and_counted() -> None:
    """Samples arriving in a slice that ended more than max_clock_skew before the last look are not fetched."""
    win = RegionWindow("r", SPEC)
    old = slice_of(NOW - 120, SPEC.slice_s)
    plan = step(win, {old: 3}, NOW, per_slice=3)  # on start: accepted, part of the rebuilt window
    assert plan.fetch == (old,)
    plan = step(win, {old: 8}, NOW + 10)
    assert (plan.fetch, plan.rejected, plan.rejected_late) == ((), 5, 5)
    assert win.window(NOW + 10, SPEC.long_s).n == 3


def test_group_merges_series_per_worker_and_per_model() -> None:
    """Per-worker and per-model figures are exact merges of the worker × model series over the slices."""
    per_series = merge_series(
        [
            {keys.series_id("a", "m1"): _raw(1), keys.series_id("a", "m2"): _raw(3, ok=False)},
            {keys.series_id("a", "m1"): _raw(1), keys.series_id("b", "m1"): _raw(5, total_ms=4000)},
            {keys.series_id("b", "m2"): None},
        ]
    )
    assert set(per_series) == {"a|m1", "a|m2", "b|m1"}
    workers, models = group(per_series, "worker"), group(per_series, "model")
    assert {k: v.n for k, v in workers.items()} == {"a": 5, "b": 5}
    assert {k: v.n for k, v in models.items()} == {"m1": 7, "m2": 3}
    stats = window_stats(models["m1"], 60.0)
    assert (stats.n, stats.over_slo_fraction, stats.error_rate) == (7, 5 / 7, 0.0)
    assert window_stats(workers["a"], 60.0).error_rate == 3 / 5


def test_slices_that_aged_out_of_the_window_are_not_counted_as_rejected() -> None:
    """Index entries of slices older than the long window are remembered, not re-counted as late each time."""
    win = RegionWindow("r", SPEC)
    cur = slice_of(NOW, SPEC.slice_s)
    index = {cur - i: 2 for i in range(45)}
    for k in range(20):
        now = NOW + k * SPEC.slice_s
        index[cur + k] = 2
        assert step(win, index, now, per_slice=2).rejected == 0
        assert win.window(now, SPEC.long_s).n == 2 * 30
