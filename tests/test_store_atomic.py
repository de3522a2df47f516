"""A sample batch lands whole or not at all (real redis-server): a key of the wrong type at any of the keys a batch
writes leaves every key of the region as it was, and the batches after it land with exact counts."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kit
import pytest
import redis.asyncio
import structlog

from trafficd import keys
from trafficd.model import Sample
from trafficd.policy.schema import Policy
from trafficd.stats import sketch, store
from trafficd.stats.window import slice_of

Breaker = Callable[[Any, Policy, float], Awaitable[list[str]]]  # puts foreign data at our keys, returns them


@pytest.fixture
def policy(redis_url: str, key_prefix: str) -> Policy:
    windows = {"evaluate_every": "1s", "slice": "1s", "trip": "10s", "long": "20s", "max_clock_skew": "3s"}
    doc = kit.two_region_doc(redis_url, key_prefix, slo={"total_p99": "3s"}, windows=windows)
    return kit.as_loaded(doc | {"trip": {"fast_rule": {"over": 3, "of_last": 10}}}).policy


@pytest.fixture
async def client(policy: Policy) -> AsyncIterator[Any]:
    c = store.redis_client(policy.redis)
    yield c
    await c.aclose()


def batch(now: float) -> list[Sample]:
    """Four r1 probes over two slices and two series (two over the 3 s SLO, one failed), and one r2 probe."""

    def s(region: str, worker: str, done: float, total_ms: float, ok: bool = True) -> Sample:
        return Sample(region, worker, "m1", done - total_ms / 1000.0, ok, None if ok else "http_5xx", total_ms)

    return [
        s("r1", "w1", now - 2.5, 100.0),
        s("r1", "w1", now - 2.5, 4000.0),
        s("r1", "w2", now - 1.2, 200.0),
        s("r1", "w2", now - 1.2, 5000.0, ok=False),
        s("r2", "w3", now - 1.2, 100.0),
    ]


def _r1(policy: Policy) -> tuple[str, str, str]:
    return policy.redis.key_prefix, policy.service, "r1"


async def series_slice(c: Any, policy: Policy, now: float) -> list[str]:
    key = keys.slice_key(*_r1(policy), slice_of(now - 1.2, 1.0), "w2|m1")  # the batch's last series slice
    await c.rpush(key, b"x")
    return [key]


async def region_slice(c: Any, policy: Policy, now: float) -> list[str]:
    key = keys.region_slice_key(*_r1(policy), slice_of(now - 2.5, 1.0))
    await c.hset(key, "x", "1")
    return [key]


async def index_field(c: Any, policy: Policy, now: float) -> list[str]:
    sid = slice_of(now - 1.2, 1.0)
    key = keys.index_key(*_r1(policy), keys.epoch_of(sid))
    await c.hset(key, str(sid), "not a number")  # the right type, but HINCRBY would fail on this field
    return [key]


async def newest(c: Any, policy: Policy, now: float) -> list[str]:
    key = keys.newest_key(*_r1(policy))
    await c.set(key, b"x")
    return [key]


async def recent(c: Any, policy: Policy, now: float) -> list[str]:
    key = keys.recent_key(*_r1(policy))  # the batch's last write: every other command of a MULTI/EXEC ran
    await c.set(key, b"x")
    return [key]


async def marker(c: Any, policy: Policy, now: float) -> list[str]:
    found = [keys.batch_key(*_r1(policy), slice_of(now + i, 1.0)) for i in range(10)]  # the sink writes soon
    for key in found:
        await c.set(key, b"x")
    return found


async def snapshot(c: Any, policy: Policy) -> dict[bytes, Any]:
    """Every r1 key under the test's prefix with its type and whole value."""
    out: dict[bytes, Any] = {}
    async for key in c.scan_iter(match=f"{policy.redis.key_prefix}:*{{r1}}*"):
        kind = await c.type(key)
        read = {b"string": c.get, b"hash": c.hgetall, b"list": lambda k: c.lrange(k, 0, -1)}[kind]
        out[key] = (kind, await read(key))
    return out


@pytest.mark.parametrize("breaker", [series_slice, region_slice, index_field, newest, recent, marker])
async def test_a_batch_refused_at_one_key_writes_nothing_and_later_batches_land_exactly(
    policy: Policy, client: Any, breaker: Breaker
) -> None:
    """Foreign data at one key a batch writes: the region's keys stay exactly as they were (no count, no index,
    no recent entry, no marker), the refusal names the key and counts the batch's samples, the other region's
    batch lands; once the key is gone the same probes land once with exact counts and every key expires."""
    now = time.time()
    sink = store.SampleSink(client, policy, agent_id="a1")
    foreign = await breaker(client, policy, now)
    before = await snapshot(client, policy)
    with structlog.testing.capture_logs() as logs:
        await sink.write(batch(now))
    assert await snapshot(client, policy) == before
    refusals = [e for e in logs if e["event"] == "store.batch_rejected"]
    assert [(e["region"], e["samples"]) for e in refusals] == [("r1", 4)]
    assert any(key in refusals[0]["error"] for key in foreign), refusals[0]["error"]
    assert (sink.rejected_total, sink.written_total, sink.buffered, sink.healthy) == (4, 1, 0, True)
    assert not [e for e in logs if e["event"] == "store.redis_unavailable"]

    await client.delete(*foreign)
    await sink.write(batch(now))
    view = store.StatsView(client, policy)
    ev = await view.evidence(time.time())
    r1, r2 = ev["r1"], ev["r2"]
    assert (r1.n, r1.errors, r1.over_slo_fraction, r1.recent_over, r1.recent_n) == (4, 1, 0.5, 2, 4)
    assert r2.n == 2  # the r2 probe of each write
    assert (sink.rejected_total, sink.written_total) == (4, 6)
    for key in await snapshot(client, policy):
        assert await client.ttl(key) > 0, key


