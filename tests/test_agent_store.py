"""The agent writing to the real store: samples and heartbeats reach redis-server and read back as evidence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kit import eventually_async
from probekit import ScriptedWorker, make_policy, wait_until

from trafficd import keys
from trafficd.probe.agent import run_agent
from trafficd.stats.store import StatsView, redis_client


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
        beats = await client.hgetall(keys.heartbeat_key(key_prefix, policy.policy.service, "r1"))
        assert b"agent-redis" in beats
        evidence = (await StatsView(client, policy.policy).evidence(time.time()))["r1"]
    finally:
        stop.set()
        await client.aclose()
    assert not evidence.unreadable
    assert evidence.n == len(worker.arrivals)
    assert evidence.errors == worker.scenarios_seen.count("s503") > 0


async def test_reloaded_slo_threshold_applies_to_samples_written_after_it(
    worker: ScriptedWorker, redis_url: str, key_prefix: str, tmp_path: Any
) -> None:
    """After a SIGHUP-style reload from a 1 ms to a 10 s SLO, new samples are no longer counted over the SLO."""
    from trafficd.runtime.reload import PolicyHolder

    loaded = make_policy(
        [{"name": "good", "url": f"{worker.url}/ok"}],
        probe={"interval": "100ms", "jitter": "0%"},
        slo={"total_p99": "1ms"},
        redis={"url": redis_url, "key_prefix": key_prefix},
    )
    path = tmp_path / "policy.yaml"
    path.write_text(_dump(loaded))
    holder = PolicyHolder(path, loaded)
    client = redis_client(loaded.policy.redis)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(holder, "r1", stop=stop, agent_id="agent-reload"))
    try:
        view = StatsView(client, loaded.policy)

        async def evidence(min_n: int) -> Any:
            async def enough() -> Any:
                ev = (await view.evidence(time.time()))["r1"]
                return ev if ev.n >= min_n else None

            return await eventually_async(enough, f"at least {min_n} samples in the window")

        first = await evidence(3)
        assert first.n >= 3 and first.over_slo_fraction == 1.0
        path.write_text(path.read_text().replace("total_p99: 1ms", "total_p99: 10s"))
        assert holder.reload()
        later = await evidence(first.n + 5)
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        stop.set()
        await client.aclose()
    assert later.n > first.n
    assert later.over_slo_fraction < 1.0  # the samples written after the reload are under the new 10 s SLO


def _dump(loaded: Any) -> str:
    import yaml

    return yaml.safe_dump(loaded.policy.model_dump(mode="json", exclude_none=True))
