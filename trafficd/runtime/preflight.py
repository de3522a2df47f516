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

The Redis ones (redis, acl, clock) are in `preflight_redis.py`; this module runs them with the rest.

The daemons run the cheap part at start, before READY: `agent_start` (secrets) and `controller_start` (secrets,
AWS credentials, zone readable). A configuration that cannot work raises `PreflightError` (exit 78).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any, Literal

from trafficd.errors import ConfigError
from trafficd.policy.schema import Policy

Status = Literal["ok", "warn", "fail"]
Role = Literal["agent", "controller", "all"]


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


def roles_of(role: Role) -> tuple[str, ...]:
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
    if "agent" in roles_of(role):
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


# ---------------------------------------------------------------- AWS and the zone (controller)


def aws_credentials_check() -> Check:
    import botocore.session

    creds = botocore.session.get_session().get_credentials()
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
    from trafficd.runtime.preflight_redis import redis_checks  # it imports this module: imported here, not on top

    out = secret_checks(policy, role)
    out += await redis_checks(policy, role, regions)
    if "controller" in roles_of(role):
        aws = aws_credentials_check()
        out.append(aws)
        if aws.status == "ok":
            out += await asyncio.to_thread(zone_checks, policy, records=True)
    if "agent" in roles_of(role) and probes and all(c.status != "fail" for c in out if c.name == "secrets"):
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
