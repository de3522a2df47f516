"""The Redis statistics store against a real redis-server: round trip, incremental reads, keys, skew, outages."""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kit
import pytest
import structlog
from kit import eventually_async
from redis.crc import key_slot

from trafficd import keys
from trafficd.dev.services import RedisServer
from trafficd.model import Sample
from trafficd.policy.schema import Policy
from trafficd.stats import sketch, store


def make_policy(url: str, prefix: str) -> Policy:
    return kit.as_loaded(
        kit.two_region_doc(
            url,
            prefix,
            models=("m1", "m2"),
            slo={"total_p99": "3s", "ttft_p99": "300ms"},
            windows={
                "evaluate_every": "1s",
                "slice": "1s",
                "trip": "5s",
                "long": "20s",
                "min_samples": 10,
                "stale_after": "5s",
                "max_clock_skew": "3s",
            },
            trip={"fast_rule": {"over": 3, "of_last": 10}},
        )
    ).policy


def sample(region: str, worker: str, model: str, done: float, total_ms: float, **kw: Any) -> Sample:
    """A sample that completed at `done` (unix s) after `total_ms`."""
    ok = kw.pop("ok", True)
    return Sample(region, worker, model, done - total_ms / 1000.0, ok, None if ok else "http_5xx", total_ms, **kw)


@pytest.fixture
def policy(redis_url: str, key_prefix: str) -> Policy:
    return make_policy(redis_url, key_prefix)


@pytest.fixture
async def client(policy: Policy) -> AsyncIterator[Any]:
    c = store.redis_client(policy.redis)
    yield c
    await c.aclose()


async def wait_for(cond: Callable[[], Any], timeout_s: float = 10.0) -> None:
    await eventually_async(cond, "the store condition", timeout_s=timeout_s, interval_s=0.02)


async def test_written_samples_come_back_as_exact_region_evidence(policy: Policy, client: Any) -> None:
    """Counts, errors and the over-SLO fraction are exact, percentiles within 1 %, fast rule and ages filled."""
    now = time.time()
    rng = random.Random(7)
    samples = []
    for i in range(600):
        total = rng.lognormvariate(math.log(800), 0.7) if i % 50 else rng.uniform(3001, 9000)
        samples.append(
            sample(
                "r1", f"w{1 + i % 2}", f"m{1 + i % 3 % 2}", now - 4 + i / 200, total, ok=i % 40 != 0, ttft_ms=total / 5
            )
        )
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    await sink.write(samples)
    await sink.heartbeat("agent-1", "r1")
    ev = await view.evidence(now)
    r1, r2 = ev["r1"], ev["r2"]
    totals = [s.total_ms for s in samples]
    assert (r1.n, r1.errors) == (600, sum(1 for s in samples if not s.ok))
    assert r1.over_slo_fraction == sum(1 for v in totals if v > 3000) / 600
    assert r1.ttft_over_slo_fraction == sum(1 for s in samples if (s.ttft_ms or 0) > 300) / 600
    exact_p99 = sorted(totals)[math.ceil(0.99 * 600) - 1]
    assert r1.p99_ms is not None and abs(r1.p99_ms - exact_p99) <= 0.01 * exact_p99
    last10 = sorted(samples, key=lambda s: s.t + s.total_ms / 1000)[-10:]
    assert r1.recent_n == 10
    assert r1.recent_over == sum(1 for s in last10 if s.total_ms > 3000 or not s.ok)
    assert r1.newest_sample_age_s == pytest.approx(4 - 599 / 200, abs=0.01)
    assert r1.heartbeat_age_s is not None and r1.heartbeat_age_s < 5.0
    assert not r1.stale and not r1.unreadable
    assert (r2.n, r2.stale, r2.unreadable) == (0, True, False)


async def test_a_region_without_a_fresh_heartbeat_is_stale(policy: Policy, client: Any) -> None:
    """Fresh samples without any agent heartbeat, or an old newest sample, make the region stale (unknown)."""
    now = time.time()
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    await sink.write([sample("r1", "w1", "m1", now - 0.5, 100.0)])
    await sink.write([sample("r2", "w3", "m1", now - 8.0, 100.0)])  # older than stale_after (5 s)
    await sink.heartbeat("a2", "r2")
    ev = await view.evidence(now)
    assert (ev["r1"].stale, ev["r1"].heartbeat_age_s) == (True, None)
    assert ev["r2"].stale and ev["r2"].newest_sample_age_s == pytest.approx(8.0, abs=0.01)
    await sink.heartbeat("a1", "r1")
    assert not (await view.evidence(now))["r1"].stale


