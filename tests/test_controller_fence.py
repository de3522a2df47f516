"""Control logic on in-memory ports: the DNS fence at takeover, fenced batches, freeze, blind regions.

The DNS provider is `MemoryProvider` (Route 53's semantics: exact DELETE + CREATE, the writer epoch) and the
stats reader `MemoryStatsReader`; the lease, state and overrides use the real redis-server. No monkeypatching.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from ctlkit import REGIONS, policy_text
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trafficd.control import overrides as ov
from trafficd.control.controller import Controller, Ports
from trafficd.dns import records as rec
from trafficd.dns.memory import MemoryProvider
from trafficd.dns.provider import ReconcileContext, Status
from trafficd.model import Override, RegionEvidence, SliceCounts
from trafficd.policy.schema import LoadedPolicy, load_policy
from trafficd.runtime.reload import PolicyHolder
from trafficd.stats import store
from trafficd.stats.reader import MemoryStatsReader


def ok(region: str) -> RegionEvidence:
    """50 probes within the SLO (the judge decides on the exact per-slice counts, each slice once)."""
    return RegionEvidence(
        region=region, n=50, p50_ms=150.0, p99_ms=200.0, ttft_p99_ms=150.0, slices=(SliceCounts(1, 50),)
    )


def slow(region: str) -> RegionEvidence:
    """50 probes all over the SLO: far past the trip threshold in one slice."""
    return RegionEvidence(
        region=region, n=50, over_slo_fraction=1.0, p50_ms=5000.0, p99_ms=5000.0, slices=(SliceCounts(1, 50, 50),)
    )


@pytest.fixture
def loaded(redis_url: str, key_prefix: str, tmp_path: Path) -> LoadedPolicy:
    path = tmp_path / "policy.yaml"
    zone = {"id": "ZMEMORY", "name": "mem.example.com."}
    path.write_text(policy_text(redis_url, key_prefix, zone, "http://127.0.0.1:9"))
    return load_policy(path)


def controller(loaded: LoadedPolicy, dns: MemoryProvider, stats: MemoryStatsReader, name: str) -> Controller:
    ports = Ports(stats=lambda client, policy: stats, dns=lambda policy, writer: dns)
    return Controller(PolicyHolder(loaded.path, loaded), controller_id=name, ports=ports)


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


async def test_a_new_leader_takes_the_writer_epoch_and_a_deposed_writers_batch_is_fenced(loaded: LoadedPolicy) -> None:
    """A takes the lease and epoch 1, then sends eu-west's first step asserting it; while A is about to send its
    next step, B takes over (epoch 2): A's batch is refused whole (fenced), A logs it and never resends it."""
    dns = MemoryProvider.bootstrapped(loaded.policy)
    stats = MemoryStatsReader({r: ok(r) for r in REGIONS} | {"eu-west": slow("eu-west")}, regions=REGIONS)
    a = controller(loaded, dns, stats, "a")
    await a.evaluate_once()  # takes the lease and the epoch, sends no weight
    assert a.epoch == 1 and [w.cause for w in dns.history[-1:]] == ["takeover"]
    now = time.time()
    await a.evaluate_once(now=now + 0.2)
    assert [(w.writer, w.epoch) for w in dns.history[-1:]] == [("a", 1)]
    fractions = rec.own_weights(loaded.policy, dns.owned_records())
    assert fractions["eu-west"] == 128

    def b_takes_over() -> None:
        dns.before_write = None
        dns.take_over(context=ReconcileContext.for_cli("takeover", writer="b"))

    dns.before_write = b_takes_over
    written = len(dns.history)
    with capture_logs() as logs:
        await a.evaluate_once(now=now + 0.4)
        await a.evaluate_once(now=now + 0.6)  # re-reads and re-aligns: sends nothing
    (fenced,) = events(logs, "controller.fenced")
    assert fenced["deposed"] is True and fenced["epoch"] == 1 and fenced["epoch_seen"] == 2
    # B's takeover landed; A's step never did. A still holds the Redis lease here (B took over in DNS only), so it
    # takes a new epoch at its next evaluation and sends no weight in it
    assert [(w.writer, w.cause) for w in dns.history[written:]] == [("b", "takeover"), ("a", "takeover")]
    assert rec.own_weights(loaded.policy, dns.owned_records())["eu-west"] == 128
    assert events(logs, "controller.held_at_start") or events(logs, "controller.plan_held")
    await a.shutdown()


