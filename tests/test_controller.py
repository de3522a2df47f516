"""The controller loop against real redis-server and moto server: leadership, dry-run, outages, reload, state.

Samples are written with the agents' real `SampleSink`; each evaluation is driven with `evaluate_once()` so the
test decides when the loop turns (no sleeps), while every adapter underneath is the real one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from ctlkit import REGIONS, bootstrapped, feed
from kit import eventually_async
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trafficd.control.controller import Controller
from trafficd.dev.services import RedisServer
from trafficd.dns.route53 import client as r53client
from trafficd.dns.route53.provider import own_weights
from trafficd.policy.schema import load_policy
from trafficd.runtime.reload import PolicyHolder
from trafficd.stats import store


@pytest.fixture
def setup(redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path) -> Any:
    path, loaded = bootstrapped(tmp_path, redis_url, key_prefix, hosted_zone, moto.url)
    return path, loaded, r53client.route53_client(loaded.policy)


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


async def test_breaching_region_is_shifted_in_route53_with_inputs_logged(setup: Any) -> None:
    """A region over the SLO loses half its own weight in one evaluation; the decision event carries its inputs."""
    path, loaded, r53 = setup
    ctl = Controller(PolicyHolder(path, loaded))
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # taking the lease and the writer epoch: judges nothing, sends no weight
    with capture_logs() as logs:
        await ctl.evaluate_once()
    await ctl.shutdown()
    assert own_weights(loaded.policy, r53) == {"us-east": 255, "eu-west": 128, "ap-southeast": 255}
    (shift,) = events(logs, "controller.weights_shifted")
    assert shift["region"] == "eu-west" and shift["n"] == 20 and shift["p99_ms"] > 3000
    assert shift["serving_fraction_before"] == 1.0 and shift["serving_fraction_after"] == 0.5
    assert shift["policy_hash"] == loaded.hash and shift["lease_token"] is not None
    assert {"error_rate", "state_before", "state_after", "weights_before", "weights_after", "decided_by"} <= set(shift)
    (summary,) = events(logs, "controller.evaluated")  # one summary per evaluation
    assert summary["dns"] == "applied" and summary["dns_changes"] == 2 and summary["fail_open"] is False


async def test_dry_run_decides_and_logs_but_writes_no_dns(setup: Any) -> None:
    """With --dry-run the same shift is decided and logged (dry_run=true) but Route 53 keeps every weight."""
    path, loaded, r53 = setup
    ctl = Controller(PolicyHolder(path, loaded), dry_run=True)
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    with capture_logs() as logs:
        await ctl.evaluate_once()
    await ctl.shutdown()
    (shift,) = events(logs, "controller.weights_shifted")
    assert shift["region"] == "eu-west" and shift["dry_run"] is True
    assert own_weights(loaded.policy, r53) == {r: 255 for r in REGIONS}


async def test_standby_controller_writes_nothing_while_another_leads(setup: Any) -> None:
    """Of two controllers only the lease holder judges and writes; the other stays standby with no decision."""
    path, loaded, r53 = setup
    leader = Controller(PolicyHolder(path, loaded), controller_id="a")
    standby = Controller(PolicyHolder(path, loaded), controller_id="b")
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 200.0, "ap-southeast": 200.0})
    await leader.evaluate_once()
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    with capture_logs() as logs:
        await standby.evaluate_once()
    assert not events(logs, "controller.weights_shifted") and not events(logs, "controller.region_judged")
    assert own_weights(loaded.policy, r53) == {r: 255 for r in REGIONS}
    await leader.shutdown()  # releases the lease: the standby takes over at its next evaluation
    with capture_logs() as logs:
        await standby.evaluate_once()  # takes the lease: sends nothing in its first evaluation
        await standby.evaluate_once()
    await standby.shutdown()
    assert events(logs, "controller.held_at_start")
    assert [e["region"] for e in events(logs, "controller.weights_shifted")] == ["eu-west"]
    assert own_weights(loaded.policy, r53)["eu-west"] == 128


async def test_redis_outage_holds_and_writes_nothing(setup: Any, redis_server: RedisServer) -> None:
    """With Redis down the controller logs controller.redis_unavailable, makes no decision and leaves DNS alone."""
    path, loaded, r53 = setup
    ctl = Controller(PolicyHolder(path, loaded))
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 200.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()
    redis_server.stop()
    try:
        with capture_logs() as logs:
            await ctl.evaluate_once()
    finally:
        redis_server.start()
    assert events(logs, "controller.redis_unavailable")
    assert not events(logs, "controller.weights_shifted")
    assert own_weights(loaded.policy, r53) == {r: 255 for r in REGIONS}
    await ctl.shutdown()


async def test_state_survives_a_new_leader(setup: Any) -> None:
    """A second controller taking over continues from the stored state (eu-west keeps draining, not reset)."""
    path, loaded, r53 = setup
    first = Controller(PolicyHolder(path, loaded), controller_id="a")
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await first.evaluate_once()
    await first.evaluate_once()
    await first.shutdown()
    second = Controller(PolicyHolder(path, loaded), controller_id="b")
    with capture_logs() as logs:
        await second.evaluate_once(now=time.time() + 0.5)  # past the 100 ms per-region cooldown; sends nothing
        await second.evaluate_once(now=time.time() + 0.6)
    await second.shutdown()
    assert events(logs, "controller.state_loaded")
    shifts = events(logs, "controller.weights_shifted")
    assert [(e["serving_fraction_before"], e["serving_fraction_after"]) for e in shifts] == [(0.5, 0.0)]
    assert own_weights(loaded.policy, r53)["eu-west"] == 0


async def test_reloaded_policy_is_used_and_its_hash_logged(setup: Any) -> None:
    """After a reload listing eu-west in never_drain, its breach moves nothing (never_drain decides), new hash."""
    path, loaded, r53 = setup
    holder = PolicyHolder(path, loaded)
    ctl = Controller(holder)
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # takes the lease and the writer epoch
    path.write_text(path.read_text().replace("max_drained: 1}", "max_drained: 1, never_drain: [eu-west]}"))
    assert holder.reload() is True
    with capture_logs() as logs:
        await ctl.evaluate_once()
    await ctl.shutdown()
    judged = events(logs, "controller.region_judged")
    assert {e["region"] for e in judged} == set(REGIONS)
    assert {e["decided_by"] for e in judged if e["region"] == "eu-west"} == {"never_drain"}
    assert {e["policy_hash"] for e in judged} == {holder.hash} != {loaded.hash}
    assert own_weights(loaded.policy, r53) == {r: 255 for r in REGIONS}


async def test_dns_plan_shows_what_the_controller_would_change_now(setup: Any, capsys: Any) -> None:
    """`trafficd dns plan` (default --from controller) lists eu-west's next step from Redis and writes nothing."""
    import asyncio

    from trafficd.cli import build_parser

    path, loaded, r53 = setup
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    args = build_parser().parse_args(["dns", "plan", "--policy", str(path), "--json"])
    capsys.readouterr()
    with capture_logs():
        assert await asyncio.to_thread(args.func, args) == 0
    out = json.loads(capsys.readouterr().out)
    changed = {c["after"]["set_identifier"]: c["after"]["weight"] for c in out["changes"]}
    assert changed == {"eu-west-to-eu-west": 128, "eu-west-to-us-east": 128}
    assert own_weights(loaded.policy, r53) == {r: 255 for r in REGIONS}


