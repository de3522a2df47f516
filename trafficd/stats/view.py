"""`StatsView`: the controller's view of the store, window totals kept in memory, only changed slices fetched.

`evidence(now)` gives one `RegionEvidence` per policy region over `windows.trip` (every region `unreadable` when
Redis cannot be read); `detail(now)` gives per region, worker, model and worker × model statistics over the trip
and the long window for `trafficd status`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from trafficd import keys
from trafficd.model import RegionEvidence
from trafficd.policy.schema import Policy
from trafficd.runtime.logs import get_logger
from trafficd.stats import sketch
from trafficd.stats.client import TRANSIENT, error_text, recent_m
from trafficd.stats.window import (
    RegionWindow,
    SliceFetch,
    WindowSpec,
    WindowStats,
    group,
    merge_series,
    region_evidence,
    window_stats,
)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One worker, model or worker × model of a region, over both windows."""

    trip: WindowStats
    long: WindowStats


@dataclass(frozen=True, slots=True)
class RegionDetail:
    """Everything `trafficd status` shows about a region. Empty groups and None ages when unreadable."""

    region: str
    unreadable: bool
    trip: WindowStats | None
    long: WindowStats | None
    workers: dict[str, GroupStats]
    models: dict[str, GroupStats]
    series: dict[str, GroupStats]  # keyed `worker|model`
    newest_sample_age_s: float | None
    heartbeat_age_s: float | None
    agents_heartbeat_age_s: dict[str, float]
    series_newest_age_s: dict[str, float]  # negative: that agent's clock is ahead
    rejected_clock_skew_total: int


@dataclass(frozen=True, slots=True)
class _Extras:
    newest: dict[str, float]
    recent: list[tuple[bool, float]]
    heartbeats: dict[str, float]