async def test_frozen_writes_nothing_not_even_to_correct_a_hand_edit(loaded: LoadedPolicy) -> None:
    """Frozen: a hand-edited owned record stays edited and a slow region is not drained; no batch is taken."""
    dns = MemoryProvider.bootstrapped(loaded.policy)
    stats = MemoryStatsReader({r: ok(r) for r in REGIONS}, regions=REGIONS)
    ctl = controller(loaded, dns, stats, "a")
    await ctl.evaluate_once()  # takes the epoch
    client = store.redis_client(loaded.policy.redis)
    await ov.set_override(client, loaded.policy, Override("freeze", None, "incident", time.time() + 600, "alice"))
    await client.aclose()
    own = next(r for r in dns.owned_records() if r.set_identifier == "eu-west-to-eu-west")
    dns.put(_with_weight(own, 200))
    stats.set({"eu-west": slow("eu-west")})
    taken = len(dns.history)
    with capture_logs() as logs:
        for i in range(3):
            await ctl.evaluate_once(now=time.time() + 0.2 * (i + 1))
    await ctl.shutdown()
    assert len(dns.history) == taken
    assert rec.own_weights(loaded.policy, dns.owned_records())["eu-west"] == 200
    assert {e["dns"] for e in events(logs, "controller.plan_held")} <= {"frozen", None}


def _with_weight(record: Any, weight: int) -> Any:
    from dataclasses import replace

    return replace(record, weight=weight)


async def test_a_blind_region_warns_once_per_episode_naming_the_silent_agent(loaded: LoadedPolicy) -> None:
    """ap-southeast's agent goes silent for three evaluations: one controller.region_blind naming it (and the
    weights held), then controller.region_sighted when its evidence is back."""
    dns = MemoryProvider.bootstrapped(loaded.policy)
    stats = MemoryStatsReader({r: ok(r) for r in REGIONS}, regions=REGIONS)
    stats.agents = {"ap-southeast": {"agent-ap-1": time.time() - 60.0, "agent-ap-2": time.time()}}
    ctl = controller(loaded, dns, stats, "a")
    await ctl.evaluate_once()
    stats.set({"ap-southeast": RegionEvidence(region="ap-southeast", n=0, stale=True)})
    with capture_logs() as logs:
        for i in range(3):
            await ctl.evaluate_once(now=time.time() + 0.2 * (i + 1))
        stats.set({"ap-southeast": ok("ap-southeast")})
        await ctl.evaluate_once(now=time.time() + 1.0)
    await ctl.shutdown()
    (blind,) = events(logs, "controller.region_blind")
    assert blind["region"] == "ap-southeast" and blind["silent_agents"] == ["agent-ap-1"]
    assert blind["log_level"] == "warning" and blind["serving_fraction_held"] == 1.0
    assert [e["region"] for e in events(logs, "controller.region_sighted")] == ["ap-southeast"]


async def test_route53_denied_holds_the_plan_and_moves_one_step_when_it_works(loaded: LoadedPolicy) -> None:
    """While the provider answers `denied` the state stays put (the same step re-decided); afterwards DNS moves one
    max_step only, never several at once."""
    dns = MemoryProvider.bootstrapped(loaded.policy)
    stats = MemoryStatsReader({r: ok(r) for r in REGIONS} | {"eu-west": slow("eu-west")}, regions=REGIONS)
    ctl = controller(loaded, dns, stats, "a")
    await ctl.evaluate_once()
    now = time.time()
    dns.script = [Status.DENIED] * 3
    with capture_logs() as logs:
        for i in range(3):
            await ctl.evaluate_once(now=now + 0.2 * (i + 1))
    held = events(logs, "controller.plan_held")
    assert [h["dns"] for h in held] == ["denied"] * 3
    assert all(h["fractions_wanted"]["eu-west"] == 0.5 for h in held)
    await ctl.evaluate_once(now=now + 1.0)
    await ctl.shutdown()
    assert rec.own_weights(loaded.policy, dns.owned_records())["eu-west"] == 128
