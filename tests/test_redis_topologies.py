"""Redis Cluster and Sentinel, selected by the policy's Redis URL, against real local ones: samples, windows,
lease, overrides and controller state work; a Sentinel failover loses no buffered sample and counts none twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kit import eventually_async
from redis_topologies import Cluster, SentinelSet
from test_store import make_policy, sample

from trafficd import keys
from trafficd.control import overrides, state_store
from trafficd.control.lease import Lease
from trafficd.decide.state import ControllerState
from trafficd.dns.memory import MemoryProvider
from trafficd.dns.provider import ReconcileContext, Status
from trafficd.model import Override
from trafficd.policy.schema import Policy
from trafficd.stats import store

pytestmark = pytest.mark.xdist_group("redis-topologies")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    s = SentinelSet().start()
    yield s
    s.stop()


@pytest.fixture
def fresh_sentinels() -> Iterator[SentinelSet]:
    """A Sentinel set of the test's own (a failover leaves no replica to promote for the next test)."""
    s = SentinelSet().start()
    yield s
    s.stop()


@pytest.fixture
async def cluster_client(cluster: Cluster) -> AsyncIterator[tuple[Policy, Any]]:
    policy = make_policy(cluster.url, f"t{uuid.uuid4().hex[:8]}")
    client = store.redis_client(policy.redis)
    yield policy, client
    await client.aclose()


async def round_trip(policy: Policy, client: Any) -> None:
    """Samples of two regions come back as exact evidence; lease, overrides and controller state round-trip."""
    now = time.time()
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    await sink.write([sample(r, "w1", "m1", now - 3 + i / 100, 100.0 + i) for r in ("r1", "r2") for i in range(200)])
    for r in ("r1", "r2"):
        await sink.heartbeat("a", r)
    ev = await view.evidence(now)
    assert (ev["r1"].n, ev["r2"].n) == (200, 200) and not ev["r1"].stale and not ev["r1"].unreadable
    a = Lease(client, policy.redis.key_prefix, policy.service, "a", ttl_s=5.0)
    b = Lease(client, policy.redis.key_prefix, policy.service, "b", ttl_s=5.0)
    assert (await a.ensure(), await b.ensure(), await a.ensure()) == (True, False, True)
    drain = Override("drain", "r1", "test", now + 60, "alice", now)
    await overrides.set_override(client, policy, drain)
    assert (await overrides.load(client, policy, now)).by_region == {"r1": drain}
    state = ControllerState.initial(policy, now)
    await state_store.save(client, policy, state)
    assert await state_store.load(client, policy) == state


async def test_redis_cluster_carries_samples_windows_lease_overrides_and_state(
    cluster_client: tuple[Policy, Any],
) -> None:
    """A redis+cluster:// URL gives a RedisCluster client; every store, lease and override operation works on a
    three-primary, three-replica cluster (each multi-key operation stays inside one hash slot)."""
    policy, client = cluster_client
    assert type(client).__name__ == "RedisCluster"
    await round_trip(policy, client)


async def test_buffered_samples_land_once_across_a_cluster_primary_failover(
    cluster: Cluster, cluster_client: tuple[Policy, Any]
) -> None:
    """The primary serving region r1's slot is killed: samples written meanwhile (retried by the cluster client or
    buffered by the sink) land exactly once on the promoted replica."""
    policy, client = cluster_client
    sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
    now = time.time()
    await sink.write([sample("r1", "w1", "m1", now - 2 + i / 100, 100.0) for i in range(100)])
    assert not sink.buffered
    key = keys.heartbeat_key(policy.redis.key_prefix, policy.service, "r1")
    old = cluster.primary_of(key)
    cluster.kill(old)
    await sink.write([sample("r1", "w1", "m1", now - 1 + i / 100, 100.0) for i in range(50)])
    # the cluster client may retry until the replica is promoted, or the sink buffers: either way nothing is lost
    deadline = time.monotonic() + 30.0
    while not await sink.flush():
        assert time.monotonic() < deadline, "buffered samples not written after the cluster failover"
    assert cluster.primary_of(key) != old
    await sink.heartbeat("a", "r1")
    ev = await view.evidence(time.time())
    assert sink.written_total == 150 and sum(s.n for s in ev["r1"].slices) == 150


async def test_sentinel_carries_samples_windows_lease_overrides_and_state(sentinels: SentinelSet) -> None:
    """A redis+sentinel:// URL talks to the primary the Sentinels name; everything round-trips."""
    policy = make_policy(sentinels.url, f"t{uuid.uuid4().hex[:8]}")
    client = store.redis_client(policy.redis)
    try:
        await round_trip(policy, client)
    finally:
        await client.aclose()


