"""`SampleSink`: the agents' writer of samples into per-slice histograms in Redis (layout in keys.py, docs/stats.md).

Redis errors never reach the agent loop: samples are buffered (bounded, oldest dropped first and counted) and
flushed on reconnect, with capped jittered backoff between attempts.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import redis.asyncio as aioredis

from trafficd import keys
from trafficd.model import Sample
from trafficd.policy.schema import Policy
from trafficd.runtime import metrics
from trafficd.runtime.logs import get_logger
from trafficd.stats import batch_script, sketch
from trafficd.stats.client import TRANSIENT, Backoff, error_text, recent_m, refused, ttl_s
from trafficd.stats.window import slice_of

CLOCK_CHECK_EVERY_S = 5.0  # how often the sink measures its agent's clock against Redis TIME
RESTAMP_ABOVE_S = 1.0  # an agent clock further than this from Redis's has its stamps corrected


@dataclass(frozen=True, slots=True)
class Batch:
    """One region's samples written by one script (all or nothing), marked in Redis by `batch_id` under
    `marker_key`."""

    region: str
    samples: list[Sample]
    batch_id: str
    marker_key: str
    slice_id: int


class SampleSink:
    """Agents' writer: one script per region per flush, applied whole or not at all (batch_script.py); buffers
    while Redis is unreachable.

    Clock judgement is per agent, here at the writer: every CLOCK_CHECK_EVERY_S the sink compares its agent's
    clock with Redis TIME; when they differ by more than RESTAMP_ABOVE_S, samples and heartbeats are re-stamped
    onto Redis's clock before they are written (`store.agent_clock_skewed`, metric
    trafficd_agent_clock_offset_seconds). A skewed agent therefore never writes stamps from the future into the
    region's shared keys, and the region's other agents are unaffected.

    Each batch writes its id into the region's batch marker (keys.batch_key) in the same script. A batch whose
    write failed is "unsure": the reply may have been lost after Redis applied it (a primary dying mid-reply, a
    timeout). It is sent again first, with the same id, and the script writes it only when its marker is absent,
    so it lands exactly once (`store.batch_already_written` when the marker shows it had landed). A batch Redis
    refuses (a key of the wrong type) wrote nothing: it is counted in `rejected_total` and skipped.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        policy: Policy,
        *,
        agent_id: str = "",
        clock: Callable[[], float] = time.time,
        max_buffer: int = 50_000,
        max_batch: int = 5_000,
        retry_base_s: float = 0.2,
        retry_cap_s: float = 10.0,
    ) -> None:
        self.client = client
        self.agent_id, self.clock = agent_id, clock
        self.offset_s = 0.0  # this agent's clock minus Redis's, as last measured
        self.restamping = False
        self.restamped_total = 0
        self._clock_checked_at = -math.inf  # monotonic
        self.use_policy(policy)
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
        self._unsure: Batch | None = None  # a batch whose write failed: it may have landed
        self._batch_prefix, self._batch_seq = f"{agent_id or 'agent'}:{os.urandom(4).hex()}", 0
        self.duplicates_avoided = 0
        self.rejected_total, self._refusing = 0, False  # samples of batches Redis refused (never retried)
        self._hb_refusing = False
        self.log = get_logger("store")

    def use_policy(self, policy: Policy) -> None:
        """Take the thresholds, slice length and expiries of a (reloaded) policy; the buffer is kept. Over-SLO counts
        are exact against the threshold in force when a sample is written: a changed SLO applies from then on."""
        self.policy = policy
        self.prefix, self.service = policy.redis.key_prefix, policy.service
        self.slice_s = policy.windows.slice
        self.total_ms, self.ttft_ms = policy.slo_threshold_ms, policy.ttft_threshold_ms
        self.ttl_s, self.recent_m = ttl_s(policy), recent_m(policy)
        self.index_ttl_s = self.ttl_s + math.ceil(keys.EPOCH_SLICES * self.slice_s)

    @property
    def buffered(self) -> int:
        """Samples not yet known written: the queue and the unsure batch."""
        return len(self.buffer) + (len(self._unsure.samples) if self._unsure else 0)

    @property
    def healthy(self) -> bool:
        return self._outage_since is None

    async def write(self, samples: Sequence[Sample]) -> None:
        """Queue the samples and flush what is queued; never raises for Redis trouble."""
        good = [s for s in samples if math.isfinite(s.t) and math.isfinite(s.total_ms) and s.total_ms >= 0]
        if len(good) != len(samples):
            self.log.warning("store.samples_invalid", dropped=len(samples) - len(good))
        self.buffer.extend(good)
        self._trim()
        await self._flush()

    async def flush(self) -> bool:
        """Write what is queued now, ignoring the backoff (e.g. at shutdown); True when nothing is left."""
        async with self._lock:
            pass  # let a flush in flight finish first
        self._backoff.retry_at = 0.0
        await self._flush()
        return not self.buffered

    async def heartbeat(self, agent_id: str, region: str) -> None:
        """Record that the agent is alive (and flush anything buffered); never raises for Redis trouble."""
        if not self._backoff.ready(time.monotonic()):
            return
        key = keys.heartbeat_key(self.prefix, self.service, region)
        ops = batch_script.Operations()
        try:
            await self._judge_clock()
            ops.add(b"HSET", key, [agent_id.encode(), repr(self.clock() - self._shift_s()).encode()])
            ops.add(b"EXPIRE", key, [b"%d" % self.ttl_s])
            await batch_script.run(self.client, ops)  # a foreign key at `hb` is refused, and left without a TTL
        except TRANSIENT as exc:
            if not refused(exc):
                self._failed(exc, "heartbeat")
                return
            (self.log.debug if self._hb_refusing else self.log.error)(
                "store.heartbeat_rejected", region=region, error=error_text(exc)
            )  # ERROR once until a heartbeat lands; not an outage: samples go on
            self._hb_refusing = True
        else:
            self._hb_refusing = False
        await self._flush()

    async def _flush(self) -> None:
        if self._lock.locked():
            return  # the running flush picks up what was just queued
        async with self._lock:
            if not await self._settled():
                return
            while self.buffer and self._backoff.ready(time.monotonic()):
                batch = [self.buffer.popleft() for _ in range(min(self.max_batch, len(self.buffer)))]
                by_region: dict[str, list[Sample]] = defaultdict(list)
                for sample in batch:
                    by_region[sample.region].append(sample)
                regions = list(by_region)
                for i, region in enumerate(regions):
                    one = self._batch(region, by_region[region])
                    try:
                        await self._judge_clock()
                        fresh = await self._send(one)  # one script: all or nothing
                    except TRANSIENT as exc:
                        if refused(exc):
                            self._rejected(one, exc)
                            continue
                        self._unsure = one  # may have landed: retried first, only if its marker is absent
                        unsent = [x for r in regions[i + 1 :] for x in by_region[r]]
                        self.buffer.extendleft(reversed(unsent))  # back in front, then trim the oldest
                        self._trim()
                        self._failed(exc, "write")
                        return
                    self._landed(one, fresh)
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

    def _batch(self, region: str, samples: list[Sample]) -> Batch:
        self._batch_seq += 1
        sid = slice_of(self.clock(), self.slice_s)
        marker = keys.batch_key(self.prefix, self.service, region, sid)
        return Batch(region, samples, f"{self._batch_prefix}:{self._batch_seq}", marker, sid)

    def _written(self, n: int) -> None:
        self.written_total += n
        self._refusing = False
        if self._outage_since is not None:
            self._flushed_in_outage += n

    async def _settled(self) -> bool:
        """Resolve the unsure batch, if any: send it again with the same id; the script writes nothing when its
        marker shows it had landed (one round trip, and no gap between the look and the write)."""
        one = self._unsure
        if one is None:
            return True
        if not self._backoff.ready(time.monotonic()):
            return False
        try:
            await self._judge_clock()
            fresh = await self._send(one)
        except TRANSIENT as exc:
            if not refused(exc):
                self._failed(exc, "write")
                return False
            self._rejected(one, exc)
        else:
            self._landed(one, fresh)
        self._unsure = None
        return True

    def _landed(self, one: Batch, fresh: bool) -> None:
        if not fresh:
            self.duplicates_avoided += len(one.samples)
            self.log.info(
                "store.batch_already_written", region=one.region, samples=len(one.samples), batch=one.batch_id
            )
        self._written(len(one.samples))

    def _rejected(self, one: Batch, exc: BaseException) -> None:
        """Redis refused the batch itself (e.g. another program's key of the wrong type at one of ours): sending it
        again gets the same answer and would hold every later sample back, so it is counted and skipped. ERROR once
        until a batch lands again, DEBUG between."""
        self.rejected_total += len(one.samples)
        (self.log.debug if self._refusing else self.log.error)(
            "store.batch_rejected",
            region=one.region,
            samples=len(one.samples),
            batch=one.batch_id,
            error=error_text(exc),
            rejected_total=self.rejected_total,
        )
        self._refusing = True

    def _shift_s(self) -> float:
        return self.offset_s if self.restamping else 0.0

    async def _judge_clock(self) -> None:
        """Measure this agent's clock against Redis TIME (the middle of the round trip); log a change of verdict."""
        mono = time.monotonic()
        if mono - self._clock_checked_at < CLOCK_CHECK_EVERY_S:
            return
        before = self.clock()
        seconds, micros = await self.client.time()
        after = self.clock()
        self._clock_checked_at = mono
        offset = (before + after) / 2.0 - (seconds + micros / 1e6)
        skewed = abs(offset) > RESTAMP_ABOVE_S
        metrics.AGENT_CLOCK_OFFSET.labels(self.agent_id).set(round(offset, 3))
        moved = abs(offset - self.offset_s) > RESTAMP_ABOVE_S
        self.offset_s = offset
        if skewed and (moved or not self.restamping):
            self.log.warning(
                "store.agent_clock_skewed",
                agent_id=self.agent_id,
                offset_s=round(offset, 3),
                round_trip_ms=round((after - before) * 1000.0, 1),
                action="restamped",
                restamp_above_s=RESTAMP_ABOVE_S,
            )
        elif self.restamping and not skewed:
            self.log.info("store.agent_clock_recovered", agent_id=self.agent_id, offset_s=round(offset, 3))
        self.restamping = skewed

    def _trim(self) -> None:
        unsure = self._unsure
        excess = self.buffered - self.max_buffer
        if unsure is not None and excess > 0:  # its samples are the oldest: they go first
            cut = min(excess, len(unsure.samples))
            self._unsure = replace(unsure, samples=unsure.samples[cut:]) if cut < len(unsure.samples) else None
            self.dropped_total += cut
            self._dropped_unlogged += cut
        while len(self.buffer) > self.max_buffer:
            self.buffer.popleft()
            self.dropped_total += 1
            self._dropped_unlogged += 1

    def _failed(self, exc: BaseException, during: str) -> None:
        mono = time.monotonic()
        first = self._outage_since is None  # one warning per outage; each retry after it at DEBUG
        if first:
            self._outage_since = mono
        self._ttl_set.clear()  # Redis may come back empty: set every TTL again
        retry_in = self._backoff.failed(mono)
        (self.log.warning if first else self.log.debug)(
            "store.redis_unavailable",
            role="writer",
            during=during,
            error=error_text(exc),
            attempt=self._backoff.failures,
            retry_in_s=round(retry_in, 3),
        )
        (self.log.info if first else self.log.debug)(
            "store.samples_buffered", buffered=self.buffered, max_buffer=self.max_buffer
        )
        if self._dropped_unlogged:
            self.log.warning(
                "store.samples_dropped",
                dropped=self._dropped_unlogged,
                dropped_total=self.dropped_total,
                max_buffer=self.max_buffer,
            )
            self._dropped_unlogged = 0

    def _expire_once(
        self, ops: batch_script.Operations, ttls: dict[str, int], key: str, ttl_s: int, sid: int, mark: str = ""
    ) -> None:
        """EXPIRE a key once (per `mark`) rather than on every write: fewer commands per sample. `ttls` collects
        what this batch sets; it is remembered only once the batch landed (a refused batch set none)."""
        mark = mark or key
        if mark not in self._ttl_set and mark not in ttls:
            ops.add(b"EXPIRE", key, [b"%d" % ttl_s])
            ttls[mark] = sid

    def _recent_entry(self, s: Sample) -> bool | None:
        """A probe's entry in the recent list (over the SLO or failed), from the one record that decides it: the
        record counting it over the SLO, else its final record; None for its other records."""
        if sketch.counts_of(s, self.total_ms, self.ttft_ms) & sketch.COUNTED_TOTAL:
            return True
        if s.early or s.counted & sketch.COUNTED_TOTAL:
            return None
        return not s.ok

    async def _send(self, batch: Batch) -> bool:
        """Write one region's samples with one script (one region = one hash slot): all or nothing
        (batch_script.py). True when written now, False when its marker shows it had landed already."""
        region, samples = batch.region, batch.samples
        ops = batch_script.Operations(batch.marker_key, batch.batch_id, len(samples))
        ttls: dict[str, int] = {}
        self._expire_once(ops, ttls, batch.marker_key, self.ttl_s, batch.slice_id)
        cells: dict[tuple[str, int], list[Sample]] = defaultdict(list)
        newest: dict[str, float] = {}
        flags: list[tuple[float, str]] = []
        shift = self._shift_s()
        for s in samples:
            done = s.t - shift + s.total_ms / 1000.0
            series = keys.series_id(s.worker, s.model)
            cells[(series, slice_of(done, self.slice_s))].append(s)
            newest[series] = max(newest.get(series, done), done)
            over = self._recent_entry(s)
            if over is not None:
                flags.append((done, f"{int(over)}:{done:.3f}"))
        newest_key = keys.newest_key(self.prefix, self.service, region)
        fields = [x for k, v in newest.items() for x in (k.encode(), repr(v).encode())]
        ops.chunked(b"HSET", newest_key, fields, step=2)
        per_slice: dict[int, int] = defaultdict(int)
        region_words: dict[int, Counter[int]] = defaultdict(Counter)
        for (series, sid), cell in cells.items():
            words = sketch.increments(cell, self.total_ms, self.ttft_ms)
            key = keys.slice_key(self.prefix, self.service, region, sid, series)
            ops.bitfield(key, batch_script.series_increments(words))
            self._expire_once(ops, ttls, key, self.ttl_s, sid)
            per_slice[sid] += len(cell)
            region_words[sid].update(words)
        for sid, words in region_words.items():  # the region's exact merge, in the same script
            key = keys.region_slice_key(self.prefix, self.service, region, sid)
            ops.bitfield(key, batch_script.aggregate_increments(words))
            self._expire_once(ops, ttls, key, self.ttl_s, sid)
        region_sid = max(per_slice)
        for sid, count in per_slice.items():
            ikey = keys.index_key(self.prefix, self.service, region, keys.epoch_of(sid))
            ops.add(b"HINCRBY", ikey, [b"%d" % sid, b"%d" % count])
            self._expire_once(ops, ttls, ikey, self.index_ttl_s, sid)
        recent_key = keys.recent_key(self.prefix, self.service, region)
        flags.sort()
        if flags:  # a batch of early records and final ones of probes already listed adds no entry
            ops.chunked(b"LPUSH", recent_key, [f.encode() for _, f in flags[-self.recent_m :]])
            ops.add(b"LTRIM", recent_key, [b"0", b"%d" % (self.recent_m - 1)])
        for key in (newest_key, recent_key):  # refreshed once per slice
            self._expire_once(ops, ttls, key, self.ttl_s, region_sid, mark=f"{key}@{region_sid}")
        fresh = await batch_script.run(self.client, ops)
        self._ttl_set.update(ttls)
        if shift:
            self.restamped_total += len(samples)
            metrics.SAMPLES_RESTAMPED.labels(self.agent_id).inc(len(samples))
        # Forget TTL bookkeeping of slices that no longer receive writes.
        if len(self._ttl_set) > 4096:
            floor = region_sid - keys.EPOCH_SLICES
            self._ttl_set = {k: v for k, v in self._ttl_set.items() if v >= floor}
        return fresh