async def test_status_shows_leader_states_weights_and_overrides(setup: Any, capsys: Any) -> None:
    """`trafficd status` shows the lease holder, eu-west draining at 0.5 with weight 128, and a manual freeze."""
    import asyncio

    from trafficd.cli import build_parser
    from trafficd.control import overrides as ov
    from trafficd.model import Override

    path, loaded, _ = setup
    ctl = Controller(PolicyHolder(path, loaded), controller_id="ctl-a")
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()
    await ctl.evaluate_once()
    client = store.redis_client(loaded.policy.redis)
    freeze = Override("freeze", None, "incident 42", time.time() + 600, created_by="alice")
    await ov.set_override(client, loaded.policy, freeze)
    await client.aclose()
    args = build_parser().parse_args(["status", "--policy", str(path), "--json"])
    capsys.readouterr()
    with capture_logs():
        assert await asyncio.to_thread(args.func, args) == 0
    data = json.loads(capsys.readouterr().out)
    await ctl.shutdown()
    assert data["leader"].startswith("ctl-a:")
    assert data["freeze"]["reason"] == "incident 42"
    eu = data["regions"]["eu-west"]
    assert eu["state"] == "draining" and eu["serving_fraction"] == 0.5 and eu["n"] == 20
    assert data["dns_weights"] == {"us-east": 255, "eu-west": 128, "ap-southeast": 255}
    args = build_parser().parse_args(["status", "--policy", str(path), "--no-dns"])
    with capture_logs():  # the controller has stopped: no leader, exit 3
        assert await asyncio.to_thread(args.func, args) == 3
    text = capsys.readouterr().out
    assert "FROZEN" in text and "eu-west" in text and "draining" in text