async def test_samples_with_impossible_times_are_dropped_and_logged_not_raised(policy: Policy, client: Any) -> None:
    """A NaN or negative latency cannot break the agent loop: it is dropped, logged, and the rest is written."""
    now = time.time()
    sink = store.SampleSink(client, policy)
    bad = [sample("r1", "w1", "m1", now - 1, math.nan), sample("r1", "w1", "m1", now - 1, -5.0)]
    with structlog.testing.capture_logs() as logs:
        await sink.write([*bad, sample("r1", "w1", "m1", now - 1, 100.0)])
    assert sink.written_total == 1
    assert [e["dropped"] for e in logs if e["event"] == "store.samples_invalid"] == [2]


async def test_second_evaluation_fetches_only_changed_slices_and_equals_a_rebuild(policy: Policy, client: Any) -> None:
    """After the first read, only slices whose index count changed are fetched; the totals equal a fresh rebuild."""
    now = math.floor(time.time()) + 0.5
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    await sink.write([sample("r1", "w1", "m1", now - 4 + i / 100, 100.0 + i) for i in range(400)])
    await sink.heartbeat("a", "r1")
    await view.evidence(now)
    assert view.last_fetch_count == 5  # r1: 4 whole slices + the current one; r2 has none
    await sink.write([sample("r1", "w2", "m1", now + 0.7, 4000.0 + i) for i in range(30)])
    later = now + 0.8  # the next slice: the oldest one (50 samples) leaves the 5-s trip window
    incremental = await view.evidence(later)
    assert view.last_fetch_count == 1
    rebuilt = await store.StatsView(client, policy).evidence(later)
    assert incremental == rebuilt
    assert incremental["r1"].n == 430 - 50
    assert incremental["r1"].over_slo_fraction == 30 / 380


async def test_detail_breaks_down_by_worker_model_and_window(policy: Policy, client: Any) -> None:
    """`detail()` gives per-worker, per-model and per-series figures for the trip and the long window."""
    now = time.time()
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    old = [sample("r1", "w1", "m1", now - 12 + i / 10, 500.0) for i in range(20)]
    fresh = [sample("r1", "w2", "m2", now - 2 + i / 100, 5000.0, ok=False) for i in range(10)]
    await sink.write(old + fresh)
    detail = (await view.detail(now))["r1"]
    assert detail.long is not None and detail.trip is not None
    assert (detail.long.n, detail.trip.n) == (30, 10)
    assert detail.workers["w1"].long.n == 20 and detail.workers["w1"].trip.n == 0
    assert detail.models["m2"].trip.error_rate == 1.0
    assert detail.series[keys.series_id("w2", "m2")].trip.over_slo_fraction == 1.0
    assert detail.series_newest_age_s[keys.series_id("w1", "m1")] > 9


async def test_region_figures_are_the_exact_merge_of_its_series(policy: Policy, client: Any) -> None:
    """The region aggregate written beside the series equals the merge of the per-series slices, bucket for bucket."""
    now = time.time()
    rng = random.Random(3)
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    for _ in range(5):  # several batches, several slices, 2 workers × 2 models
        await sink.write(
            [
                sample("r1", f"w{rng.randint(1, 2)}", f"m{rng.randint(1, 2)}", now - rng.uniform(0, 15),
                       rng.lognormvariate(7, 1), ok=rng.random() > 0.05, ttft_ms=rng.uniform(50, 900))
                for _ in range(200)
            ]
        )  # fmt: skip
    await view.refresh(now)
    win = view.regions["r1"]
    raw = await view._read_series(now)
    for sid, total in win.slices.items():
        assert total == sketch.merge(sketch.Sketch.from_redis(b) for b in raw["r1"][sid].values() if b)
    assert sum(t.n for t in win.slices.values()) == 1000


async def test_keys_expire_and_share_their_region_hash_slot(policy: Policy, client: Any) -> None:
    """Every key written has a TTL a little over the longest window, and a region's keys share one cluster slot."""
    now = time.time()
    sink = store.SampleSink(client, policy)
    await sink.write([sample(r, "w1", "m1", now - i / 3, 200.0) for r in ("r1", "r2") for i in range(9)])
    await sink.heartbeat("a", "r1")
    found = [k async for k in client.scan_iter(match=f"{policy.redis.key_prefix}:*")]
    assert len(found) >= 8
    ttl_max = 20 + 3 + 2 * 1 + 10 + math.ceil(keys.EPOCH_SLICES * 1.0)
    slots: dict[str, set[int]] = {}
    for k in found:
        ttl = await client.ttl(k)
        assert 0 < ttl <= ttl_max, (k, ttl)
        region = k.decode().split("{")[1].split("}")[0]
        slots.setdefault(region, set()).add(key_slot(k))
    assert set(slots) == {"r1", "r2"}
    assert all(len(s) == 1 for s in slots.values())


