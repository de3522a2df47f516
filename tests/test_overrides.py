"""On-call overrides against a real redis-server: storage with expiry, and the drain/undrain/freeze commands."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import yaml
from judgekit import BASE
from kit import eventually_async
from structlog.testing import capture_logs

from trafficd import cli
from trafficd.control import overrides
from trafficd.dev.services import free_port
from trafficd.model import Override, Overrides
from trafficd.policy.schema import Policy


def policy_for(redis_url: str, key_prefix: str, **guards: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["redis"] = {"url": redis_url, "key_prefix": key_prefix}
    data["guards"].update(guards)
    return data


@pytest.fixture
def policy(redis_url: str, key_prefix: str) -> Policy:
    return Policy.model_validate(policy_for(redis_url, key_prefix))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    c = redis.asyncio.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def command(argv: list[str]) -> int:
    """Run one sub-command's handler in-process (without re-configuring structlog, so logs can be captured)."""
    return cli.dispatch(cli.build_parser(argv).parse_args(argv))


@pytest.fixture
def policy_file(tmp_path: Path, redis_url: str, key_prefix: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy_for(redis_url, key_prefix)))
    return str(path)


async def test_set_and_load_round_trip(policy: Policy, client: Any) -> None:
    """A stored drain and freeze come back from load() exactly as written."""
    now = time.time()
    drain = Override("drain", "us-east", "disk full", now + 60, "alice", now, forced=True)
    freeze = Override("freeze", None, "incident", now + 60, "bob", now)
    await overrides.set_override(client, policy, drain)
    await overrides.set_override(client, policy, freeze)
    got = await overrides.load(client, policy, now)
    assert got.by_region == {"us-east": drain} and got.freeze == freeze


async def test_redis_expires_the_override(policy: Policy, client: Any) -> None:
    """An override's key disappears from Redis at its expiry (PXAT), so load() no longer returns it."""
    now = time.time()
    await overrides.set_override(client, policy, Override("drain", "eu-west", "x", now + 0.3))
    key = overrides.region_key(policy, "eu-west")
    assert await client.pttl(key) > 0

    async def gone() -> bool:
        return not await client.exists(key)

    await eventually_async(gone, "the override key to expire", timeout_s=5.0)
    assert (await overrides.load(client, policy, time.time())).by_region == {}


async def test_load_drops_what_is_expired_by_the_callers_clock(policy: Policy, client: Any) -> None:
    """An override still in Redis but past its expires_at for the caller's `now` is not in force."""
    now = time.time()
    await overrides.set_override(client, policy, Override("drain", "eu-west", "x", now + 60))
    assert (await overrides.load(client, policy, now + 61)).by_region == {}


async def test_corrupt_entry_is_ignored(policy: Policy, client: Any) -> None:
    """A hand-written bad value under an override key is ignored, not fatal."""
    await client.set(overrides.region_key(policy, "us-east"), b"{not json")
    await client.set(overrides.freeze_key(policy), json.dumps({"kind": "freeze"}))
    got = await overrides.load(client, policy, time.time())
    assert got.by_region == {} and got.freeze is None


async def test_clear_returns_what_it_removed(policy: Policy, client: Any) -> None:
    """clear() deletes the region's override and returns it; a second clear finds nothing."""
    o = Override("drain", "us-east", "x", time.time() + 60)
    await overrides.set_override(client, policy, o)
    assert await overrides.clear(client, policy, "us-east") == o
    assert await overrides.clear(client, policy, "us-east") is None


async def read(policy: Policy, redis_url: str) -> Overrides:
    c = redis.asyncio.Redis.from_url(redis_url)
    try:
        return await overrides.load(c, policy, time.time())
    finally:
        await c.aclose()


def test_drain_command_stores_and_logs(policy_file: str, policy: Policy, redis_url: str, capsys: Any) -> None:
    """`trafficd drain us-east --for 2h --reason …` stores a drain for 2 h and logs overrides.drain_set."""
    with capture_logs() as logs:
        code = command(["drain", "us-east", "--for", "2h", "--reason", "bad rack", "--policy", policy_file])
    assert code == 0
    got = asyncio.run(read(policy, redis_url)).by_region["us-east"]
    assert (got.kind, got.reason, got.forced) == ("drain", "bad rack", False)
    assert 7190 < got.expires_at - time.time() <= 7200
    event = next(e for e in logs if e["event"] == "overrides.drain_set")
    assert event["region"] == "us-east" and event["reason"] == "bad rack" and event["for_s"] == 7200
    assert "drain set for 2h" in capsys.readouterr().out


def test_drain_refused_when_a_guard_forbids_unless_forced(
    policy_file: str, policy: Policy, redis_url: str, capsys: Any
) -> None:
    """A second drain (max_drained 1) is refused with exit 1 and the guard named; --force stores it."""
    assert command(["drain", "eu-west", "--for", "1h", "--reason", "a", "--policy", policy_file]) == 0
    capsys.readouterr()
    with capture_logs() as logs:
        code = command(["drain", "us-east", "--for", "1h", "--reason", "b", "--policy", policy_file])
    assert code == 1
    err = capsys.readouterr().err
    assert "refused" in err and "max_drained" in err and "--force" in err
    assert any(e["event"] == "overrides.drain_refused" for e in logs)
    assert "us-east" not in asyncio.run(read(policy, redis_url)).by_region
    args = ["drain", "us-east", "--for", "1h", "--reason", "b", "--force", "--policy", policy_file]
    assert command(args) == 0
    assert asyncio.run(read(policy, redis_url)).by_region["us-east"].forced is True