def _floats(raw: dict[bytes, bytes]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in raw.items():
        try:
            out[k.decode()] = float(v)
        except ValueError:
            continue
    return out


def _recent(raw: list[bytes]) -> list[tuple[bool, float]]:
    out: list[tuple[bool, float]] = []
    for item in raw:
        flag, _, stamp = item.partition(b":")
        try:
            out.append((flag == b"1", float(stamp)))
        except ValueError:
            continue
    return out


def _age(now: float, stamps: Sequence[float], skew_s: float) -> float | None:
    usable = [t for t in stamps if t <= now + skew_s]
    return max(0.0, now - max(usable)) if usable else None


class StatsView:
    """The controller's view: window totals kept in memory, only changed slices fetched (see window.py)."""

    def __init__(self, client: aioredis.Redis, policy: Policy) -> None:
        self.client, self.policy = client, policy
        w = policy.windows
        self.spec = WindowSpec(slice_s=w.slice, trip_s=w.trip, long_s=w.long, skew_s=w.max_clock_skew)
        self.prefix, self.service = policy.redis.key_prefix, policy.service
        self.regions = {r: RegionWindow(r, self.spec) for r in policy.region_names}
        self.extras: dict[str, _Extras] = {}
        self.series: dict[str, list[str]] = {}  # active `worker|model` series per region
        self.rebuilt = False
        self._down = False  # inside a Redis outage (logged once)
        self.last_fetch_count = 0
        self.log = get_logger("store")

    async def evidence(self, now: float) -> dict[str, RegionEvidence]:
        """One `RegionEvidence` per policy region over `windows.trip`; all unreadable when Redis fails."""
        if not await self.refresh(now):
            return {r: RegionEvidence(region=r, n=0, unreadable=True) for r in self.regions}
        return {r: self._evidence(r, now) for r in self.regions}

    async def detail(self, now: float) -> dict[str, RegionDetail]:
        """Per region, worker, model and worker × model statistics over the trip and long windows."""
        if not await self.refresh(now):
            return {r: _unreadable_detail(r) for r in self.regions}
        try:
            raw = await self._read_series(now)
        except TRANSIENT as exc:
            self._unavailable(exc)
            return {r: _unreadable_detail(r) for r in self.regions}
        return {r: self._detail(r, now, raw[r]) for r in self.regions}

    def _unavailable(self, exc: BaseException) -> None:
        """One warning per outage (each evaluation during it at DEBUG); `store.redis_recovered` ends it."""
        (self.log.debug if self._down else self.log.warning)(
            "store.redis_unavailable", role="reader", error=error_text(exc)
        )
        self._down = True

    async def refresh(self, now: float) -> bool:
        """Read the index and the changed slices; False (logged) when Redis cannot be read."""
        started = time.perf_counter()
        try:
            fetched = await self._refresh(now)
        except TRANSIENT as exc:
            self._unavailable(exc)
            return False
        if self._down:
            self._down = False
            self.log.info("store.redis_recovered", role="reader")
        if not self.rebuilt:
            self.rebuilt = True
            self.log.info(
                "store.window_rebuilt",
                regions=len(self.regions),
                slices_fetched=fetched,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return True

    async def _refresh(self, now: float) -> int:
        keep = self.spec.keep_ids(now)
        first_epoch = keys.epoch_of(keep.start)
        last_epoch = keys.epoch_of(keep.stop - 1) + 1  # one epoch ahead: counts moderately future stamps
        epochs = range(first_epoch, last_epoch + 1)
        m = recent_m(self.policy)
        pipe = self.client.pipeline(transaction=False)
        for region in self.regions:  # index first, then the series list (the writer's order reversed)
            for e in epochs:
                pipe.hgetall(keys.index_key(self.prefix, self.service, region, e))
            pipe.hgetall(keys.newest_key(self.prefix, self.service, region))
            pipe.lrange(keys.recent_key(self.prefix, self.service, region), 0, m - 1)
            pipe.hgetall(keys.heartbeat_key(self.prefix, self.service, region))
        replies = await pipe.execute()
        per_region = len(epochs) + 3
        wanted: list[tuple[str, int]] = []
        plans: dict[str, SliceFetch] = {}
        oldest_useful = keep.start * self.spec.slice_s - self.spec.skew_s
        for i, (region, win) in enumerate(self.regions.items()):
            part = replies[i * per_region : (i + 1) * per_region]
            index: dict[int, int] = {}
            for h in part[: len(epochs)]:
                for k, v in h.items():
                    index[int(k)] = int(v)
            newest = _floats(part[-3])
            self.extras[region] = _Extras(newest, _recent(part[-2]), _floats(part[-1]))
            self.series[region] = sorted(s for s, t in newest.items() if t >= oldest_useful)
            plans[region] = win.plan(index, now)
            wanted.extend((region, sid) for sid in plans[region].fetch)
        fetched: dict[str, dict[int, sketch.Sketch]] = {r: {} for r in self.regions}
        if wanted:
            pipe = self.client.pipeline(transaction=False)
            for region, sid in wanted:
                pipe.get(keys.region_slice_key(self.prefix, self.service, region, sid))
            for (region, sid), raw in zip(wanted, await pipe.execute(), strict=True):
                fetched[region][sid] = sketch.Sketch.from_aggregate(raw)
                if raw and sketch.aggregate_saturated(raw):
                    self.log.warning("store.histogram_saturated", region=region, slice_start_s=sid * self.spec.slice_s)
        for region, win in self.regions.items():
            win.commit(plans[region], fetched[region], now)
            self._log_rejections(region, plans[region], now)
        self.last_fetch_count = len(wanted)
        return len(wanted)

    def _log_rejections(self, region: str, plan: SliceFetch, now: float) -> None:
        """Log rejected samples, and series whose clock runs ahead even when their slices are beyond the index
        range read (an agent a day ahead writes where no window looks: its samples are never counted)."""
        skew = self.spec.skew_s
        ahead = {s: round(t - now, 3) for s, t in self.extras[region].newest.items() if t > now + skew}
        if not plan.rejected and not ahead:
            return
        self.log.warning(
            "store.samples_rejected_clock_skew",
            region=region,
            rejected=plan.rejected,
            rejected_future=plan.rejected_future,
            rejected_late=plan.rejected_late,
            rejected_total=self.regions[region].rejected_total,
            slice_offsets_s=list(plan.rejected_offsets_s),
            series_ahead_s=ahead,
            max_clock_skew_s=skew,
        )

    async def _read_series(self, now: float) -> dict[str, dict[int, dict[str, bytes | None]]]:
        """Per region, the raw per-series slices of the accepted slices of the long window (for `detail`)."""
        long_s = max(self.policy.windows.trip, self.policy.windows.long)
        wanted = [
            (region, sid, self.series[region])
            for region, win in self.regions.items()
            if self.series.get(region)
            for sid in win.accepted_ids(now, long_s)
        ]
        out: dict[str, dict[int, dict[str, bytes | None]]] = {r: {} for r in self.regions}
        if not wanted:
            return out
        pipe = self.client.pipeline(transaction=False)
        for region, sid, series in wanted:  # one MGET per region slice: its keys share a hash slot
            pipe.mget([keys.slice_key(self.prefix, self.service, region, sid, s) for s in series])
        for (region, sid, series), raws in zip(wanted, await pipe.execute(), strict=True):
            out[region][sid] = dict(zip(series, raws, strict=True))
        return out

    def _evidence(self, region: str, now: float) -> RegionEvidence:
        win, ex, w = self.regions[region], self.extras[region], self.policy.windows
        recent = [over for over, t in ex.recent if now - w.trip <= t <= now + w.max_clock_skew]
        newest_age = _age(now, list(ex.newest.values()), w.max_clock_skew)
        hb_age = _age(now, list(ex.heartbeats.values()), w.max_clock_skew)
        return region_evidence(self.policy, win, now, newest_age, hb_age, recent)

    def _detail(self, region: str, now: float, raw: dict[int, dict[str, bytes | None]]) -> RegionDetail:
        win, ex, w = self.regions[region], self.extras[region], self.policy.windows
        trip_series = merge_series(raw[sid] for sid in win.accepted_ids(now, w.trip) if sid in raw)
        long_series = merge_series(raw[sid] for sid in win.accepted_ids(now, w.long) if sid in raw)

        def groups(trip: dict[str, sketch.Sketch], long: dict[str, sketch.Sketch]) -> dict[str, GroupStats]:
            empty = sketch.Sketch()
            return {
                name: GroupStats(
                    window_stats(trip.get(name, empty), w.trip), window_stats(long.get(name, empty), w.long)
                )
                for name in sorted(set(trip) | set(long))
            }

        return RegionDetail(
            region=region,
            unreadable=False,
            trip=window_stats(win.window(now, w.trip), w.trip),
            long=window_stats(win.window(now, w.long), w.long),
            workers=groups(group(trip_series, "worker"), group(long_series, "worker")),
            models=groups(group(trip_series, "model"), group(long_series, "model")),
            series=groups(trip_series, long_series),
            newest_sample_age_s=_age(now, list(ex.newest.values()), w.max_clock_skew),
            heartbeat_age_s=_age(now, list(ex.heartbeats.values()), w.max_clock_skew),
            agents_heartbeat_age_s={a: round(now - t, 3) for a, t in sorted(ex.heartbeats.items())},
            series_newest_age_s={s: round(now - t, 3) for s, t in sorted(ex.newest.items())},
            rejected_clock_skew_total=win.rejected_total,
        )


def _unreadable_detail(region: str) -> RegionDetail:
    return RegionDetail(region, True, None, None, {}, {}, {}, None, None, {}, {}, 0)