async def test_memory_of_a_series_slice_does_not_grow_with_the_probe_rate(policy: Policy, client: Any) -> None:
    """A slice written by 10 or 2,000 probes over the same latency range uses the same Redis string size."""
    now = math.floor(time.time()) + 0.9
    sink = store.SampleSink(client, policy)
    values = [150.0, 900.0, 2500.0, 29_000.0]
    await sink.write([sample("r1", "w1", "m1", now - 0.5, values[i % 4]) for i in range(10)])
    await sink.write([sample("r1", "w2", "m1", now - 0.5, values[i % 4]) for i in range(2000)])
    sid = math.floor(now - 0.5)
    low = await client.strlen(keys.slice_key(policy.redis.key_prefix, policy.service, "r1", sid, "w1|m1"))
    high = await client.strlen(keys.slice_key(policy.redis.key_prefix, policy.service, "r1", sid, "w2|m1"))
    assert low == high == 2 * (sketch.word_of("ttft", sketch.bucket_index(29_000.0)) + 1)


async def test_samples_stamped_beyond_the_clock_skew_are_rejected_counted_and_logged(
    policy: Policy, client: Any
) -> None:
    """Samples stamped 60 s ahead of the controller's clock do not count; the rejection is counted and logged."""
    now = time.time()
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    await sink.write([sample("r1", "w1", "m1", now - 1, 100.0) for _ in range(5)])
    await sink.write([sample("r1", "w2", "m1", now + 60, 100.0) for _ in range(7)])
    with structlog.testing.capture_logs() as logs:
        ev = await view.evidence(now)
    assert ev["r1"].n == 5
    rejected = [e for e in logs if e["event"] == "store.samples_rejected_clock_skew"]
    assert len(rejected) == 1
    assert (rejected[0]["region"], rejected[0]["rejected"], rejected[0]["rejected_future"]) == ("r1", 7, 7)
    assert rejected[0]["series_ahead_s"] == {"w2|m1": pytest.approx(60, abs=0.1)}
    assert view.regions["r1"].rejected_total == 7


async def test_an_agent_clock_a_day_ahead_is_logged_and_its_samples_never_count(policy: Policy, client: Any) -> None:
    """Samples stamped a day ahead land where no window reads; the series is named in the clock-skew log."""
    now = time.time()
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    await sink.write([sample("r1", "w1", "m1", now + 86_400, 100.0) for _ in range(3)])
    with structlog.testing.capture_logs() as logs:
        ev = await view.evidence(now)
    assert (ev["r1"].n, ev["r1"].newest_sample_age_s, ev["r1"].stale) == (0, None, True)
    skew = [e for e in logs if e["event"] == "store.samples_rejected_clock_skew"]
    assert skew and skew[0]["series_ahead_s"] == {"w1|m1": pytest.approx(86_400, abs=1)}