async def test_reload_that_changes_the_interval_reschedules_the_loop(setup: Any) -> None:
    """run_controller at a 10 s interval evaluates once; a reload to 200 ms makes it evaluate again within seconds."""
    import asyncio

    from trafficd.control.loop import run_controller

    path, _, _ = setup
    slow = path.read_text().replace("evaluate_every: 1s", "evaluate_every: 10s")
    path.write_text(slow.replace("lease_ttl: 5s", "lease_ttl: 30s"))  # the lease must outlive one interval
    holder = PolicyHolder(path, load_policy(path))
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_controller(holder, stop=stop))
        await eventually_async(lambda: events(logs, "controller.held_at_start"), "a first evaluation (taking over)")
        path.write_text(path.read_text().replace("evaluate_every: 10s", "evaluate_every: 200ms"))
        assert holder.reload()
        await eventually_async(
            lambda: len(events(logs, "controller.evaluated")) >= 2, "the new 200ms interval applied", timeout_s=5
        )
        stop.set()
        await asyncio.wait_for(task, 10)
    (changed,) = events(logs, "controller.interval_changed")
    assert changed["evaluate_every_s"] == 0.2


async def test_a_plan_route53_refused_is_held_and_not_walked_past(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While Route 53 refuses the batch (AccessDenied) the state stays put; once it works DNS moves one step only."""
    from trafficd.dns.provider import ReconcileResult, Status

    path, _, r53 = setup
    path.write_text(path.read_text().replace("max_step: 50%", "max_step: 25%"))
    loaded = load_policy(path)
    ctl = Controller(PolicyHolder(path, loaded))
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # builds the adapters, takes the lease
    await ctl.evaluate_once()  # shifts eu-west to 0.75
    assert own_weights(loaded.policy, r53)["eu-west"] == round(255 * 0.75)
    real = ctl.dns.reconcile
    monkeypatch.setattr(ctl.dns, "reconcile", lambda matrix, context: ReconcileResult(Status.DENIED))
    with capture_logs() as logs:
        for i in range(3):
            await ctl.evaluate_once(now=time.time() + 0.2 * (i + 1))
    held = events(logs, "controller.plan_held")
    assert len(held) == 3 and all(h["dns"] == "denied" for h in held)
    assert all(h["fractions_wanted"]["eu-west"] == 0.5 for h in held)  # the same next step, re-decided
    monkeypatch.setattr(ctl.dns, "reconcile", real)
    await ctl.evaluate_once(now=time.time() + 1.0)
    await ctl.shutdown()
    assert own_weights(loaded.policy, r53)["eu-west"] == round(255 * 0.5)  # one step, not a jump to 0
