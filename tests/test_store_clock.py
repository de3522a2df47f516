"""Per-agent clock judgement against a real redis-server: a skewed agent is re-stamped, its region unaffected."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs
from test_store import make_policy, sample

from trafficd import keys
from trafficd.policy.schema import Policy
from trafficd.runtime import metrics
from trafficd.stats import store


@pytest.fixture
def policy(redis_url: str, key_prefix: str) -> Policy:
    return make_policy(redis_url, key_prefix)


@pytest.fixture
async def client(policy: Policy) -> AsyncIterator[Any]:
    c = store.redis_client(policy.redis)
    yield c
    await c.aclose()


def ahead_90s() -> float:
    return time.time() + 90.0


async def test_an_agent_90s_ahead_is_restamped_and_its_region_keeps_both_agents(policy: Policy, client: Any) -> None:
    """Two agents of one region, one with its clock +90 s: nothing is rejected, the region stays fresh with every
    sample of both, and an event and a metric name the skewed agent and its offset (the good one stays at ~0)."""
    good = store.SampleSink(client, policy, agent_id="agent-good")
    skewed = store.SampleSink(client, policy, agent_id="agent-skewed", clock=ahead_90s)
    view = store.StatsView(client, policy)
    written = 0
    with capture_logs() as logs:
        for _ in range(30):  # 3 s of rounds, each agent stamping its samples with its own clock
            for sink, clock in ((good, time.time), (skewed, ahead_90s)):
                batch = [sample("r1", "w1", "m1", clock() - i * 0.01, 200.0) for i in range(5)]
                await sink.write(batch)
                await sink.heartbeat(sink.agent_id, "r1")
                written += len(batch)
            evidence = (await view.evidence(time.time()))["r1"]
            assert not evidence.stale, evidence
            assert evidence.newest_sample_age_s is not None and evidence.newest_sample_age_s < 1.5
            await _pause(0.1)
    indexed = 0  # every sample of both agents is in the region's index (none lost, none filed in the future)
    async for key in client.scan_iter(match=keys.region_base(policy.redis.key_prefix, policy.service, "r1") + ":idx:*"):
        indexed += sum(int(v) for v in (await client.hgetall(key)).values())
    assert indexed == written
    assert view.regions["r1"].rejected_total == 0
    assert not [e for e in logs if e["event"] == "store.samples_rejected_clock_skew"]
    (skew_event,) = [e for e in logs if e["event"] == "store.agent_clock_skewed"]
    assert skew_event["agent_id"] == "agent-skewed" and skew_event["action"] == "restamped"
    assert skew_event["offset_s"] == pytest.approx(90.0, abs=1.0)
    assert (skewed.restamping, good.restamping) == (True, False)
    assert skewed.restamped_total == written // 2 and good.restamped_total == 0
    offset = metrics.AGENT.get_sample_value("trafficd_agent_clock_offset_seconds", {"agent_id": "agent-skewed"})
    assert offset == pytest.approx(90.0, abs=1.0)
    good_offset = metrics.AGENT.get_sample_value("trafficd_agent_clock_offset_seconds", {"agent_id": "agent-good"})
    assert good_offset is not None and abs(good_offset) < 1.0
    beats = view.extras["r1"].heartbeats
    assert set(beats) == {"agent-good", "agent-skewed"}
    assert all(abs(t - time.time()) < 5.0 for t in beats.values())  # the skewed heartbeat is on Redis's clock too


async def test_a_clock_that_comes_back_stops_the_restamping(policy: Policy, client: Any) -> None:
    """When the agent's clock is corrected the sink logs store.agent_clock_recovered and writes stamps as given."""
    offset = [90.0]
    sink = store.SampleSink(client, policy, agent_id="agent-fixed", clock=lambda: time.time() + offset[0])
    with capture_logs() as logs:
        await sink.heartbeat("agent-fixed", "r1")
        assert sink.restamping
        offset[0] = 0.0
        sink._clock_checked_at = float("-inf")  # the next check is due now rather than in CLOCK_CHECK_EVERY_S
        await sink.heartbeat("agent-fixed", "r1")
    assert not sink.restamping
    assert [e["event"] for e in logs if e["event"].startswith("store.agent_clock")] == [
        "store.agent_clock_skewed",
        "store.agent_clock_recovered",
    ]


async def _pause(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)  # the pace of the simulated probe rounds, not a wait for a condition
