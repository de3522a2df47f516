"""End to end: real agent and controller processes, redis-server, moto server and fake workers.

The demo's own orchestration (`trafficd.dev.demo`) runs here with short intervals, so the demo and this test can
never drift apart: a slow region must be drained in Route 53 and restored once it is fast again.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kit import eventually, log_events

from trafficd.control.lease import lease_key
from trafficd.dev.demo import DEMO_USERS, run_demo
from trafficd.dev.stack import REGIONS, TEST_TIMING, set_worker, started_stack
from trafficd.dns.route53 import client as r53client
from trafficd.dns.route53 import provider as route53
from trafficd.policy.schema import load_policy

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

FAST = TEST_TIMING


def test_slow_region_is_drained_then_restored(redis_url: str, tmp_path: Path) -> None:
    """A region made slow is drained to weight 0 in Route 53 while the others keep 255, then ramps back to 255;
    the simulated users follow the weights (us-east's all served at home, some of eu-west's by its neighbours)
    and each region's load line shows the req/s its worker measured (us-east's over twice eu-west's); the decisions
    carry the live capacity figures the agents read from the workers' vLLM metrics."""
    out = io.StringIO()
    result = run_demo(timing=FAST, redis_url=redis_url, slow_region="eu-west", workdir=tmp_path, out=out)
    transcript = out.getvalue()
    assert result.drained, transcript
    assert result.restored, transcript

    weights = [w for _, w in result.weights_seen]
    # the others never stopped serving their own users
    for region in REGIONS:
        if region != "eu-west":
            assert all(w.get(region) == 255 for w in weights), transcript
    # the drain and the restore went in steps, not a snap between 255 and 0
    eu = [w["eu-west"] for w in weights]
    assert any(v not in (0, 255) for v in eu), f"no intermediate weight in {eu}"

    shifts = [e for e in result.events if e.get("event") == "controller.weights_shifted"]
    assert shifts, transcript
    for e in shifts:  # every decision carries its inputs
        for key in ("region", "p99_ms", "n", "error_rate", "state_before", "state_after", "policy_hash"):
            assert key in e, (key, e)
    assert {e["region"] for e in shifts} == {"eu-west"}

    # the demo's users (us-east has 5× eu-west's) follow Route 53; their load is measured at the workers
    assert DEMO_USERS["us-east"] == 5 * DEMO_USERS["eu-west"]
    measured = [rates for _, rates in result.loads_seen if all(v is not None for v in rates.values())]
    assert measured and "req/s" in transcript, transcript
    served = result.users_served
    assert set(served["us-east"]) == {"us-east"} and served["us-east"]["us-east"] > 0, served
    assert served["eu-west"].get("us-east", 0) + served["eu-west"].get("ap-southeast", 0) > 0, served
    assert result.completed["us-east"] > 2 * result.completed["eu-west"], result.completed
    # live capacity is on in the demo: every decision was judged with the region's measured load and headroom
    assert all(e.get("capacity", {}).get("source") in ("live", "stale", "missing") for e in shifts), shifts
    assert any(e["capacity"]["source"] == "live" and e["capacity"]["load_rps"] > 0 for e in shifts), shifts


def _wait(what: str, predicate: Callable[[], object], timeout_s: float) -> None:
    eventually(predicate, what, timeout_s=timeout_s, interval_s=0.2)


def _last_state(path: Path, region: str) -> str | None:
    judged = [
        e
        for e in log_events(path)
        if e.get("event") in ("controller.region_judged", "controller.weights_shifted") and e.get("region") == region
    ]
    return str(judged[-1]["state_after"]) if judged else None


def test_dead_agent_holds_and_a_standby_controller_finishes_the_drain(redis_url: str, tmp_path: Path) -> None:
    """A killed agent makes its region unknown (weights held); killing the leader mid-drain, the standby takes over
    from the stored state and drains as far as the one healthy neighbour's capacity allows (60 %), no further."""
    with started_stack(timing=FAST, redis_url=redis_url, workdir=tmp_path) as (stack, policy_file, ports):
        policy = load_policy(policy_file).policy
        r53 = r53client.route53_client(policy)
        stack.spawn("controller-b", ["--log-level", "DEBUG", "controller", "--policy", str(policy_file)])
        logs = {name: tmp_path / f"{name}.log" for name in ("controller", "controller-b")}

        client = redis.Redis.from_url(redis_url, decode_responses=True)

        def leader() -> str | None:
            """Which of the two controller processes holds the lease (its value is host:pid:token)."""
            holder = client.get(lease_key(policy.redis.key_prefix, policy.service))
            if holder is None:
                return None
            pid = int(str(holder).split(":")[1])
            return next((n for n in logs if stack.procs[n].pid == pid), None)

        _wait(
            "a leader judging every region healthy",
            lambda: (
                leader() is not None
                and all(_last_state(logs[leader() or "controller"], r) == "healthy" for r in REGIONS)
            ),
            40,
        )

        os.killpg(stack.procs["agent-ap-southeast"].pid, signal.SIGKILL)
        _wait(
            "ap-southeast unknown", lambda: _last_state(logs[leader() or "controller"], "ap-southeast") == "unknown", 30
        )
        assert route53.own_weights(policy, r53) == {r: 255 for r in REGIONS}  # unknown holds

        set_worker(ports["eu-west"], ttft_ms=FAST.slow_ttft_ms)
        _wait("eu-west draining", lambda: (route53.own_weights(policy, r53)["eu-west"] or 255) < 255, 40)
        first = leader()
        assert first is not None
        os.killpg(stack.procs[first].pid, signal.SIGKILL)
        other = "controller-b" if first == "controller" else "controller"
        _wait("the standby to take the lease", lambda: leader() == other, 30)
        # ap-southeast is unknown, so only us-east (headroom 60 %) may take eu-west's users: serving floor 0.4
        floor = round(255 * 0.4)
        _wait(
            "the new leader to drain to the capacity limit",
            lambda: route53.own_weights(policy, r53)["eu-west"] == floor,
            40,
        )
        taken = log_events(logs[other])
        assert any(e.get("event") == "controller.state_loaded" for e in taken)  # continued, did not restart
        assert _capacity_bit(logs[other])
        assert route53.own_weights(policy, r53) == {"us-east": 255, "eu-west": floor, "ap-southeast": 255}


def _capacity_bit(log: Path) -> bool:
    """The new leader's last eu-west decision holds at serving 0.4 because of the capacity guard."""
    judged = [e for e in log_events(log) if e.get("region") == "eu-west" and "serving_fraction_after" in e]
    return (
        bool(judged) and "capacity" in judged[-1]["guards"] and abs(judged[-1]["serving_fraction_after"] - 0.4) < 1e-6
    )