async def test_buffered_samples_land_once_across_a_sentinel_failover(fresh_sentinels: SentinelSet) -> None:
    """The primary is killed: samples written meanwhile are buffered, and once the Sentinels promote the replica
    they land exactly once (the region's count equals what was written)."""
    policy = make_policy(fresh_sentinels.url, f"t{uuid.uuid4().hex[:8]}")
    client = store.redis_client(policy.redis)
    try:
        sink, view = store.SampleSink(client, policy), store.StatsView(client, policy)
        now = time.time()
        await sink.write([sample("r1", "w1", "m1", now - 2 + i / 100, 100.0) for i in range(100)])
        assert sink.buffered == 0  # `== 0`, not `not`: mypy would hold the property at 0 past the writes below
        old = fresh_sentinels.current_primary()
        fresh_sentinels.kill(old)
        await sink.write([sample("r1", "w1", "m1", now - 1 + i / 100, 100.0) for i in range(50)])
        assert sink.buffered == 50  # the primary is gone: buffered, not lost
        await eventually_async(lambda: fresh_sentinels.current_primary() != old, "the replica promoted", timeout_s=30.0)

        async def flushed() -> bool:
            return await sink.flush()

        deadline = time.monotonic() + 30.0
        while not await flushed():
            assert time.monotonic() < deadline, "buffered samples not written after the failover"
        await sink.heartbeat("a", "r1")
        ev = await view.evidence(time.time())
        assert sink.written_total == 150 and sum(s.n for s in ev["r1"].slices) == 150
    finally:
        await client.aclose()


async def test_a_failover_during_a_drain_keeps_one_writer_and_the_decision(fresh_sentinels: SentinelSet) -> None:
    """A leader drains r1, then the Redis primary dies: after the Sentinels promote the replica at most one
    controller holds the lease, a deposed one's write is fenced by the DNS epoch, and the drain stays in DNS."""
    policy = make_policy(fresh_sentinels.url, f"t{uuid.uuid4().hex[:8]}")
    client = store.redis_client(policy.redis)
    dns = MemoryProvider.bootstrapped(policy)
    drain = {"r1": {"r1": 0.5, "r2": 0.5}, "r2": {"r2": 1.0}}
    try:
        a = Lease(client, policy.redis.key_prefix, policy.service, "a", ttl_s=3.0)
        b = Lease(client, policy.redis.key_prefix, policy.service, "b", ttl_s=3.0)
        assert await a.ensure()
        epoch_a = dns.take_over(context=ctx("a")).epoch
        assert dns.reconcile(drain, context=ctx("a", epoch_a)).status == Status.APPLIED
        old = fresh_sentinels.current_primary()
        fresh_sentinels.kill(old)
        await eventually_async(lambda: fresh_sentinels.current_primary() != old, "the replica promoted", timeout_s=30.0)

        async def someone_leads() -> bool:
            try:
                return await a.ensure() or await b.ensure()
            except store.TRANSIENT:
                return False

        deadline = time.monotonic() + 30.0
        while not await someone_leads():
            assert time.monotonic() < deadline, "no controller could take the lease after the failover"
        assert not (a.held and b.held)
        if b.held:  # the lease did not survive the failover: b is the new leader, a is fenced out of DNS
            epoch_b = dns.take_over(context=ctx("b")).epoch
            assert dns.reconcile({"r1": {"r1": 1.0}, "r2": {"r2": 1.0}}, context=ctx("a", epoch_a)).status == (
                Status.FENCED
            )
            assert epoch_a is not None and epoch_b == epoch_a + 1
        shown = dns.current_matrix() or {}
        assert abs(shown["r1"]["r2"] - 0.5) < 0.01 and shown["r2"]["r2"] == 1.0  # the drain is still in DNS
    finally:
        await client.aclose()


def ctx(writer: str, epoch: int | None = None) -> ReconcileContext:
    return ReconcileContext("t", "", time.monotonic() + 30.0, "plan", epoch=epoch, writer=writer)


async def test_redis_cluster_carries_live_capacity(cluster_client: tuple[Policy, Any]) -> None:
    """Live capacity figures (one hash per region and time bucket, the region's hash tag) round-trip on a cluster."""
    from trafficd.policy.capacity import Capacity, CapacityFields
    from trafficd.stats import capacity_store
    from trafficd.stats.capacity import worker_figures

    base, client = cluster_client
    policy = base.model_copy(update={"capacity": CapacityFields(max_concurrency=10)})
    now = time.time()
    for r, running in (("r1", 4.0), ("r2", 8.0)):
        fig = worker_figures(running, 0.0, 10.0, None, running, Capacity(max_concurrency=10), at=now)
        await capacity_store.write(client, policy, r, {"w1": fig}, now)
    read = await capacity_store.read(client, policy, now + 1.0)
    assert (read["r1"].source, read["r1"].load_rps, read["r2"].load_rps) == ("live", 4.0, 8.0)