def test_drain_refused_by_the_controllers_state(policy_file: str, policy: Policy, redis_url: str, capsys: Any) -> None:
    """A region the controller has already drained (stored state) takes the max_drained slot."""
    from trafficd.decide.judge import ControllerState, RegionState

    state = ControllerState(regions={"ap-southeast": RegionState(serving_fraction=0.0)})
    key = f"{policy.redis.key_prefix}:{{{policy.service}}}:controller:state"

    async def put() -> None:
        c = redis.asyncio.Redis.from_url(redis_url)
        await c.set(key, json.dumps(state.to_dict()))
        await c.aclose()

    asyncio.run(put())
    assert command(["drain", "us-east", "--for", "1h", "--reason", "x", "--policy", policy_file]) == 1
    assert "ap-southeast" in capsys.readouterr().err


def test_freeze_refuses_drains_and_unfreeze_lifts(
    policy_file: str, policy: Policy, redis_url: str, capsys: Any
) -> None:
    """freeze stores a global freeze (drains then refused as `frozen`); unfreeze removes it."""
    with capture_logs() as logs:
        assert command(["freeze", "--reason", "incident 7", "--policy", policy_file]) == 0
    assert asyncio.run(read(policy, redis_url)).freeze is not None
    assert any(e["event"] == "overrides.freeze_set" and e["reason"] == "incident 7" for e in logs)
    assert command(["drain", "us-east", "--for", "1h", "--reason", "x", "--policy", policy_file]) == 1
    assert "frozen" in capsys.readouterr().err
    with capture_logs() as logs:
        assert command(["unfreeze", "--policy", policy_file]) == 0
    assert asyncio.run(read(policy, redis_url)).freeze is None
    assert any(e["event"] == "overrides.unfrozen" and e["was_frozen"] for e in logs)


def test_undrain_clears_or_pins(policy_file: str, policy: Policy, redis_url: str) -> None:
    """undrain without --for removes the drain; with --for it stores an undrain override."""
    command(["drain", "us-east", "--for", "1h", "--reason", "x", "--policy", policy_file])
    with capture_logs() as logs:
        assert command(["undrain", "us-east", "--policy", policy_file]) == 0
    assert asyncio.run(read(policy, redis_url)).by_region == {}
    assert any(e["event"] == "overrides.cleared" and e["removed"] == "drain" for e in logs)
    assert command(["undrain", "us-east", "--for", "30m", "--reason", "probe bug", "--policy", policy_file]) == 0
    got = asyncio.run(read(policy, redis_url)).by_region["us-east"]
    assert (got.kind, got.reason) == ("undrain", "probe bug")


def test_unknown_region_and_bad_duration_are_usage_errors(policy_file: str, capsys: Any) -> None:
    """An unknown region exits 2 naming the known ones; a duration without a unit is rejected by the parser."""
    assert command(["drain", "mars", "--for", "1h", "--reason", "x", "--policy", policy_file]) == 2
    assert "us-east" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["drain", "us-east", "--for", "2", "--reason", "x"])


def test_redis_unreachable_exits_75_with_a_clear_message(tmp_path: Path, key_prefix: str, capsys: Any) -> None:
    """With nothing listening at the policy's Redis URL the command exits 75 (EX_TEMPFAIL), says which URL failed."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(policy_for(url, key_prefix)))
    assert command(["freeze", "--reason", "x", "--policy", str(path)]) == 75
    assert f"cannot reach Redis at {url}" in capsys.readouterr().err


def test_forced_drain_that_capacity_still_holds_says_so_and_exits_1(
    tmp_path: Path, redis_url: str, key_prefix: str, capsys: Any
) -> None:
    """--force bypasses max_drained but not capacity: with 10 % headroom next door the drain is set, and the
    command names the capacity guard that keeps the region serving and exits 1 instead of "drain set"."""
    data = policy_for(redis_url, key_prefix)
    for r in data["regions"].values():
        r["capacity_headroom"] = "10%"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    with capture_logs() as logs:
        code = command(["drain", "eu-west", "--for", "1h", "--reason", "x", "--force", "--policy", str(path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "will not be drained" in err and "capacity" in err
    (event,) = [e for e in logs if e["event"] == "overrides.drain_set"]
    assert event["forced"] is True and event["held_by"] and event["held_by"][0].startswith("capacity")


def test_a_new_freeze_never_shortens_one_in_force_unless_replace(
    policy_file: str, policy: Policy, redis_url: str, capsys: Any
) -> None:
    """A 4 h freeze is kept when a 1 h one is asked for (exit 1, said so); a longer one extends it; --replace
    shortens it."""
    assert command(["freeze", "--reason", "incident 4h", "--for", "4h", "--policy", policy_file]) == 0
    first = asyncio.run(read(policy, redis_url)).freeze
    assert first is not None
    long_until = first.expires_at
    capsys.readouterr()
    assert command(["freeze", "--reason", "short", "--for", "1h", "--policy", policy_file]) == 1
    assert "never shortens" in capsys.readouterr().err
    kept = asyncio.run(read(policy, redis_url)).freeze
    assert kept is not None and kept.reason == "incident 4h" and kept.expires_at == long_until
    assert command(["freeze", "--reason", "longer", "--for", "5h", "--policy", policy_file]) == 0
    longer = asyncio.run(read(policy, redis_url)).freeze
    assert longer is not None and longer.reason == "longer"
    args = ["freeze", "--reason", "shorter", "--for", "1h", "--replace", "--policy", policy_file]
    assert command(args) == 0
    replaced = asyncio.run(read(policy, redis_url)).freeze
    assert replaced is not None and replaced.reason == "shorter" and replaced.expires_at < long_until
