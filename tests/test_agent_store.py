"""The agent writing to the real store: samples and heartbeats reach redis-server and read back as evidence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from probekit import ScriptedWorker, make_policy, wait_until

from trafficd import keys
from trafficd.agent import run_agent
from trafficd.store import StatsView, redis_client


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


async def test_agent_samples_and_heartbeats_reach_redis(
    worker: ScriptedWorker, redis_url: str, key_prefix: str
) -> None:
    """An agent with the default (Redis) sink writes a heartbeat and samples that StatsView reads back per region."""
    policy = make_policy(
        [{"name": "good", "url": f"{worker.url}/ok"}, {"name": "bad", "url": f"{worker.url}/s503"}],
        probe={"interval": "100ms", "jitter": "20%"},
        redis={"url": redis_url, "key_prefix": key_prefix},
    )
    client = redis_client(policy.policy.redis)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(policy, "r1", stop=stop, agent_id="agent-redis"))
    try:
        await wait_until(lambda: len(worker.arrivals) >= 8, what="eight probes")
        stop.set()
        await asyncio.wait_for(task, 10)
        beats = await client.hgetall(keys.heartbeat_key(key_prefix, "r1"))
        assert b"agent-redis" in beats
        evidence = (await StatsView(client, policy.policy).evidence(time.time()))["r1"]
    finally:
        stop.set()
        await client.aclose()
    assert not evidence.unreadable
    assert evidence.n == len(worker.arrivals)
    assert evidence.errors == worker.scenarios_seen.count("s503") > 0
