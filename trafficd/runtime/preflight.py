"""Preflight: can this host run trafficd with this policy? (`trafficd check`, and the daemons' start).

Each check gives one `Check(name, status, detail)`, status ok / warn / fail:

    policy        valid (warnings → warn)
    secrets       Redis password and (agents) the worker API key and CA file can be read
    redis         reachable; version ≥ REDIS_MIN_VERSION; ACL allows this role's commands on its keys
    clock         offset against Redis TIME (warn above half of windows.max_clock_skew, fail above it)
    aws           (controller) credentials found, and where from
    zone          (controller) hosted zone readable (one ListResourceRecordSets)
    records       (controller) owned records present, or what `trafficd dns bootstrap` would create
    workers       (agent) one probe to each listed worker
    models        (agent) each worker lists each probed model (a missing one fails, an unreadable list warns)

The daemons run the cheap part at start, before READY: `agent_start` (secrets) and `controller_start` (secrets,
AWS credentials, zone readable). A configuration that cannot work raises `PreflightError` (exit 78).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from trafficd import keys
from trafficd.errors import ConfigError
from trafficd.policy.schema import Policy

REDIS_MIN_VERSION = (6, 2)  # GETDEL (overrides) needs 6.2
Status = Literal["ok", "warn", "fail"]
Role = Literal["agent", "controller", "all"]

# The commands each role sends, with a key of that role (queued in a discarded MULTI: Redis answers NOPERM).
ROLE_COMMANDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "agent": (
        ("multi",),
        ("exec",),
        ("hset", "{k}", "f", "v"),
        ("hincrby", "{k}", "f", "1"),
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


class PreflightError(ConfigError):
    """A check a daemon needs before READY failed (exit 78; systemd does not restart it)."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():<4} {self.name:<8} {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _roles(role: Role) -> tuple[str, ...]:
    return ("agent", "controller") if role == "all" else (role,)


# ---------------------------------------------------------------- secrets


def secret_checks(policy: Policy, role: Role) -> list[Check]:
    """The secrets named in the policy can be read (never shown)."""
    from trafficd.stats.client import redis_client

    out: list[Check] = []
    try:
        redis_client(policy.redis)
        out.append(Check("secrets", "ok", "Redis password " + ("readable" if _has_password(policy) else "not used")))
    except ConfigError as exc:
        out.append(Check("secrets", "fail", str(exc)))
    if "agent" in _roles(role):
        out.append(_api_key_check(policy))
    return out


def _has_password(policy: Policy) -> bool:
    return bool(policy.redis.password_env or policy.redis.password_file)


def _api_key_check(policy: Policy) -> Check:
    from trafficd.probe.credentials import load_api_key

    try:
        load_api_key(policy.probe.auth)
    except ConfigError as exc:
        return Check("secrets", "fail", str(exc))
    ca = policy.probe.tls.ca_file
    if ca:
        try:
            with open(ca, "rb"):
                pass
        except OSError as exc:
            return Check("secrets", "fail", f"cannot read probe.tls.ca_file {ca}: {exc.strerror}")
    auth = policy.probe.auth
    return Check(
        "secrets", "ok", "worker API key " + ("readable" if auth.api_key_env or auth.api_key_file else "not used")
    )


# ---------------------------------------------------------------- Redis and the clock


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
    for r in _roles(role):
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


# ---------------------------------------------------------------- AWS and the zone (controller)


def aws_credentials_check() -> Check:
    import boto3

    creds = boto3.session.Session().get_credentials()
    if creds is None:
        return Check(
            "aws",
            "fail",
            "no AWS credentials found (instance role, AWS_* environment, or AWS_SHARED_CREDENTIALS_FILE "
            "pointing at a LoadCredential= file)",
        )
    return Check("aws", "ok", f"credentials from {creds.method}")


def zone_checks(policy: Policy, *, records: bool) -> list[Check]:
    """The hosted zone can be listed; with `records`, which owned records exist and what bootstrap would add."""
    from trafficd.dns import records as rec
    from trafficd.dns.route53.client import list_zone, route53_client

    client = route53_client(policy, total_max_attempts=2)
    zone = policy.dns.zone_id
    try:
        client.list_resource_record_sets(HostedZoneId=zone, MaxItems="1")
    except Exception as exc:
        return [Check("zone", "fail", f"hosted zone {zone} not readable: {_aws_error(exc)}")]
    out = [Check("zone", "ok", f"hosted zone {zone} readable")]
    if records:
        listed = {r.key for r in list_zone(client, zone)[0]}
        missing = sorted(k for k in rec.owned_keys(policy) if k not in listed)
        if missing:
            names = ", ".join(f"{k[0]} {k[2] or '-'}" for k in missing[:6]) + (" ..." if len(missing) > 6 else "")
            out.append(
                Check("records", "warn", f"{len(missing)} owned record(s) absent; `dns bootstrap` creates: {names}")
            )
        else:
            out.append(Check("records", "ok", f"all {len(rec.owned_keys(policy))} owned records present"))
    return out


