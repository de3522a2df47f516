"""Redis roles against a real redis-server with ACLs on: the rules `trafficd redis acl` prints, enforced."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kit
import pytest
from redis.exceptions import NoPermissionError
from test_store import sample

from trafficd import cli, keys
from trafficd.commands.redis import acl_lines
from trafficd.control import overrides
from trafficd.control.lease import Lease
from trafficd.dev.services import RedisServer
from trafficd.model import Override
from trafficd.policy.schema import Policy
from trafficd.stats import store

ADMIN = "admin-secret"
PASSWORDS = {"agent": "agent-pw", "controller": "controller-pw", "oncall": "oncall-pw"}


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    """A redis-server of its own: the default user has a password, the roles are added per test."""
    server = RedisServer(password=ADMIN).start()
    yield server
    server.cleanup()


@pytest.fixture
def policy(acl_redis: RedisServer, key_prefix: str) -> Policy:
    url = f"redis://127.0.0.1:{acl_redis.port}/0"
    doc = kit.two_region_doc(url, key_prefix, windows={"slice": "1s", "trip": "5s", "long": "20s"})
    doc["redis"] |= {"password_env": "TRAFFICD_TEST_REDIS_PASSWORD", "acl_users": True}
    return kit.as_loaded(doc).policy


@pytest.fixture
async def admin(acl_redis: RedisServer, policy: Policy) -> AsyncIterator[Any]:
    """The default user loads the printed ACL lines (plus each role's password), as an operator would."""
    import redis.asyncio as aioredis

    c = aioredis.Redis(host="127.0.0.1", port=acl_redis.port, password=ADMIN)
    for line in acl_lines(policy):
        _, name, *rules = line.split()
        role = "agent" if "-agent-" in name else name.rsplit("-", 1)[1]
        # redis-py leaves execute_command unannotated
        await c.execute_command("ACL", "SETUSER", name, *rules, f">{PASSWORDS[role]}")  # type: ignore[no-untyped-call]
    yield c
    await c.aclose()


def client(policy: Policy, role: str, region: str | None, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TRAFFICD_TEST_REDIS_PASSWORD", PASSWORDS[role])
    return store.client_for(policy, role, region)


async def test_agent_writes_its_region_and_is_refused_elsewhere(
    policy: Policy, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r1's agent user writes r1's samples and heartbeat through the real sink, and gets NOPERM for r2's keys,
    the lease, the controller state and the overrides."""
    agent = client(policy, "agent", "r1", monkeypatch)
    p, svc = policy.redis.key_prefix, policy.service
    try:
        sink = store.SampleSink(agent, policy, agent_id="a1")
        await sink.write([sample("r1", "w1", "m1", time.time(), 100.0) for _ in range(5)])
        await sink.heartbeat("a1", "r1")
        assert sink.healthy and sink.written_total == 5 and not sink.buffered
        refused = [
            agent.hset(keys.heartbeat_key(p, svc, "r2"), "a1", "1"),
            agent.execute_command("BITFIELD", keys.region_slice_key(p, svc, "r2", 1), "INCRBY", "u32", "0", "1"),
            agent.set(keys.lease_key(p, svc), "me:99"),
            agent.set(keys.controller_state_key(p, svc), "{}"),
            agent.set(keys.override_freeze_key(p, svc), "{}"),
            agent.get(keys.heartbeat_key(p, svc, "r1")),  # agents write; they have no reason to read
            agent.flushall(),
        ]
        for call in refused:
            with pytest.raises(NoPermissionError):
                await call
    finally:
        await agent.aclose()
    assert await admin.hexists(keys.heartbeat_key(p, svc, "r1"), "a1")
    assert not await admin.exists(keys.heartbeat_key(p, svc, "r2"), keys.lease_key(p, svc))


async def test_controller_leads_and_reads_but_cannot_write_overrides_or_samples(
    policy: Policy, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller user takes the lease (Lua), reads every region's evidence, and gets NOPERM for overrides and
    samples; the on-call user writes an override and gets NOPERM for the lease."""
    agent = client(policy, "agent", "r1", monkeypatch)
    controller = client(policy, "controller", None, monkeypatch)
    oncall = client(policy, "oncall", None, monkeypatch)
    p, svc = policy.redis.key_prefix, policy.service
    try:
        sink = store.SampleSink(agent, policy, agent_id="a1")
        await sink.write([sample("r1", "w1", "m1", time.time() - 0.5, 100.0) for _ in range(7)])
        await sink.heartbeat("a1", "r1")
        lease = Lease(controller, p, svc, "ctl-1", policy.controller.lease_ttl)
        assert await lease.ensure()
        evidence = await store.StatsView(controller, policy).evidence(time.time())
        assert evidence["r1"].n == 7 and not evidence["r1"].unreadable
        for call in (
            controller.set(keys.override_freeze_key(p, svc), "{}"),
            controller.hset(keys.heartbeat_key(p, svc, "r1"), "fake", "1"),
        ):
            with pytest.raises(NoPermissionError):
                await call
        now = time.time()
        await overrides.set_override(oncall, policy, Override("freeze", None, "test", now + 60.0, "on-call", now))
        assert (await overrides.load(controller, policy, now)).freeze is not None
        with pytest.raises(NoPermissionError):
            await oncall.set(keys.lease_key(p, svc), "oncall:1")
    finally:
        for c in (agent, controller, oncall):
            await c.aclose()


def test_acl_command_prints_one_user_per_region_and_role(
    policy: Policy, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trafficd redis acl --policy F` prints the ACL lines: an agent user per region, controller and on-call."""
    path = kit.write_policy(tmp_path, policy.model_dump(mode="json", exclude_none=True))
    assert cli.main(["redis", "acl", "--policy", str(path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")]
    p = policy.redis.key_prefix
    assert [x.split()[1] for x in lines] == [
        "svc-agent-r1",
        "svc-agent-r2",
        "svc-controller",
        "svc-oncall",
    ]
    assert f" ~{p}:svc:{{r1}}:* " in lines[0] and "{r2}" not in lines[0]
    assert f" ~{p}:{{svc}}:controller:* " in lines[2]
    assert f" ~{p}:{{svc}}:override:* " in lines[3]


def test_check_tries_every_data_command_the_agent_user_is_granted(policy: Policy) -> None:
    """`trafficd check` queues each data command the agent's ACL user is granted (HEXISTS included, which the
    sink sends to settle a retried batch), so an ACL written without one fails the check, not the agent later."""
    from trafficd.commands.redis import acl_rules
    from trafficd.runtime.preflight_redis import ROLE_COMMANDS

    rules = acl_rules(policy)[keys.acl_username(policy.service, "agent", "r1")]
    granted = {w[1:] for rule in rules for w in rule.split() if w.startswith("+") and not w.startswith("+@")}
    checked = {command[0] for command in ROLE_COMMANDS["agent"]}
    assert granted - {"discard", "ping"} == checked  # DISCARD ends the check's own MULTI; PING is the connection's


@pytest.mark.usefixtures("admin")
async def test_check_verifies_each_roles_own_user_on_its_own_keys(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trafficd check` with acl_users logs in as the role's user and checks that role's commands on its keys:
    the agent of r1 passes as itself, and the same host's password cannot pass the controller's check."""
    from trafficd.runtime.preflight_redis import redis_checks

    monkeypatch.setenv("TRAFFICD_TEST_REDIS_PASSWORD", PASSWORDS["agent"])
    checks = await redis_checks(policy, "agent", ["r1"])
    acl = [c for c in checks if c.name == "acl"]
    assert [c.status for c in acl] == ["ok"], checks
    assert keys.acl_username(policy.service, "agent", "r1") in acl[0].detail
    monkeypatch.setenv("TRAFFICD_TEST_REDIS_PASSWORD", PASSWORDS["controller"])
    checks = await redis_checks(policy, "controller")
    assert [c.status for c in checks if c.name == "acl"] == ["ok"], checks
    checks = await redis_checks(policy, "all", ["r1"])  # one host, one password: the agent's login is refused
    assert "fail" in {c.status for c in checks}, checks


async def test_agent_user_writes_its_regions_live_capacity(
    policy: Policy, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capacity figures go through r1's agent ACL user (HSET + EXPIRE on r1's keys); the controller reads
    them back; r2's capacity key is refused to r1's agent."""
    from trafficd.policy.capacity import Capacity, CapacityFields
    from trafficd.stats import capacity_store
    from trafficd.stats.capacity import worker_figures

    live = policy.model_copy(update={"capacity": CapacityFields(max_concurrency=10)})
    now = time.time()
    fig = {"w1": worker_figures(4.0, 0.0, 10.0, None, 2.0, Capacity(max_concurrency=10), at=now)}
    agent = client(live, "agent", "r1", monkeypatch)
    try:
        await capacity_store.write(agent, live, "r1", fig, now)
        with pytest.raises(NoPermissionError):
            await capacity_store.write(agent, live, "r2", fig, now)
    finally:
        await agent.aclose()
    controller = client(live, "controller", None, monkeypatch)
    try:
        read = await capacity_store.read(controller, live, now)
    finally:
        await controller.aclose()
    assert (read["r1"].source, read["r1"].load_rps, read["r2"].source) == ("live", 2.0, "missing")
