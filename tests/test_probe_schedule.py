"""Probe scheduling at scale: stable shards that split a region's series exactly once, the concurrency a round
needs, and one warning per episode (plus a metric) when the agent skips probes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from probekit import FakeSink, ScriptedWorker, make_policy, wait_until
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trafficd.cli import main as cli
from trafficd.probe.agent import run_agent
from trafficd.probe.schedule import (
    CAUGHT_UP_AFTER_S,
    Shard,
    ShardError,
    SkipWatch,
    needed_concurrency,
    shard_of,
    split_region_arg,
)
from trafficd.runtime import metrics


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


def test_shards_split_a_thousand_series_exactly_once_and_evenly() -> None:
    """Every one of 1,000 series belongs to exactly one of 3 shards, 333 ± 50 each, and the same one every time."""
    series = [(f"worker-{i}", m) for i in range(500) for m in ("small", "large")]
    shards = [Shard(i, 3) for i in (1, 2, 3)]
    owners = [[s for s in shards if s.owns(w, m)] for w, m in series]
    assert all(len(o) == 1 for o in owners)
    sizes = Counter(o[0].index for o in owners)
    assert all(283 <= n <= 383 for n in sizes.values())
    assert shard_of("worker-7", "small", 3) == shard_of("worker-7", "small", 3)
    assert all(Shard().owns(w, m) for w, m in series)


def test_shard_specs_parse_or_say_what_is_expected() -> None:
    """I/N and IofN parse; 0/3, 4/3 and words are refused with the expected form; R:IofN splits the region."""
    assert Shard.parse("2/3") == Shard(2, 3) == Shard.parse("2of3")
    for bad in ("0/3", "4/3", "one", "1/0"):
        with pytest.raises(ShardError, match=r"e\.g\. 1/3"):
            Shard.parse(bad)
    assert split_region_arg("us-east:2of3") == ("us-east", Shard(2, 3))
    assert split_region_arg("us-east") == ("us-east", None)


def test_needed_concurrency_is_series_times_duration_over_interval() -> None:
    """200 series of 780 ms at a 500 ms interval need 390 in flight (with 25 % headroom), never fewer than 1."""
    assert needed_concurrency(200, 0.78, 0.5) == 390
    assert needed_concurrency(0, 1.0, 0.5) == 1


def test_a_bad_shard_is_a_usage_error(capsys: Any) -> None:
    """`trafficd agent --shard 4/3` exits 2 naming the expected form, before reading the policy."""
    assert cli(["agent", "--policy", "/nonexistent.yaml", "--region", "r1", "--shard", "4/3"]) == 2
    assert "e.g. 1/3" in capsys.readouterr().err


async def test_two_shards_probe_every_series_once(worker: ScriptedWorker) -> None:
    """Agents 1/2 and 2/2 of one region probe disjoint series that together are all eight."""
    policy = make_policy([{"name": f"w{i}", "url": f"{worker.url}/ok"} for i in range(8)], probe={"interval": "200ms"})
    sinks, stop = [FakeSink(), FakeSink()], asyncio.Event()
    tasks = [
        asyncio.create_task(
            run_agent(
                policy, "r1", stop=stop, agent_id=f"a{i}", sink=sinks[i - 1], rng=random.Random(i), shard=Shard(i, 2)
            )
        )
        for i in (1, 2)
    ]
    everything = {(f"w{i}", "m1") for i in range(8)}
    seen = [lambda s=s: {(x.worker, x.model) for x in s.samples} for s in sinks]
    await wait_until(lambda: seen[0]() | seen[1]() == everything, what="every series probed")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert not seen[0]() & seen[1]() and seen[0]() | seen[1]() == everything


async def test_skipped_probes_warn_once_per_episode_and_are_counted(worker: ScriptedWorker) -> None:
    """Concurrency 1 for six 150 ms probes per 100 ms round: one agent.falling_behind (with the concurrency needed)
    for many skipping rounds, and trafficd_probes_skipped_total grows by every skipped probe."""
    policy = make_policy(
        [{"name": f"w{i}", "url": f"{worker.url}/slow"} for i in range(6)],
        probe={"interval": "100ms", "jitter": "0%", "concurrency": 1},
        models=["m"],
    )
    region = "r1"
    before = metrics.PROBES_SKIPPED.labels(region)._value.get()
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_agent(policy, region, stop=stop, agent_id="a", sink=sink, rng=random.Random(3)))
        await wait_until(lambda: len(events(logs, "agent.round_completed")) >= 4, what="four rounds")
        stop.set()
        await asyncio.wait_for(task, 10)
    rounds = events(logs, "agent.round_completed")
    skipped = sum(e["skipped"] for e in rounds)
    warned = events(logs, "agent.falling_behind")
    assert sum(1 for e in rounds if e["skipped"]) >= 2 and len(warned) == 1
    assert warned[0]["concurrency"] == 1 and warned[0]["needed_concurrency"] >= 1 and "--shard" in warned[0]["hint"]
    assert metrics.PROBES_SKIPPED.labels(region)._value.get() - before >= skipped


def test_a_host_that_skips_every_few_rounds_stays_in_one_episode() -> None:
    """Skips every 5th round of 1 s for 10 minutes are one episode (one warning, no caught_up); caught_up comes
    once rounds have skipped nothing for CAUGHT_UP_AFTER_S."""
    with capture_logs() as logs:
        watch = SkipWatch("r1", structlog.get_logger())
        k = 0
        for k in range(600):
            skipped = 1 if k % 5 == 0 else 0
            watch.round_done(round_number=k, probes=4, skipped=skipped, concurrency=4, interval_s=1.0, mean_probe_s=0.5)
        assert [e["event"] for e in logs] == ["agent.falling_behind"]
        for j in range(k + 1, k + 1 + int(CAUGHT_UP_AFTER_S)):
            watch.round_done(round_number=j, probes=4, skipped=0, concurrency=4, interval_s=1.0, mean_probe_s=0.5)
    assert [e["event"] for e in logs] == ["agent.falling_behind", "agent.caught_up"]
    assert logs[-1]["skipped"] == 120
