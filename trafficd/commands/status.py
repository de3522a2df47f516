"""`trafficd status`: what on-call needs first — who leads, each region's state and weight, overrides, DNS.

Reads the controller's stored state, the lease, the overrides and the trip-window evidence from Redis, and
(unless `--no-dns`) the owned records from Route 53. Writes nothing. `--json` for scripts. Exit codes: 0 shown,
1 Redis unreadable, 78 bad policy. For the per-worker/per-model breakdown use `trafficd stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from redis.exceptions import RedisError

from trafficd.control.controller import read_inputs
from trafficd.control.lease import lease_key
from trafficd.policy.schema import Policy, PolicyError, load_policy
from trafficd.runtime.reload import EX_CONFIG
from trafficd.stats import store


async def gather(policy: Policy, now: float) -> dict[str, Any]:
    """Everything `status` shows, as plain data."""
    client = store.client_for(policy, "oncall")
    try:
        holder = await client.get(lease_key(policy.redis.key_prefix, policy.service))
    finally:
        await client.aclose()
    state, evidence, active = await read_inputs(policy, now)
    regions: dict[str, Any] = {}
    for name in policy.region_names:
        rs = state.regions.get(name) if state else None
        ev = evidence[name]
        o = active.by_region.get(name)
        regions[name] = {
            "state": str(rs.name) if rs else None,
            "serving_fraction": rs.serving_fraction if rs else None,
            "since": rs.since if rs else None,
            "hold_down_until": rs.hold_down_until if rs else None,
            "reasons": list(rs.reasons) if rs else [],
            "users_to": (state.matrix.get(name) if state else None),
            "n": ev.n,
            "p99_ms": ev.p99_ms,
            "over_slo_fraction": ev.over_slo_fraction,
            "error_rate": ev.error_rate,
            "ttft_p99_ms": ev.ttft_p99_ms,
            "stale": ev.stale,
            "unreadable": ev.unreadable,
            "override": o.to_dict() if o else None,
        }
    return {
        "service": policy.service,
        "leader": holder.decode() if isinstance(holder, bytes) else holder,
        "evaluated_at": state.evaluated_at if state else None,
        "freeze": active.freeze.to_dict() if active.freeze else None,
        "regions": regions,
    }


def _dns_weights(policy: Policy) -> dict[str, int | None] | str:
    from botocore.exceptions import BotoCoreError, ClientError

    from trafficd.dns.route53.client import route53_client
    from trafficd.dns.route53.provider import own_weights

    try:
        return own_weights(policy, route53_client(policy))
    except (BotoCoreError, ClientError) as exc:
        return f"unreadable: {exc}"


def _fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def render(data: dict[str, Any], now: float) -> str:
    lines = [f"service {data['service']}: leader {data['leader'] or 'NONE (no controller holds the lease)'}"]
    if data["evaluated_at"]:
        lines.append(f"last evaluation {now - data['evaluated_at']:.1f}s ago")
    if data["freeze"]:
        f = data["freeze"]
        lines.append(f"FROZEN until {time.strftime('%H:%M:%S', time.gmtime(f['expires_at']))}Z: {f['reason']}")
    dns = data.get("dns_weights")
    for name, r in data["regions"].items():
        weight = "" if not isinstance(dns, dict) else f" dns_weight={dns.get(name)}"
        lines.append(
            f"{name:<14} {r['state'] or 'no state':<11} serving={_fmt(r['serving_fraction'], digits=2)}{weight} "
            f"p99={_fmt(r['p99_ms'], 'ms')} n={r['n']} over_slo={_fmt(100 * r['over_slo_fraction'], '%', 2)} "
            f"errors={_fmt(100 * r['error_rate'], '%', 2)}"
            + (" STALE" if r["stale"] else "")
            + (" UNREADABLE" if r["unreadable"] else "")
        )
        if r["users_to"]:
            spill = {d: round(v, 3) for d, v in r["users_to"].items() if v > 0 and d != name}
            if spill:
                lines.append(f"{'':14} its users also go to: {spill}")
        if r["override"]:
            o = r["override"]
            until = time.strftime("%H:%M:%S", time.gmtime(o["expires_at"]))
            lines.append(f"{'':14} override {o['kind']} until {until}Z by {o['created_by']}: {o['reason']}")
        if r["hold_down_until"] and r["hold_down_until"] > now:
            lines.append(f"{'':14} hold-down for {r['hold_down_until'] - now:.0f}s more")
    if isinstance(dns, str):
        lines.append(f"Route 53: {dns}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy).policy
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    now = time.time()
    try:
        data = asyncio.run(gather(policy, now))
    except RedisError as exc:
        print(f"Redis unreadable: {exc}", file=sys.stderr)
        return 1
    if not args.no_dns:
        data["dns_weights"] = _dns_weights(policy)
    print(json.dumps(data, indent=2) if args.json else render(data, now))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="leader, region states, weights, overrides (reads Redis and Route 53)")
    p.add_argument("--policy", required=True, help="policy file (YAML)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-dns", action="store_true", help="do not read Route 53")
    p.set_defaults(func=_run)
