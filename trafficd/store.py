"""Redis adapter of the statistics: `SampleSink` (agents write), `StatsView` (controller reads), `redis_client`.

Layout and reasoning in docs/stats.md; key names in keys.py; the histogram in sketch.py; the incremental window
bookkeeping in window.py. Redis errors never reach the callers: the sink buffers (bounded, oldest dropped first)
and retries with capped jittered backoff; the view reports every region `unreadable` (the judge holds).
The client returns bytes (`decode_responses=False`): slices are binary BITFIELD strings.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from trafficd import keys, sketch
from trafficd.logs import get_logger
from trafficd.model import RegionEvidence, Sample
from trafficd.policy import Policy, Redis
from trafficd.window import RegionWindow, WindowSpec, WindowStats, group, merge_series, slice_of, window_stats

# What a broken or unreachable Redis raises through redis-py (connection refused/reset, timeouts, LOADING, ...).
TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)


class StoreConfigError(Exception):
    """The Redis settings cannot be used (e.g. the password file is unreadable). Never carries the secret."""


def _password(cfg: Redis) -> str | None:
    if cfg.password_env:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise StoreConfigError(f"redis.password_env names {cfg.password_env}, which is not set")
        return value
    if cfg.password_file:
        path = Path(cfg.password_file)
        if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
            path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StoreConfigError(f"cannot read redis.password_file {path}: {exc.strerror}") from None
    return None


def redis_client(cfg: Redis, *, timeout_s: float = 2.0) -> aioredis.Redis:
    """An asyncio client for `cfg.url` (`redis://` or `rediss://`), password from env/file, CA from tls_ca_file.

    One quick retry for a dropped connection; the callers do the real, backed-off retrying.
    """
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1),
    }
    password = _password(cfg)
    if password is not None:
        kwargs["password"] = password
    if cfg.url.startswith("rediss://") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    client: aioredis.Redis = aioredis.Redis.from_url(cfg.url, **kwargs)
    return client


def _ttl_s(policy: Policy) -> int:
    """Keys live a little longer than the longest window can still read them."""
    w = policy.windows
    return math.ceil(max(w.trip, w.long) + w.max_clock_skew + 2 * w.slice) + 10


def _recent_m(policy: Policy) -> int:
    return policy.trip.fast_rule.of_last if policy.trip.fast_rule else 20


def _bitfield_ops(words: Counter[int], kind: bytes) -> list[bytes]:
    """`OVERFLOW SAT INCRBY <kind> #<word> <inc> …`, pre-encoded (the client's argument encoding is costly)."""
    ops = [b"OVERFLOW", b"SAT"]
    for word, inc in sorted(words.items()):
        ops += (b"INCRBY", kind, b"#%d" % word, b"%d" % inc)
    return ops


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class Backoff:
    """Capped, jittered exponential backoff (full jitter on the upper half)."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s, self.cap_s, self.failures = base_s, cap_s, 0
        self.retry_at = 0.0

    def ready(self, mono: float) -> bool:
        return mono >= self.retry_at

    def failed(self, mono: float) -> float:
        delay: float = min(self.cap_s, self.base_s * 2.0**self.failures) * random.uniform(0.5, 1.0)
        self.failures += 1
        self.retry_at = mono + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0


class SampleSink:
    """Agents' writer: one pipelined MULTI/EXEC per region per flush; buffers while Redis is unreachable."""

    def __init__(
        self,
        client: aioredis.Redis,
        policy: Policy,
        *,
        max_buffer: int = 50_000,
        max_batch: int = 5_000,
        retry_base_s: float = 0.2,
        retry_cap_s: float = 10.0,
    ) -> None:
        self.client, self.policy = client, policy
        self.prefix = policy.redis.key_prefix
        self.slice_s = policy.windows.slice
        self.total_ms, self.ttft_ms = policy.slo_threshold_ms, policy.ttft_threshold_ms
        self.ttl_s, self.recent_m = _ttl_s(policy), _recent_m(policy)
        self.index_ttl_s = self.ttl_s + math.ceil(keys.EPOCH_SLICES * self.slice_s)
        self.max_buffer, self.max_batch = max_buffer, max_batch
        self.buffer: deque[Sample] = deque()
        self.dropped_total = 0
        self._dropped_unlogged = 0
        self.written_total = 0
        self._backoff = Backoff(retry_base_s, retry_cap_s)
        self._outage_since: float | None = None
        self._flushed_in_outage = 0
        self._lock = asyncio.Lock()
        self._ttl_set: dict[str, int] = {}  # key → slice id when its EXPIRE was sent (pruned as slices pass)
        self.log = get_logger("store")

    @property
    def healthy(self) -> bool:
        return self._outage_since is None

    async def write(self, samples: Sequence[Sample]) -> None:
        """Queue the samples and flush what is queued; never raises for Redis trouble."""
        self.buffer.extend(samples)
        self._trim()
        await self._flush()

    async def heartbeat(self, agent_id: str, region: str) -> None:
        """Record that the agent is alive (and flush anything buffered); never raises for Redis trouble."""
        if not self._backoff.ready(time.monotonic()):
            return
        key = keys.heartbeat_key(self.prefix, region)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, agent_id, repr(time.time()))
            pipe.expire(key, self.ttl_s)
            await pipe.execute()
        except TRANSIENT as exc:
            self._failed(exc, "heartbeat")
            return
        await self._flush()

    async def _flush(self) -> None:
        if self._lock.locked():
            return  # the running flush picks up what was just queued
        async with self._lock:
            while self.buffer and self._backoff.ready(time.monotonic()):
                batch = [self.buffer.popleft() for _ in range(min(self.max_batch, len(self.buffer)))]
                try:
                    await self._send(batch)
                except TRANSIENT as exc:
                    self.buffer.extendleft(reversed(batch))  # back in front, then trim the oldest
                    self._trim()
                    self._failed(exc, "write")
                    return
                self.written_total += len(batch)
                if self._outage_since is not None:
                    self._flushed_in_outage += len(batch)
            if not self.buffer and self._outage_since is not None:
                self.log.info(
                    "store.buffer_flushed",
                    flushed=self._flushed_in_outage,
                    outage_s=round(time.monotonic() - self._outage_since, 3),
                    dropped=self._dropped_unlogged,
                    dropped_total=self.dropped_total,
                )
                self._outage_since, self._flushed_in_outage, self._dropped_unlogged = None, 0, 0
                self._backoff.succeeded()

    def _trim(self) -> None:
        while len(self.buffer) > self.max_buffer:
            self.buffer.popleft()
            self.dropped_total += 1
            self._dropped_unlogged += 1

    def _failed(self, exc: BaseException, during: str) -> None:
        mono = time.monotonic()
        if self._outage_since is None:
            self._outage_since = mono
        self._ttl_set.clear()  # Redis may come back empty: set every TTL again
        retry_in = self._backoff.failed(mono)
        self.log.warning(
            "store.redis_unavailable",
            role="writer",
            during=during,
            error=_error_text(exc),
            attempt=self._backoff.failures,
            retry_in_s=round(retry_in, 3),
        )
        self.log.info("store.samples_buffered", buffered=len(self.buffer), max_buffer=self.max_buffer)
        if self._dropped_unlogged:
            self.log.warning(
                "store.samples_dropped",
                dropped=self._dropped_unlogged,
                dropped_total=self.dropped_total,
                max_buffer=self.max_buffer,
            )
            self._dropped_unlogged = 0

    def _expire_once(self, pipe: Any, key: str, ttl_s: int, sid: int, marker: str | None = None) -> None:
        """EXPIRE a key once (per `marker`) rather than on every write: fewer commands per sample."""
        mark = marker or key
        if mark not in self._ttl_set:
            pipe.expire(key, ttl_s)
            self._ttl_set[mark] = sid

    async def _send(self, batch: Sequence[Sample]) -> None:
        by_region: dict[str, list[Sample]] = defaultdict(list)
        for s in batch:
            by_region[s.region].append(s)
        newest_sid = 0
        for region, samples in by_region.items():
            pipe = self.client.pipeline(transaction=True)  # one region = one hash slot
            cells: dict[tuple[str, int], list[Sample]] = defaultdict(list)
            newest: dict[str, float] = {}
            flags: list[tuple[float, str]] = []
            for s in samples:
                done = s.t + s.total_ms / 1000.0
                series = keys.series_id(s.worker, s.model)
                cells[(series, slice_of(done, self.slice_s))].append(s)
                newest[series] = max(newest.get(series, done), done)
                over = (not s.ok) or s.total_ms > self.total_ms
                flags.append((done, f"{int(over)}:{done:.3f}"))
            # Order matters for readers: newest (the series list) → slices → index (the change signal).
            newest_key = keys.newest_key(self.prefix, region)
            pipe.hset(newest_key, mapping={k: repr(v) for k, v in newest.items()})
            per_slice: dict[int, int] = defaultdict(int)
            region_words: dict[int, Counter[int]] = defaultdict(Counter)
            for (series, sid), cell in cells.items():
                words = sketch.increments(cell, self.total_ms, self.ttft_ms)
                key = keys.slice_key(self.prefix, region, sid, series)
                pipe.execute_command("BITFIELD", key, *_bitfield_ops(words, b"u16"))
                self._expire_once(pipe, key, self.ttl_s, sid)
                per_slice[sid] += len(cell)
                region_words[sid].update(words)
            for sid, words in region_words.items():  # the region's exact merge, in the same transaction
                key = keys.region_slice_key(self.prefix, region, sid)
                pipe.execute_command("BITFIELD", key, *_bitfield_ops(words, b"u32"))
                self._expire_once(pipe, key, self.ttl_s, sid)
            region_sid = max(per_slice)
            newest_sid = max(newest_sid, region_sid)
            for sid, count in per_slice.items():
                ikey = keys.index_key(self.prefix, region, keys.epoch_of(sid))
                pipe.hincrby(ikey, str(sid), count)
                self._expire_once(pipe, ikey, self.index_ttl_s, sid)
            recent_key = keys.recent_key(self.prefix, region)
            flags.sort()
            pipe.lpush(recent_key, *[f for _, f in flags[-self.recent_m :]])
            pipe.ltrim(recent_key, 0, self.recent_m - 1)
            for key in (newest_key, recent_key):  # refreshed once per slice
                self._expire_once(pipe, key, self.ttl_s, region_sid, marker=f"{key}@{region_sid}")
            await pipe.execute()
        # Forget TTL bookkeeping of slices that no longer receive writes.
        if len(self._ttl_set) > 4096:
            floor = newest_sid - keys.EPOCH_SLICES
            self._ttl_set = {k: v for k, v in self._ttl_set.items() if v >= floor}