async def test_redis_outage_buffers_bounded_reports_unreadable_and_flushes_on_restart(
    redis_server: RedisServer, policy: Policy, client: Any
) -> None:
    """With Redis stopped the sink keeps the newest samples (oldest dropped, counted) and never raises; the view
    reports every region unreadable; each warns once per outage; after a restart the buffer is flushed and read
    back."""
    sink = store.SampleSink(client, policy, max_buffer=50, retry_base_s=0.05, retry_cap_s=0.2)
    view = store.StatsView(client, policy)
    now = time.time()
    oldest = [sample("r1", "w1", "m1", now - 2, 4000.0, ok=False) for _ in range(20)]
    newer = [sample("r1", "w1", "m1", now - 1, 100.0) for _ in range(50)]
    redis_server.stop()
    try:
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            await sink.write(oldest)
            await sink.write(newer)  # during backoff: buffered, 20 oldest dropped
            await sink.heartbeat("a", "r1")
            assert time.monotonic() - started < 3.0
            assert (sink.buffered, sink.dropped_total) == (50, 20)
            ev = await view.evidence(time.time())
            assert all(e.unreadable and e.n == 0 for e in ev.values()) and set(ev) == {"r1", "r2"}
            await view.evidence(time.time())  # a second evaluation inside the same outage

            async def backoff_over() -> bool:
                return sink._backoff.ready(time.monotonic())

            await wait_for(backoff_over, 2.0)  # the next write attempts again, fails and reports the drops
            await sink.write([])
        names = [e["event"] for e in logs]
        assert "store.samples_buffered" in names
        for role in ("writer", "reader"):  # one warning per outage; the later attempts at DEBUG
            seen = [e["log_level"] for e in logs if e["event"] == "store.redis_unavailable" and e["role"] == role]
            assert seen[0] == "warning" and set(seen[1:]) <= {"debug"} and len(seen) >= 2, (role, seen)
        dropped = [e for e in logs if e["event"] == "store.samples_dropped"]
        assert dropped and dropped[0]["dropped_total"] == 20
    finally:
        redis_server.start()
    with structlog.testing.capture_logs() as logs:

        async def flushed() -> bool:
            await sink.write([])
            return sink.healthy

        await wait_for(flushed)
    done = [e for e in logs if e["event"] == "store.buffer_flushed"]
    assert done and done[0]["flushed"] == 50
    await sink.heartbeat("a", "r1")
    r1 = (await view.evidence(time.time()))["r1"]
    assert (r1.n, r1.errors, r1.unreadable, r1.stale) == (50, 0, False, False)


async def test_region_counts_stay_exact_when_a_bucket_saturates(policy: Policy, client: Any) -> None:
    """70,000 samples in one bucket of one region slice: n and the over-SLO count stay exact (u32 header); the
    saturated u16 bucket is logged."""
    now = math.floor(time.time()) + 0.9
    sink, view = (
        store.SampleSink(client, policy, max_buffer=100_000, max_batch=100_000),
        store.StatsView(client, policy),
    )
    batch = [sample("r1", f"w{1 + i % 2}", "m1", now - 0.5, 3100.0) for i in range(70_000)]
    await sink.write(batch)
    with structlog.testing.capture_logs() as logs:
        ev = (await view.evidence(now))["r1"]
    assert (ev.n, ev.over_slo_fraction) == (70_000, 1.0)
    assert any(e["event"] == "store.histogram_saturated" and e["region"] == "r1" for e in logs)


async def test_flush_writes_the_buffer_at_once_after_redis_returns(
    redis_server: RedisServer, policy: Policy, client: Any
) -> None:
    """`flush()` (for shutdown) ignores the backoff: once Redis is back, everything buffered is written now."""
    sink = store.SampleSink(client, policy, retry_base_s=60.0, retry_cap_s=60.0)
    now = time.time()
    redis_server.stop()
    try:
        await sink.write([sample("r1", "w1", "m1", now - 1, 100.0) for _ in range(5)])
        assert sink.buffered == 5 and not sink.healthy
        assert not await sink.flush()
    finally:
        redis_server.start()
    assert await sink.flush()
    assert (sink.written_total, sink.healthy) == (5, True)


async def test_a_batch_redis_refuses_is_counted_logged_once_and_does_not_block_later_samples(
    policy: Policy, client: Any
) -> None:
    """A key of the wrong type at one of ours makes Redis refuse the batch: it is skipped, counted and logged once at
    ERROR instead of being retried forever, and samples written after the key is fixed land."""
    now = time.time()
    sink = store.SampleSink(client, policy)
    recent = keys.recent_key(policy.redis.key_prefix, policy.service, "r1")
    await client.set(recent, b"another program's string")
    with structlog.testing.capture_logs() as logs:
        await sink.write([sample("r1", "w1", "m1", now - 1, 100.0)])
        await sink.write([sample("r1", "w1", "m1", now - 1, 120.0)])
        refusals = [e for e in logs if e["event"] == "store.batch_rejected"]
        assert [(e["log_level"], e["samples"]) for e in refusals] == [("error", 1), ("debug", 1)]
        assert "WRONGTYPE" in refusals[0]["error"]
        assert (sink.rejected_total, sink.buffered, sink.healthy) == (2, 0, True)
        assert not [e for e in logs if e["event"] == "store.redis_unavailable"]
        await client.delete(recent)
        await sink.write([sample("r1", "w1", "m1", now - 1, 140.0), sample("r2", "w1", "m1", now - 1, 90.0)])
    assert (sink.written_total, sink.buffered) == (2, 0)
