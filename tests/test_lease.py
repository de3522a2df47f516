"""The Redis leader lease: one holder at a time, increasing fencing tokens, renewal, release and takeover."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from kit import eventually_async

from trafficd.control.lease import Lease, lease_key


async def _gone(client: Any, key: str) -> bool:
    return not await client.exists(key)


async def test_only_one_controller_holds_the_lease(redis_url: str, key_prefix: str) -> None:
    """Of two contenders the first acquires, the second stays standby while the first keeps renewing."""
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, key_prefix, "svc", "a", ttl_s=2.0)
    b = Lease(client, key_prefix, "svc", "b", ttl_s=2.0)
    assert await a.ensure() is True
    assert await b.ensure() is False
    assert await a.ensure() is True  # renewal
    assert a.held and not b.held
    assert (await a.current_holder() or "").startswith("a:")
    await client.aclose()


async def test_release_lets_the_other_take_over_with_a_larger_token(redis_url: str, key_prefix: str) -> None:
    """After the leader releases, the standby acquires with a strictly larger fencing token."""
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, key_prefix, "svc", "a", ttl_s=5.0)
    b = Lease(client, key_prefix, "svc", "b", ttl_s=5.0)
    assert await a.ensure()
    first = a.token
    await a.release()
    assert not a.held
    assert await b.ensure()
    assert b.token is not None and first is not None and b.token > first
    await client.aclose()


async def test_expired_lease_is_taken_over_and_the_old_leader_steps_down(redis_url: str, key_prefix: str) -> None:
    """When the leader stops renewing, its lease expires, another takes it and the old one cannot renew."""
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, key_prefix, "svc", "a", ttl_s=0.3)
    b = Lease(client, key_prefix, "svc", "b", ttl_s=5.0)
    assert await a.ensure()
    await eventually_async(
        lambda: _gone(client, lease_key(key_prefix, "svc")), "the lease key to expire", timeout_s=5.0
    )
    assert await b.ensure()
    assert await a.ensure() is False  # a paused ex-leader wakes up: it must not believe it still leads
    assert not a.held
    await client.aclose()


async def test_standby_attempts_do_not_consume_fencing_tokens(redis_url: str, key_prefix: str) -> None:
    """Tokens grow by one per acquisition only: ten failed standby attempts leave the next token at 2."""
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, key_prefix, "svc", "a", ttl_s=5.0)
    b = Lease(client, key_prefix, "svc", "b", ttl_s=5.0)
    assert await a.ensure() and a.token == 1
    for _ in range(10):
        assert await b.ensure() is False
    await a.release()
    assert await b.ensure() and b.token == 2
    await client.aclose()