# ---------------------------------------------------------------- the controller's view


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
        self.prefix = policy.redis.key_prefix
        self.regions = {r: RegionWindow(r, self.spec) for r in policy.region_names}
        self.extras: dict[str, _Extras] = {}
        self.series: dict[str, list[str]] = {}  # active `worker|model` series per region
        self.rebuilt = False
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
            self.log.warning("store.redis_unavailable", role="reader", error=_error_text(exc))
            return {r: _unreadable_detail(r) for r in self.regions}
        return {r: self._detail(r, now, raw[r]) for r in self.regions}

    async def refresh(self, now: float) -> bool:
        """Read the index and the changed slices; False (logged) when Redis cannot be read."""
        started = time.perf_counter()
        try:
            fetched = await self._refresh(now)
        except TRANSIENT as exc:
            self.log.warning("store.redis_unavailable", role="reader", error=_error_text(exc))
            return False
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
        m = _recent_m(self.policy)
        pipe = self.client.pipeline(transaction=False)
        for region in self.regions:  # index first, then the series list (the writer's order reversed)
            for e in epochs:
                pipe.hgetall(keys.index_key(self.prefix, region, e))
            pipe.hgetall(keys.newest_key(self.prefix, region))
            pipe.lrange(keys.recent_key(self.prefix, region), 0, m - 1)
            pipe.hgetall(keys.heartbeat_key(self.prefix, region))
        replies = await pipe.execute()
        per_region = len(epochs) + 3
        wanted: list[tuple[str, int]] = []
        oldest_useful = keep.start * self.spec.slice_s - self.spec.skew_s
        for i, (region, win) in enumerate(self.regions.items()):
            part = replies[i * per_region : (i + 1) * per_region]
            index: dict[int, int] = {}
            for h in part[: len(epochs)]:
                for k, v in h.items():
                    index[int(k)] = int(v)
            newest = _floats(part[-3])
            self.extras[region] = _Extras(newest, _recent(part[-2]), _floats(part[-1]))
            plan = win.plan(index, now)
            if plan.rejected:
                ahead = {s: round(t - now, 3) for s, t in newest.items() if t > now + self.spec.skew_s}
                self.log.warning(
                    "store.samples_rejected_clock_skew",
                    region=region,
                    rejected=plan.rejected,
                    rejected_future=plan.rejected_future,
                    rejected_late=plan.rejected_late,
                    rejected_total=win.rejected_total,
                    slice_offsets_s=list(plan.rejected_offsets_s),
                    series_ahead_s=ahead,
                    max_clock_skew_s=self.spec.skew_s,
                )
            self.series[region] = sorted(s for s, t in newest.items() if t >= oldest_useful)
            wanted.extend((region, sid) for sid in plan.fetch)
        if wanted:
            pipe = self.client.pipeline(transaction=False)
            for region, sid in wanted:
                pipe.get(keys.region_slice_key(self.prefix, region, sid))
            for (region, sid), raw in zip(wanted, await pipe.execute(), strict=True):
                self.regions[region].apply(sid, sketch.Sketch.from_redis(raw, width_bits=32))
        for win in self.regions.values():
            win.advance(now)
        self.last_fetch_count = len(wanted)
        return len(wanted)

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
            pipe.mget([keys.slice_key(self.prefix, region, sid, s) for s in series])
        for (region, sid, series), raws in zip(wanted, await pipe.execute(), strict=True):
            out[region][sid] = dict(zip(series, raws, strict=True))
        return out

    def _evidence(self, region: str, now: float) -> RegionEvidence:
        win, ex, w = self.regions[region], self.extras[region], self.policy.windows
        sk = win.window(now, w.trip)
        n = sk.n
        p50, p90, p99, p999 = sk.quantiles("total", (0.5, 0.9, 0.99, 0.999))
        recent = [over for over, t in ex.recent if now - w.trip <= t <= now + w.max_clock_skew]
        newest_age = _age(now, list(ex.newest.values()), w.max_clock_skew)
        hb_age = _age(now, list(ex.heartbeats.values()), w.max_clock_skew)
        stale = newest_age is None or newest_age > w.stale_after or hb_age is None or hb_age > w.stale_after
        return RegionEvidence(
            region=region,
            n=n,
            errors=sk.errors,
            over_slo_fraction=sk.over_fraction("total"),
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            p999_ms=p999,
            ttft_n=n,
            ttft_over_slo_fraction=sk.over_fraction("ttft") if self.policy.ttft_threshold_ms else 0.0,
            ttft_p99_ms=sk.quantile("ttft", 0.99),
            recent_over=sum(recent),
            recent_n=len(recent),
            newest_sample_age_s=newest_age,
            heartbeat_age_s=hb_age,
            stale=stale,
        )

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