def _aws_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        return f"{err.get('Code', type(exc).__name__)}: {err.get('Message', '')}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


# ---------------------------------------------------------------- workers (agent)


async def worker_checks(policy: Policy, regions: list[str]) -> list[Check]:
    """One probe to each listed worker of `regions` with the region's first model, in the series' API."""
    from trafficd.probe.credentials import load_api_key
    from trafficd.probe.discovery import WorkerRef
    from trafficd.probe.prober import Prober, series_target

    out: list[Check] = []
    async with Prober(policy.probe, secret=load_api_key(policy.probe.auth)) as prober:
        for region in regions:
            models = policy.models_for(region)
            workers = policy.regions[region].workers
            if not workers:
                out.append(Check("workers", "ok", f"{region}: discovered by DNS (not probed here)"))
            for w in workers:
                target = series_target(policy, region, WorkerRef.from_policy(w), models[0].name)
                result = await prober.probe_detailed(target)
                s = result.sample
                detail = f"{region}/{w.name} {models[0].name}: " + (
                    f"ok, first token {s.ttft_ms:.0f} ms, total {s.total_ms:.0f} ms"
                    if s.ok
                    else f"failed: {s.reason}: {result.detail}"
                )
                out.append(Check("workers", "ok" if s.ok else "fail", detail))
    return out


async def model_checks(policy: Policy, regions: list[str]) -> list[Check]:
    """Each worker (listed or discovered) lists each probed model (`probe.models.check_models`): a model it does not
    list fails (many servers answer any name, so a typo would look healthy); an unreadable list warns."""
    from trafficd.probe.credentials import load_api_key
    from trafficd.probe.models import check_models

    checks = await check_models(policy, regions, secret=load_api_key(policy.probe.auth))
    out: list[Check] = []
    for c in checks:
        where = f"{c.region}/{c.worker} {c.model} ({c.api})"
        if c.status == "missing":
            out.append(Check("models", "fail", f"{where}: not listed at {c.url}; {c.detail}"))
        elif c.status == "unchecked":
            out.append(Check("models", "warn", f"{where}: model list not read at {c.url}: {c.detail}"))
    listed = sum(c.ok for c in checks)
    out.append(Check("models", "ok", f"{listed} of {len(checks)} worker × model pairs listed by their workers"))
    return out


# ---------------------------------------------------------------- all of it, and the daemons' part


async def run_checks(policy: Policy, *, role: Role, regions: list[str], probes: bool) -> list[Check]:
    out = secret_checks(policy, role)
    out += await redis_checks(policy, role, regions)
    if "controller" in _roles(role):
        aws = aws_credentials_check()
        out.append(aws)
        if aws.status == "ok":
            out += await asyncio.to_thread(zone_checks, policy, records=True)
    if "agent" in _roles(role) and probes and all(c.status != "fail" for c in out if c.name == "secrets"):
        out += await worker_checks(policy, regions)
        out += await model_checks(policy, regions)
    return out


def _raise_failed(checks: list[Check]) -> None:
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise PreflightError("; ".join(f"{c.name}: {c.detail}" for c in failed))


async def agent_start(policy: Policy) -> None:
    """Before an agent's READY: its secrets can be read and its prober built (TLS CA parsed), or exit 78."""
    _raise_failed(secret_checks(policy, "agent"))
    from trafficd.probe.credentials import load_api_key
    from trafficd.probe.prober import Prober

    async with Prober(policy.probe, secret=load_api_key(policy.probe.auth)):
        pass


def controller_start(policy: Policy) -> None:
    """Before a controller's READY: Redis password, AWS credentials, hosted zone readable (exit 78 otherwise).

    Dry-run reads the zone too. A zone that cannot be reached now (network, throttling) is not a configuration
    error: the controller starts and its loop retries (and logs) as for any Route 53 outage.
    """
    checks = secret_checks(policy, "controller")
    aws = aws_credentials_check()
    checks.append(aws)
    if aws.status == "ok":
        checks += [c for c in zone_checks(policy, records=False) if _config_failure(c)]
    _raise_failed(checks)


CONFIG_CODES = ("AccessDenied", "NoSuchHostedZone", "InvalidInput", "InvalidClientTokenId", "SignatureDoesNotMatch")


def _config_failure(check: Check) -> bool:
    return check.status == "fail" and any(code in check.detail for code in (*CONFIG_CODES, "NoCredentials"))
