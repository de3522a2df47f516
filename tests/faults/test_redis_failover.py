"""Fault scenario (issue 18): the Redis primary behind Sentinel is killed in the middle of a drain.

The demo stack runs on a real Sentinel set (a redis-server primary, a replica, three Sentinels: the fixture of
`tests/redis_topologies.py`) instead of one redis-server; two controllers and three agents reach it through the
policy's `redis+sentinel://` URL. The independent auditor then checks the whole Route 53 history.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import log_events as events
from redis_topologies import SentinelSet

from trafficd import keys

from .auditor import Window
from .harness import FAST, Faults, fault_stack, wait

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults"), pytest.mark.timeout(240)]

LEASE_MARGIN_S = 3.5  # a leader writes only within 2/3 of its 5 s lease after its last renewal
# 2 s between steps (FAST has 1 s): the drain (255 → 168 → 84 → 0) lasts ~4 s, so the kill lands at its first
# step and at least one step must come after the promotion, even on a loaded machine
SLOWER_STEPS = dataclasses.replace(FAST, cooldown="2s")


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    s = SentinelSet().start()
    yield s
    s.stop()


def _per_slice_max() -> int:
    """The most samples one series can start in one slice: one a round (fixed rate), plus one that jitter
    carries over from the previous slice."""
    interval_s = float(FAST.probe_interval.removesuffix("ms")) / 1000.0
    return int(1.0 / interval_s) + 2


def _lease_tokens(f: Faults) -> list[int]:
    """The token of every `lease.acquired` in both controllers' logs, in time order."""
    got = [
        (str(e.get("timestamp")), int(e["token"]))
        for name in ("controller", "controller-b")
        for e in events(f.log(name))
        if e.get("event") == "lease.acquired"
    ]
    return [token for _, token in sorted(got)]


def _flushed(f: Faults, agent: str) -> bool:
    """The agent's sample sink wrote what it buffered during an outage (`store.buffer_flushed`)."""
    return any(e.get("event") == "store.buffer_flushed" for e in events(f.log(agent)))


def test_primary_killed_mid_drain_the_drain_resumes_with_one_writer(tmp_path: Path, sentinels: SentinelSet) -> None:
    """Mid-drain the Redis primary is SIGKILLed; the Sentinels promote the replica: nothing is written while no
    lease can be held, one leader (the same or a new lease token) finishes the drain in steps, the controller
    state shows eu-west drained, and the samples the agents buffered meanwhile land once (no slice over what one
    series can start in it; the outage's slices filled)."""
    with fault_stack(tmp_path, redis_url=sentinels.url, timing=SLOWER_STEPS) as f:
        f.controller("controller-b")
        f.healthy_and_led()
        f.slow("eu-west")
        wait("eu-west mid-drain", lambda: 0 < (f.weights()["eu-west"] or 255) < 255, 60)
        mid = f.weights()["eu-west"]
        old = sentinels.current_primary()
        killed = time.time()
        primary = sentinels.procs.pop(old)
        os.killpg(primary.pid, signal.SIGKILL)  # dies at once: no shutdown, no last sync with the replica
        primary.wait(10)
        promoted = wait("the replica promoted", lambda: sentinels.current_primary() != old, 30)
        if promoted > killed + LEASE_MARGIN_S:  # nobody can renew a lease against a dead primary
            f.windows.append(Window("primary_down", killed + LEASE_MARGIN_S, promoted))
        wait("a leader after the failover", lambda: f.leader() is not None, 30)
        wait("eu-west drained", lambda: f.weights()["eu-west"] == 0, 60)
        resumed = [b for b in f.proxy.accepted_batches if b.zone_id == f.policy.dns.zone_id and b.at > promoted]
        assert resumed, "no step of the drain after the promotion"
        wait("us-east's buffered samples flushed", lambda: _flushed(f, "agent-us-east"), 30)
        counts = f.slice_counts("us-east")

        # the lease: re-taken with a higher token, or kept; never two holders (the auditor checks epochs)
        tokens = _lease_tokens(f)
        assert tokens and all(a < b for a, b in itertools.pairwise(tokens))

        # controller state: in Redis after the failover, eu-west drained
        # (saved after Route 53 took the step, so it may trail the weight read above by one write)
        def saved_state() -> dict[str, Any] | None:
            raw = f.redis.get(keys.controller_state_key(f.policy.redis.key_prefix, f.policy.service))
            return None if raw is None else dict(json.loads(raw)["regions"]["eu-west"])

        wait("the drained state saved", lambda: (saved_state() or {}).get("serving_fraction") == 0.0, 15)
        state = saved_state()
        assert state is not None
        assert state["name"] in ("draining", "drained") and state["serving_fraction"] == 0.0
        # samples: none counted twice; the slices probed while the primary was down hold their samples
        assert counts and max(counts.values()) <= _per_slice_max(), counts
        # every slice from the kill to the promotion is complete now: ~6.7 samples each (one a 150 ms round) when
        # the buffered ones landed; those wholly inside the outage would be empty had the buffer been lost
        outage = [counts.get(sid, 0) for sid in range(int(killed), int(promoted) + 1)]
        assert len(outage) >= 2 and all(n >= 3 for n in outage), (outage, sorted(counts.items()), killed, promoted)
        extra = (
            f"eu-west at {mid} when the primary died, {len(resumed)} batch(es) after the promotion;"
            f" promoted after {promoted - killed:.1f}s; lease tokens {tokens};"
            f" us-east samples a slice from the kill to the promotion {outage} (at most {_per_slice_max()})"
        )
        assert f.audit("redis_failover_mid_drain", extra) == []
