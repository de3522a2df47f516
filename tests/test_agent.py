"""The agent loop against real aiohttp workers and an in-memory sink: rounds, series, jitter, concurrency, logs."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from probekit import FakeSink, ScriptedWorker, make_policy, wait_until
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trafficd.probe.agent import AgentConfigError, run_agent


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


async def start(policy: Any, sink: FakeSink, stop: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(run_agent(policy, "r1", stop=stop, agent_id="agent-1", sink=sink, rng=random.Random(7)))


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


class Holder:
    """The PolicyHolder interface the agent reads: `.current` is the policy in force."""

    def __init__(self, current: Any) -> None:
        self.current = current


async def test_every_worker_and_model_is_probed_each_round(worker: ScriptedWorker) -> None:
    """Two workers × two models give four series per round, heartbeats each round, and counted rounds."""
    policy = make_policy(
        [{"name": "w1", "url": f"{worker.url}/ok"}, {"name": "w2", "url": f"{worker.url}/ok"}],
        probe={"interval": "200ms", "jitter": "50%"},
        models=["small", "large"],
    )
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = await start(policy, sink, stop)
        await wait_until(lambda: len(events(logs, "agent.round_completed")) >= 2, what="two rounds")
        stop.set()
        await asyncio.wait_for(task, 10)
    series = Counter((s.worker, s.model) for s in sink.samples)
    assert set(series) == {("w1", "small"), ("w1", "large"), ("w2", "small"), ("w2", "large")}
    assert all(s.ok and s.region == "r1" for s in sink.samples)
    assert len(sink.heartbeats) >= 2 and set(sink.heartbeats) == {("agent-1", "r1")}
    started = events(logs, "agent.started")[0]
    assert started["region"] == "r1" and started["models"] == ["small", "large"] and started["concurrency"] == "auto"
    done = events(logs, "agent.round_completed")[0]
    assert done["probes"] == 4 and done["ok"] == 4 and done["outcomes"] == {"ok": 4} and done["failed"] == 0
    assert events(logs, "agent.stopped")


async def test_each_model_is_its_own_series_with_its_own_deadlines(worker: ScriptedWorker) -> None:
    """Two model tiers on one worker: the tier with a 100 ms first-token deadline times out, the other does not."""
    policy = make_policy(
        [{"name": "w1", "url": f"{worker.url}/role_early"}],
        probe={"interval": "200ms"},
        models=["big", {"name": "fast", "deadlines": {"first_token": "100ms"}}],
    )
    sink, stop = FakeSink(), asyncio.Event()
    task = await start(policy, sink, stop)
    await wait_until(lambda: {s.model for s in sink.samples} == {"big", "fast"}, what="both models")
    stop.set()
    await asyncio.wait_for(task, 10)
    fast = [s for s in sink.samples if s.model == "fast"]
    big = [s for s in sink.samples if s.model == "big"]
    assert all(s.reason == "ttft_timeout" and s.ttft_ms == 100.0 for s in fast)
    assert all(s.ok and s.ttft_ms is not None and s.ttft_ms >= 300.0 for s in big)
    assert {b["model"] for b in worker.bodies} == {"big", "fast"}


async def test_failing_worker_is_sampled_logged_once_and_recovered(worker: ScriptedWorker) -> None:
    """A stalling series gives failed samples, one agent.series_failed, counts by outcome, then series_recovered."""
    probe = {"interval": "150ms", "jitter": "10%", "deadlines": {"gap": "100ms"}}
    policy = make_policy(
        [{"name": "good", "url": f"{worker.url}/ok"}, {"name": "bad", "url": f"{worker.url}/stall"}], probe=probe
    )
    healed = make_policy(
        [{"name": "good", "url": f"{worker.url}/ok"}, {"name": "bad", "url": f"{worker.url}/ok"}], probe=probe
    )
    holder, sink, stop = Holder(policy), FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = await start(holder, sink, stop)
        await wait_until(lambda: sum(s.worker == "bad" for s in sink.samples) >= 3, what="three failed samples")
        holder.current = healed
        await wait_until(lambda: bool(events(logs, "agent.series_recovered")), what="the recovery")
        stop.set()
        await asyncio.wait_for(task, 10)
    bad = [s for s in sink.samples if s.worker == "bad"]
    assert all(s.reason == "stall_timeout" and s.total_ms >= 100.0 for s in bad if not s.ok)
    failed = events(logs, "agent.series_failed")
    assert len(failed) == 1 and failed[0]["worker"] == "bad" and failed[0]["reason"] == "stall_timeout"
    (recovered,) = events(logs, "agent.series_recovered")
    assert recovered["worker"] == "bad" and recovered["was"] == "stall_timeout"
    rounds = [e for e in events(logs, "agent.round_completed") if e["probes"] == 2]
    assert rounds and rounds[0]["outcomes"] == {"ok": 1, "stall_timeout": 1}


async def test_rounds_do_not_wait_for_slow_probes(worker: ScriptedWorker) -> None:
    """With a 1 s first-token deadline and a 100 ms interval, rounds keep starting while probes hang."""
    policy = make_policy(
        [{"name": "hung", "url": f"{worker.url}/silent"}],
        probe={"interval": "100ms", "jitter": "0%", "deadlines": {"first_token": "1s"}},
    )
    sink, stop = FakeSink(), asyncio.Event()
    task = await start(policy, sink, stop)
    await wait_until(lambda: len(sink.heartbeats) >= 5, what="five rounds")
    assert len(worker.arrivals) >= 4 and not sink.samples  # probes overlap; none has finished yet
    await wait_until(lambda: len(sink.samples) >= 2, what="timed-out samples")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert all(s.reason == "ttft_timeout" and s.total_ms >= 1000.0 for s in sink.samples)


async def test_concurrency_is_bounded_and_excess_probes_skipped(worker: ScriptedWorker) -> None:
    """With concurrency 2, six 150 ms probes per 100 ms round never exceed 2 in flight; the rest are skipped."""
    policy = make_policy(
        [{"name": f"w{i}", "url": f"{worker.url}/slow"} for i in range(6)],
        probe={"interval": "100ms", "jitter": "0%", "concurrency": 2},
    )
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = await start(policy, sink, stop)
        await wait_until(lambda: len(events(logs, "agent.round_completed")) >= 3, what="three rounds")
        stop.set()
        await asyncio.wait_for(task, 10)
    assert worker.max_in_flight == 2
    assert any(e["skipped"] > 0 for e in events(logs, "agent.round_completed"))


async def test_jitter_spreads_probes_within_a_round(worker: ScriptedWorker) -> None:
    """With 50 % jitter on a 2 s interval, the eight probes of the first round do not arrive together."""
    # Offsets drawn over 1 s (eight draws span < 0.1 s with probability ~1e-6): only an event loop starved for most
    # of a second could bunch them; over 400 ms it failed once at load average 10.
    policy = make_policy(
        [{"name": f"w{i}", "url": f"{worker.url}/ok"} for i in range(8)],
        probe={"interval": "2s", "jitter": "50%"},
    )
    sink, stop = FakeSink(), asyncio.Event()
    task = await start(policy, sink, stop)
    await wait_until(lambda: len(worker.arrivals) >= 8, what="the first round's probes")
    stop.set()
    await asyncio.wait_for(task, 10)
    first = sorted(worker.arrivals[:8])
    assert first[-1] - first[0] > 0.1


async def test_sink_failure_keeps_samples_for_the_next_write(worker: ScriptedWorker) -> None:
    """A failing write is logged as agent.write_failed and its samples are written on the next flush."""
    policy = make_policy([{"name": "w1", "url": f"{worker.url}/ok"}], probe={"interval": "100ms", "jitter": "0%"})
    sink, stop = FakeSink(), asyncio.Event()
    sink.fail_writes = 1
    with capture_logs() as logs:
        task = await start(policy, sink, stop)
        await wait_until(lambda: len(sink.samples) >= 2, what="samples after the failure")
        stop.set()
        await asyncio.wait_for(task, 10)
    failed = events(logs, "agent.write_failed")
    assert len(failed) == 1 and failed[0]["samples"] >= 1
    assert len(sink.samples) == len(worker.arrivals)  # nothing lost


async def test_missing_api_key_stops_the_agent_with_a_config_error(
    worker: ScriptedWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API key variable that is not set raises AgentConfigError and logs agent.config_failed, probing nothing."""
    monkeypatch.delenv("TRAFFICD_TEST_MISSING_KEY", raising=False)
    policy = make_policy(
        [{"name": "w1", "url": f"{worker.url}/ok"}], probe={"auth": {"api_key_env": "TRAFFICD_TEST_MISSING_KEY"}}
    )
    with capture_logs() as logs, pytest.raises(AgentConfigError, match="TRAFFICD_TEST_MISSING_KEY"):
        await run_agent(policy, "r1", stop=asyncio.Event(), sink=FakeSink())
    assert events(logs, "agent.config_failed") and not worker.arrivals


async def test_reloaded_policy_applies_to_the_next_round(worker: ScriptedWorker) -> None:
    """Swapping the holder's policy (new worker list, new probe settings) takes effect without a restart."""
    first = make_policy([{"name": "old", "url": f"{worker.url}/ok"}], probe={"interval": "100ms"})
    second = make_policy([{"name": "new", "url": f"{worker.url}/ok"}], probe={"interval": "100ms", "max_tokens": 7})
    holder, sink, stop = Holder(first), FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_agent(holder, "r1", stop=stop, sink=sink, rng=random.Random(2)))
        await wait_until(lambda: any(s.worker == "old" for s in sink.samples), what="a sample from the old list")
        holder.current = second
        await wait_until(lambda: any(s.worker == "new" for s in sink.samples), what="a sample from the new list")
        stop.set()
        await asyncio.wait_for(task, 10)
    assert worker.bodies[-1]["max_tokens"] == 7
    assert events(logs, "agent.prober_replaced")
    hashes = {e["policy_hash"] for e in events(logs, "agent.round_completed")}
    assert hashes == {first.hash, second.hash}