async def test_a_batch_lands_when_redis_has_forgotten_the_script(policy: Policy, client: Any) -> None:
    """After SCRIPT FLUSH (a restarted server, a failover) the sink sends the script itself and the batch lands."""
    now = time.time()
    sink = store.SampleSink(client, policy, agent_id="a1")
    await sink.write(batch(now)[:2])
    await client.script_flush()
    await sink.write(batch(now)[2:4])
    ev = await store.StatsView(client, policy).evidence(time.time())
    assert (ev["r1"].n, sink.written_total, sink.rejected_total, sink.healthy) == (4, 4, 0, True)


async def test_a_slice_touching_every_bucket_lands_in_parts_sized_once(policy: Policy, client: Any) -> None:
    """One slice whose probes touch every bucket of both metrics (a BITFIELD past Lua's argument bound, sent in
    parts) lands exactly, and its string is allocated once at its size, not grown to twice it part by part."""
    done = time.time() - 1.5
    values = [sketch.bucket_value_ms(i) for i in range(sketch.MAX_INDEX + 1)]
    probes = [Sample("r1", "w1", "m1", done - v / 1000.0, True, None, v, ttft_ms=v) for v in values]
    sink = store.SampleSink(client, policy, agent_id="a1", max_batch=10_000)
    await sink.write(probes)
    assert (sink.written_total, sink.rejected_total) == (len(probes), 0)
    key = keys.slice_key(*_r1(policy), slice_of(done, 1.0), "w1|m1")
    raw = await client.get(key)
    words = struct.unpack(f">{len(raw) // 2}H", raw)
    assert len(words) == sketch.HEADER_WORDS + 2 * len(values) and words[0] == len(probes)
    assert all(c == 1 for c in words[sketch.HEADER_WORDS :]), "every bucket of both metrics counted once"
    assert await client.memory_usage(key, samples=0) < len(raw) * 1.25 + 100


async def test_a_heartbeat_refused_at_a_foreign_key_is_logged_once_and_samples_go_on(
    policy: Policy, client: Any
) -> None:
    """A string at the region's heartbeat key: the heartbeat is refused, logged at ERROR once (not an outage), the
    foreign key keeps its value and gets no expiry, samples still land; once it is gone the heartbeat lands."""
    now = time.time()
    sink = store.SampleSink(client, policy, agent_id="a1")
    hb = keys.heartbeat_key(*_r1(policy))
    await client.set(hb, b"another program's")
    with structlog.testing.capture_logs() as logs:
        await sink.heartbeat("a1", "r1")
        await sink.write(batch(now))
        await sink.heartbeat("a1", "r1")
    refusals = [(e["log_level"], e["region"]) for e in logs if e["event"] == "store.heartbeat_rejected"]
    assert refusals == [("error", "r1"), ("debug", "r1")]
    assert "WRONGTYPE" in next(e["error"] for e in logs if e["event"] == "store.heartbeat_rejected")
    assert not [e for e in logs if e["event"] == "store.redis_unavailable"]
    assert (await client.get(hb), await client.ttl(hb)) == (b"another program's", -1)
    assert (sink.written_total, sink.healthy) == (5, True)
    await client.delete(hb)
    await sink.heartbeat("a1", "r1")
    ev = await store.StatsView(client, policy).evidence(time.time())
    assert ev["r1"].heartbeat_age_s is not None and ev["r1"].heartbeat_age_s < 5.0
    assert await client.ttl(hb) > 0


async def test_an_agent_user_missing_a_write_command_writes_nothing_until_its_acl_is_fixed(
    policy: Policy, client: Any
) -> None:
    """r1's agent ACL without LTRIM (the script's last write): the batch writes nothing — no marker that would make
    its retry look landed — and is buffered as an outage; once LTRIM is granted it lands once, exactly."""
    from trafficd.commands.redis import acl_rules

    if int((await client.info("server"))["redis_version"].split(".")[0]) < 7:
        pytest.skip("redis.acl_check_cmd (the script's permission check) needs Redis 7")
    user, password = f"{policy.redis.key_prefix}-agent", "test-password"
    rules = [r.replace(" +ltrim", "") for r in acl_rules(policy)[keys.acl_username(policy.service, "agent", "r1")]]
    await client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *" ".join(rules).split())
    agent = redis.asyncio.Redis.from_url(policy.redis.url, username=user, password=password)
    try:
        now = time.time()
        sink = store.SampleSink(agent, policy, agent_id="a1", retry_base_s=0.01, retry_cap_s=0.02)
        before = await snapshot(client, policy)
        with structlog.testing.capture_logs() as logs:
            await sink.write([s for s in batch(now) if s.region == "r1"])
        assert await snapshot(client, policy) == before
        outage = [e["error"] for e in logs if e["event"] == "store.redis_unavailable"]
        assert len(outage) == 1 and "NoPermissionError" in outage[0] and "LTRIM" in outage[0], outage
        assert (sink.buffered, sink.healthy, sink.rejected_total) == (4, False, 0)
        await client.execute_command("ACL", "SETUSER", user, "+ltrim")
        assert await sink.flush()
        ev = await store.StatsView(client, policy).evidence(time.time())
        assert (ev["r1"].n, ev["r1"].errors, ev["r1"].recent_n, sink.duplicates_avoided) == (4, 1, 4, 0)
    finally:
        await agent.aclose()
        await client.execute_command("ACL", "DELUSER", user)
