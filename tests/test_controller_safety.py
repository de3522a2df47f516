"""What a controller must never do: reset DNS at start, write in dry-run, outlive SIGTERM, ping a stuck watchdog.

Real redis-server and moto server; evaluations are driven with `evaluate_once()` or the real loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ctlkit import feed
from structlog.testing import capture_logs
from test_controller import events, setup  # noqa: F401 - the fixture is used by name

from trafficd import keys
from trafficd.control import presence
from trafficd.control.controller import Controller, Ports
from trafficd.control.loop import run_controller
from trafficd.dns.memory import MemoryProvider
from trafficd.dns.provider import ReconcileContext, ReconcileResult, Status
from trafficd.dns.route53.provider import Route53Provider, own_weights
from trafficd.model import identity_matrix
from trafficd.policy.schema import load_policy
from trafficd.runtime.reload import PolicyHolder
from trafficd.stats import store

HEALTHY = {"us-east": 200.0, "eu-west": 200.0, "ap-southeast": 200.0}


def _drain_eu_in_route53(loaded: Any, r53: Any) -> None:
    matrix = identity_matrix(loaded.policy.region_names)
    matrix["eu-west"] = {"us-east": 0.5, "eu-west": 0.0, "ap-southeast": 0.5}
    provider = Route53Provider(loaded.policy, r53)
    context = ReconcileContext.for_cli("plan")
    epoch = provider.take_over(context=context).epoch
    assert provider.reconcile(matrix, context=dataclasses.replace(context, epoch=epoch)).status == Status.APPLIED


async def test_a_start_with_no_stored_state_keeps_a_drained_region_drained(setup: Any) -> None:  # noqa: F811
    """Redis empty, Route 53 has eu-west drained, every region healthy: the first evaluation writes nothing and
    eu-west comes back only through the normal recovery, one max_step (50 %) at a time — never 0 → 255."""
    path, loaded, r53 = setup
    _drain_eu_in_route53(loaded, r53)
    await feed(loaded.policy, HEALTHY)
    ctl = Controller(PolicyHolder(path, loaded))
    with capture_logs() as logs:
        await ctl.evaluate_once()
    assert own_weights(loaded.policy, r53)["eu-west"] == 0
    (started,) = events(logs, "controller.state_from_dns")
    assert started["serving"]["eu-west"] == 0.0
    seen: list[int] = []
    t = time.time()
    for i in range(12):  # hold-down 1 s, cooldown 100 ms
        await ctl.evaluate_once(now=t + 0.3 * (i + 1))
        weight = own_weights(loaded.policy, r53)["eu-west"]
        assert weight is not None  # the member is in the zone (bootstrap wrote it)
        seen.append(weight)
    await ctl.shutdown()
    # the evidence of health is already in (its 20 samples): recovery may start with the first step past the
    # 1 s hold-down, but only one max_step at a time
    assert seen[-1] == 255
    assert all(b - a <= 128 for a, b in zip([0, *seen], seen, strict=False))  # one step at a time


async def test_dry_run_takes_no_lease_saves_no_state_and_shows_as_a_watcher(setup: Any) -> None:  # noqa: F811
    """A dry-run controller beside nobody: no lease, no stored state, no DNS write; status lists it as a watcher."""
    path, loaded, r53 = setup
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    ctl = Controller(PolicyHolder(path, loaded), controller_id="watcher-1", dry_run=True)
    with capture_logs() as logs:
        await ctl.evaluate_once()
        await ctl.evaluate_once()
    policy = loaded.policy
    client = store.redis_client(policy.redis)
    try:
        prefix, service = policy.redis.key_prefix, policy.service
        assert not await client.exists(keys.lease_key(prefix, service))
        assert not await client.exists(keys.controller_state_key(prefix, service))
        (watcher,) = await presence.watchers(client, policy)
        assert watcher["id"] == "watcher-1" and watcher["policy_hash"] == loaded.hash
        await ctl.shutdown()
        assert await presence.watchers(client, policy) == []
    finally:
        await client.aclose()
    assert own_weights(policy, r53) == {r: 255 for r in policy.region_names}
    shifts = events(logs, "controller.weights_shifted")
    assert shifts and all(e["dry_run"] is True and e["region"] == "eu-west" for e in shifts)


async def test_dry_run_judges_from_the_leaders_stored_state(setup: Any) -> None:  # noqa: F811
    """With a leader's stored state (eu-west at 0.5) the dry-run's next step starts there, and it stores nothing."""
    path, loaded, _ = setup
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    leader = Controller(PolicyHolder(path, loaded), controller_id="leader")
    await leader.evaluate_once()
    await leader.evaluate_once()  # eu-west 1.0 → 0.5, stored
    watcher = Controller(PolicyHolder(path, loaded), controller_id="watcher", dry_run=True)
    with capture_logs() as logs:
        await watcher.evaluate_once(now=time.time() + 0.5)
    await watcher.shutdown()
    (shift,) = events(logs, "controller.weights_shifted")
    assert (shift["serving_fraction_before"], shift["serving_fraction_after"]) == (0.5, 0.0)
    with capture_logs() as logs:
        await leader.evaluate_once(now=time.time() + 0.5)  # the leader's own state was not touched
    await leader.shutdown()
    (shift,) = events(logs, "controller.weights_shifted")
    assert shift["serving_fraction_before"] == 0.5


class _NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET; collects what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.seen: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.seen


async def test_watchdog_is_pinged_only_after_completed_evaluations(
    setup: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """READY and WATCHDOG=1 follow completed evaluations; while an evaluation hangs, no WATCHDOG=1 is sent."""
    path, _, _ = setup
    path.write_text(path.read_text().replace("evaluate_every: 1s", "evaluate_every: 200ms"))
    holder = PolicyHolder(path, load_policy(path))
    notify_sock = _NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify_sock.path)
    ctl = Controller(holder)
    hang = asyncio.Event()
    real = ctl.evaluate_once

    async def evaluate_once(now: float | None = None) -> None:
        if hang.is_set():
            await asyncio.Event().wait()  # stuck for ever
        await real(now)

    ctl.evaluate_once = evaluate_once  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(run_controller(holder, stop=stop, controller=ctl))
    deadline = time.monotonic() + 10
    while sum("WATCHDOG=1" in m for m in notify_sock.drain()) < 3:
        assert time.monotonic() < deadline, notify_sock.seen
        await asyncio.sleep(0.05)
    assert any("READY=1" in m for m in notify_sock.seen)
    hang.set()
    await asyncio.sleep(0.5)  # let a running evaluation end and the hanging one start
    before = sum("WATCHDOG=1" in m for m in notify_sock.drain())
    await asyncio.sleep(1.0)  # five intervals
    assert sum("WATCHDOG=1" in m for m in notify_sock.drain()) == before
    stop.set()
    await asyncio.wait_for(task, 5)


@dataclasses.dataclass
class _ThrottledProvider(MemoryProvider):
    """Answers every reconcile after a 30 s throttling backoff, slept with the `sleep` the controller injects."""

    sleep: Any = None
    in_backoff: threading.Event = dataclasses.field(default_factory=threading.Event)

    def reconcile(self, matrix: Any, *, context: ReconcileContext) -> ReconcileResult:
        self.in_backoff.set()
        self.sleep(30.0)
        return ReconcileResult(Status.THROTTLED)


async def test_stop_during_a_route53_backoff_returns_within_five_seconds(setup: Any) -> None:  # noqa: F811
    """SIGTERM while the DNS provider sleeps in a 30 s throttling backoff: the loop ends and the lease is released
    within 5 s (the sleep is cut short; the batch is resolved by re-reading at the next start)."""
    path, loaded, _ = setup
    holder = PolicyHolder(path, loaded)
    provider = _ThrottledProvider.bootstrapped(loaded.policy)
    ctl = Controller(holder, ports=Ports(dns=lambda policy, writer: provider))
    await feed(loaded.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # takes the lease and the epoch; nothing sent at start
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_controller(holder, stop=stop, controller=ctl))
        await asyncio.to_thread(provider.in_backoff.wait, 10)
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 10)
    assert time.monotonic() - stopped_at < 5.0
    assert events(logs, "controller.reconcile_interrupted") and events(logs, "controller.stopped")
    client = store.redis_client(loaded.policy.redis)
    assert not await client.exists(keys.lease_key(loaded.policy.redis.key_prefix, loaded.policy.service))
    await client.aclose()
