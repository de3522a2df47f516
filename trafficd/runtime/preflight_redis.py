"""Preflight's Redis checks (`trafficd check`): can this host reach Redis and do what its role needs there?

    redis    reachable; server version ≥ REDIS_MIN_VERSION (read from HELLO when the role may not run INFO)
    acl      each role's commands (ROLE_COMMANDS) on a key of that role, as the user the role logs in as: queued
             in a MULTI that is discarded, so Redis answers NOPERM per command and nothing runs
    clock    offset against Redis TIME (warn above half of windows.max_clock_skew, fail above it)

Each gives a `preflight.Check`; `preflight.run_checks` runs them with the others.
"""

from __future__ import annotations

import time
from typing import Any

from trafficd import keys
from trafficd.errors import ConfigError
from trafficd.policy.schema import Policy
from trafficd.runtime.preflight import Check, Role, Status, roles_of

REDIS_MIN_VERSION = (6, 2)  # GETDEL (overrides) needs 6.2

# The commands each role sends, with a key of that role (queued in a discarded MULTI: Redis answers NOPERM).
ROLE_COMMANDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "agent": (
        ("multi",),
        ("exec",),
        ("evalsha", "0" * 40, "1", "{k}"),  # the sink's batch script, and below each command it calls
        ("eval", "return 1", "1", "{k}"),
        ("type", "{k}"),
        ("hget", "{k}", "f"),
        ("hset", "{k}", "f", "v"),
        ("hincrby", "{k}", "f", "1"),
        ("hexists", "{k}", "f"),
        ("expire", "{k}", "1"),
        ("bitfield", "{k}", "GET", "u16", "0"),
        ("lpush", "{k}", "v"),
        ("ltrim", "{k}", "0", "1"),
        ("time",),
    ),
    "controller": (
        ("get", "{k}"),
        ("mget", "{k}"),
        ("hgetall", "{k}"),
        ("lrange", "{k}", "0", "1"),
        ("set", "{k}", "v"),
        ("getdel", "{k}"),
        ("eval", "return 1", "1", "{k}"),
        ("time",),
    ),
}


async def redis_checks(policy: Policy, role: Role, regions: list[str] | None = None) -> list[Check]:
    from trafficd.stats.client import client_for, redis_client

    regions = regions or policy.region_names
    try:
        if policy.redis.acl_users:  # log in as this host's role (the password this host holds is that role's)
            first, region = _role_users(policy, role, regions)[0]
            client = client_for(policy, first, region)
        else:
            client = redis_client(policy.redis)
    except ConfigError:
        return [Check("redis", "fail", "not tried: the Redis password cannot be read")]
    try:
        return await _redis_checks(client, policy, role, regions)
    except Exception as exc:  # unreachable, wrong password, TLS: say what happened, once
        return [Check("redis", "fail", f"{policy.redis.url}: {type(exc).__name__}: {exc}"[:300])]
    finally:
        await client.aclose()


async def _redis_checks(client: Any, policy: Policy, role: Role, regions: list[str]) -> list[Check]:
    started = time.time()
    await client.ping()
    version = await _server_version(client)
    numbers = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    wanted = ".".join(map(str, REDIS_MIN_VERSION))
    out = [
        Check(
            "redis",
            "ok" if numbers >= REDIS_MIN_VERSION else "fail",
            f"{policy.redis.url} reachable, version {version}"
            + ("" if numbers >= REDIS_MIN_VERSION else f" < {wanted}"),
        )
    ]
    for r, region in _role_users(policy, role, regions):
        out.append(await _acl_check_as(client, policy, r, region))
    out.append(await _clock_check(client, policy, started))
    return out


async def _server_version(client: Any) -> str:
    """The server's version: from INFO, or from HELLO for a user that may not run INFO (a role's ACL user)."""
    from redis.exceptions import NoPermissionError

    try:
        info = await client.info("server")
        return str(info.get("redis_version", "0"))
    except NoPermissionError:
        hello = await client.execute_command("HELLO")
        if isinstance(hello, list):
            hello = dict(zip(hello[::2], hello[1::2], strict=False))
        version = hello.get(b"version", hello.get("version", b"0"))
        return version.decode() if isinstance(version, bytes) else str(version)


def _role_users(policy: Policy, role: Role, regions: list[str]) -> list[tuple[str, str | None]]:
    """The (role, region) pairs whose Redis permissions this host needs: an agent's per region, the controller's."""
    pairs: list[tuple[str, str | None]] = []
    for r in roles_of(role):
        pairs += [(r, region) for region in regions] if r == "agent" else [(r, None)]
    return pairs


def _role_key(policy: Policy, role: str, region: str | None) -> str:
    """A key of the kind this role writes (inside its ACL key pattern, `trafficd redis acl`), never really written."""
    p, svc = policy.redis.key_prefix, policy.service
    if role == "agent" and region is not None:
        return f"{keys.region_base(p, svc, region)}:trafficd-check"
    return f"{keys.service_base(p, svc)}:controller:trafficd-check"


async def _acl_check_as(shared: Any, policy: Policy, role: str, region: str | None) -> Check:
    """The role's commands on the role's keys, as the user the role logs in as (with `redis.acl_users` the role's
    own user, on a connection of its own; otherwise the shared connection's user).

    A role's user may not run `ACL DRYRUN` (an admin command), so the commands are queued inside MULTI and the
    transaction is DISCARDed: Redis checks each queued command against the ACL and answers NOPERM at once, and
    nothing runs."""
    from trafficd.stats.client import client_for

    client = client_for(policy, role, region) if policy.redis.acl_users else shared
    who = role if region is None else f"{role} of {region}"
    key = _role_key(policy, role, region)
    try:
        denied = await _queued_denials(client, [[w.replace("{k}", key) for w in c] for c in ROLE_COMMANDS[role]])
    except Exception as exc:
        return Check("acl", "fail", f"{who}: {type(exc).__name__}: {exc}"[:300])
    finally:
        if client is not shared:
            await client.aclose()
    if denied:
        return Check("acl", "fail", f"{who}: may not run {', '.join(denied)} on {key}")
    user = keys.acl_username(policy.service, role, region) if policy.redis.acl_users else "the shared user"
    return Check("acl", "ok", f"{who}: {user} may run its commands on {key}")


async def _queued_denials(client: Any, commands: list[list[str]]) -> list[str]:
    """The commands Redis refuses to queue (NOPERM) in a MULTI that is then discarded."""
    from redis.exceptions import ResponseError

    conn = await client.connection_pool.get_connection()
    denied = []
    try:
        await conn.send_command("MULTI")
        await conn.read_response()
        for words in commands:
            if words[0] in ("multi", "exec"):
                continue
            await conn.send_command(*words)
            try:
                await conn.read_response()
            except ResponseError as exc:
                if "NOPERM" in str(exc) or "permission" in str(exc).lower():
                    denied.append(words[0].upper())
        await conn.send_command("DISCARD")
        await conn.read_response()
    finally:
        await client.connection_pool.release(conn)
    return denied


async def _clock_check(client: Any, policy: Policy, before: float) -> Check:
    t0 = time.time()
    seconds, micros = await client.time()
    t1 = time.time()
    offset = (int(seconds) + int(micros) / 1e6) - (t0 + t1) / 2
    limit = policy.windows.max_clock_skew
    status: Status = "ok" if abs(offset) <= limit / 2 else "warn" if abs(offset) <= limit else "fail"
    return Check("clock", status, f"offset against Redis {round(offset * 1000):+d} ms (max_clock_skew {limit:g}s)")
