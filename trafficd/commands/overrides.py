"""`trafficd drain|undrain|freeze|unfreeze`: on-call overrides, stored in Redis (trafficd/control/overrides.py).

    trafficd drain REGION --for 2h --reason TEXT [--force]     shed REGION's users (ramped), until expiry
    trafficd undrain REGION [--for 30m --reason TEXT]           cancel a drain; with --for, keep REGION serving
    trafficd freeze --reason TEXT [--for 1h] [--replace]        global kill switch: no Route 53 write at all
    trafficd unfreeze

A drain that a guard forbids (frozen, max_drained, min_serving_regions, capacity) is refused with exit 1 and the
reasons, unless --force; a forced drain that a guard --force does not bypass (capacity) still holds is set, says
so and exits 1. A freeze never shortens a longer one in force unless --replace (exit 1, the longer one kept).
Every command logs one `overrides.*` event (who, what, why, until when).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from trafficd.cli import add_policy_argument, duration_arg, open_policy

if TYPE_CHECKING:
    from trafficd.policy.schema import Policy

# `--help` imports only this module: the handlers import the policy schema, redis-py and the guards they use.

DEFAULT_FREEZE_S = 3600.0
# guards a forced drain bypasses (decide/guards.py); any other problem (capacity) still holds the region
FORCE_BYPASSES = ("frozen", "max_drained", "min_serving_regions")


def still_held(problems: list[str]) -> list[str]:
    """The problems a forced drain does not bypass: the region will not drain (fully) while they stand."""
    return [p for p in problems if p.split(":", 1)[0].strip() not in FORCE_BYPASSES]


def _log() -> Any:
    from trafficd.runtime.logs import get_logger

    return get_logger("overrides")


def _client(policy: Policy) -> Any:
    """The shared on-call Redis client (password from env/file, TLS CA, timeouts)."""
    from trafficd.stats.client import client_for  # not stats.store: the sink brings aiohttp and metrics

    return client_for(policy, "oncall")


async def _controller_fractions(client: Any, policy: Policy) -> dict[str, float] | None:
    """Serving fractions the controller last stored, to judge a drain against what is already shed."""
    from trafficd.control import state_store

    state = await state_store.load(client, policy)
    return None if state is None else state.fractions()


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _refused(region: str, problems: list[str]) -> None:
    print(f"refused: draining {region} would break a guard:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    print("use --force to drain anyway", file=sys.stderr)


async def _drain(policy: Policy, args: argparse.Namespace, now: float) -> int:
    from trafficd.control.overrides import load, set_override
    from trafficd.decide import guards
    from trafficd.model import Override
    from trafficd.policy.values import format_duration

    log = _log()
    client = _client(policy)
    try:
        current = await load(client, policy, now)
        fractions = await _controller_fractions(client, policy)
        problems = guards.check_manual_drain(policy, args.region, current, fractions)
        if problems and not args.force:
            log.warning("overrides.drain_refused", region=args.region, reason=args.reason, problems=problems)
            _refused(args.region, problems)
            return 1
        o = Override("drain", args.region, args.reason, now + args.for_s, _who(), now, bool(args.force))
        await set_override(client, policy, o)
        held = still_held(problems)
        log.info("overrides.drain_set", **o.to_dict(), for_s=args.for_s, overridden_guards=problems, held_by=held)
        print(f"{args.region}: drain set for {format_duration(args.for_s)} ({args.reason})")
        if held:  # --force does not move capacity: the region keeps serving what its neighbours cannot take
            print(f"but {args.region} will not be drained (fully) while a guard still holds it:", file=sys.stderr)
            for p in held:
                print(f"  - {p}", file=sys.stderr)
            return 1
        return 0
    finally:
        await client.aclose()


async def _undrain(policy: Policy, args: argparse.Namespace, now: float) -> int:
    from trafficd.control.overrides import clear, set_override
    from trafficd.model import Override
    from trafficd.policy.values import format_duration

    log = _log()
    client = _client(policy)
    try:
        removed = await clear(client, policy, args.region)
        if args.for_s is None:
            log.info("overrides.cleared", region=args.region, removed=None if removed is None else removed.kind)
            what = "no override was set" if removed is None else f"{removed.kind} override removed"
            print(f"{args.region}: {what}; the controller judges it again")
            return 0
        reason = args.reason or "manual undrain"
        o = Override("undrain", args.region, reason, now + args.for_s, _who(), now, False)
        await set_override(client, policy, o)
        log.info("overrides.undrain_set", **o.to_dict(), for_s=args.for_s)
        print(f"{args.region}: kept serving for {format_duration(args.for_s)} ({reason})")
        return 0
    finally:
        await client.aclose()


async def _freeze(policy: Policy, args: argparse.Namespace, now: float) -> int:
    from trafficd.control.overrides import load, set_override
    from trafficd.model import Override
    from trafficd.policy.values import format_duration

    log = _log()
    client = _client(policy)
    try:
        current = (await load(client, policy, now)).freeze
        o = Override("freeze", None, args.reason, now + args.for_s, _who(), now, False)
        if current is not None and current.expires_at > o.expires_at and not args.replace:
            until = time.strftime("%H:%M:%SZ", time.gmtime(current.expires_at))
            log.warning("overrides.freeze_kept", **current.to_dict(), asked_for_s=args.for_s)
            print(
                f"already frozen until {until} by {current.created_by} ({current.reason}); a new freeze never "
                "shortens it: kept. Use --replace to replace it.",
                file=sys.stderr,
            )
            return 1
        await set_override(client, policy, o)
        log.info("overrides.freeze_set", **o.to_dict(), for_s=args.for_s)
        print(f"frozen for {format_duration(args.for_s)} ({args.reason}): no serving fraction moves")
        return 0
    finally:
        await client.aclose()


async def _unfreeze(policy: Policy, args: argparse.Namespace, now: float) -> int:
    from trafficd.control.overrides import clear

    client = _client(policy)
    try:
        removed = await clear(client, policy, None)
        _log().info("overrides.unfrozen", was_frozen=removed is not None)
        print("unfrozen" if removed is not None else "was not frozen")
        return 0
    finally:
        await client.aclose()


def _handler(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        import asyncio

        from redis.exceptions import RedisError

        from trafficd.errors import TransientError

        policy = open_policy(args)  # bad policy 78, unknown region 2 (trafficd.cli prints why)
        try:
            code: int = asyncio.run(fn(policy, args, time.time()))
        except (RedisError, OSError) as exc:
            _log().error("overrides.redis_failed", error=type(exc).__name__, detail=str(exc))
            raise TransientError(f"cannot reach Redis at {policy.redis.url}: {exc}") from exc  # exit 75
        return code

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drain", help="drain a region (ramped) until the override expires")
    p.add_argument("region")
    p.add_argument("--for", dest="for_s", type=duration_arg, required=True, help="how long, e.g. 2h, 30m")
    p.add_argument("--reason", required=True, help="why (logged and shown in status)")
    p.add_argument("--force", action="store_true", help="drain even when a guard forbids it")
    add_policy_argument(p)
    p.set_defaults(func=_handler(_drain))

    p = sub.add_parser("undrain", help="cancel a drain; with --for, keep the region serving whatever the probes say")
    p.add_argument("region")
    p.add_argument("--for", dest="for_s", type=duration_arg, default=None, help="keep it serving this long")
    p.add_argument("--reason", default=None)
    add_policy_argument(p)
    p.set_defaults(func=_handler(_undrain))

    p = sub.add_parser("freeze", help="global kill switch: no serving fraction moves until unfreeze or expiry")
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="for_s", type=duration_arg, default=DEFAULT_FREEZE_S, help="default 1h")
    p.add_argument("--replace", action="store_true", help="replace a longer freeze in force (else it is kept)")
    add_policy_argument(p)
    p.set_defaults(func=_handler(_freeze))

    p = sub.add_parser("unfreeze", help="lift the freeze")
    add_policy_argument(p)
    p.set_defaults(func=_handler(_unfreeze))
