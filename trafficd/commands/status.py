"""`trafficd status`: what on-call needs first — who leads with which policy, each region's state and why.

Reads the controller's stored state, the lease, the leader's last evaluation, the overrides and the trip-window
evidence from Redis, and (unless `--no-dns`) the owned records from Route 53. Writes nothing. Text for a person
at 3 a.m., `--json` for scripts (times as ISO 8601 UTC). For the per-worker/per-model breakdown use `trafficd
stats`; for what happened before, `trafficd history`.

Exit codes: 0 a leader holds and every region is judged · 75 Redis unreadable · 3 no controller holds the lease
(nothing moves DNS) · 4 a region is unknown (its weights are held) · 78 bad policy. 3 wins over 4.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from trafficd.cli import add_policy_argument
from trafficd.errors import TransientError

if TYPE_CHECKING:
    from trafficd.policy.schema import Policy

# Start-up time is part of this command's job (on-call runs it first; target 0.3 s, `bench-cli`): the module
# imports only what `status --help` needs; the handler imports the policy schema, redis-py and the Redis readers,
# and Route 53 (boto3; the zone listing, not the provider and its DNS verification) only without --no-dns.

EX_NO_LEADER = 3
EX_REGION_UNKNOWN = 4
HEADINGS = f"{'REGION':<14} {'STATE':<11} {'SERVING':>7} {'DNS':>4} {'P99':>8} {'N':>6} {'OVER SLO':>8} {'ERRORS':>7}"
_TIME_KEYS = ("since", "hold_down_until", "evaluated_at", "expires_at", "created_at", "at")


async def _leader(policy: Policy) -> tuple[str | None, dict[str, Any] | None, list[dict[str, Any]]]:
    from trafficd.control import presence
    from trafficd.keys import lease_key
    from trafficd.runtime import audit
    from trafficd.stats.client import client_for  # not stats.store: the sink brings aiohttp and metrics

    client = client_for(policy, "oncall")
    try:
        holder = await client.get(lease_key(policy.redis.key_prefix, policy.service))
        last = await audit.read_last_evaluation(client, policy.redis.key_prefix, policy.service)
        watchers = await presence.watchers(client, policy)
    finally:
        await client.aclose()
    return (holder.decode() if isinstance(holder, bytes) else holder), last, watchers


def _region(name: str, rs: Any, ev: Any, o: Any, matrix: Any) -> dict[str, Any]:
    unknown = (rs is not None and str(rs.name) == "unknown") or ev.stale or ev.unreadable
    return {
        "state": str(rs.name) if rs else None,
        "unknown": bool(unknown),
        "serving_fraction": rs.serving_fraction if rs else None,
        "since": rs.since if rs else None,
        "hold_down_until": rs.hold_down_until if rs else None,
        "reasons": list(rs.reasons) if rs else [],
        "users_to": matrix.get(name) if matrix else None,
        "n": ev.n,
        "p99_ms": ev.p99_ms,
        "over_slo_fraction": ev.over_slo_fraction if ev.n else None,
        "error_rate": ev.error_rate if ev.n else None,
        "ttft_p99_ms": ev.ttft_p99_ms,
        "heartbeat_age_s": ev.heartbeat_age_s,
        "stale": ev.stale,
        "unreadable": ev.unreadable,
        "override": o.to_dict() if o else None,
        "capacity": _capacity(ev),
    }


def _capacity(ev: Any) -> dict[str, Any] | None:
    """Live load and headroom (docs/capacity.md); None when the region reads no live capacity."""
    if ev.capacity_source is None:
        return None
    return {
        "source": ev.capacity_source,
        "load_rps": ev.load_rps,
        "headroom_rps": ev.headroom_rps,
        "age_s": ev.capacity_age_s,
        "kv_usage": ev.kv_usage,
    }


async def gather(policy: Policy, now: float) -> dict[str, Any]:
    """Everything `status` shows, as plain data (epoch times; `as_json` turns them into ISO)."""
    holder, last, watchers = await _leader(policy)
    from trafficd.control.preview import read_inputs

    state, evidence, active = await read_inputs(policy, now)
    regions = {
        name: _region(
            name,
            state.regions.get(name) if state else None,
            evidence[name],
            active.by_region.get(name),
            state.matrix if state else None,
        )
        for name in policy.region_names
    }
    return {
        "service": policy.service,
        "leader": holder,
        "leader_policy_hash": last.get("policy_hash") if last else None,
        "leader_dry_run": last.get("dry_run") if last else None,
        "last_evaluation_id": last.get("evaluation_id") if last else None,
        "dry_run_watchers": watchers,
        "evaluated_at": state.evaluated_at if state else None,
        "freeze": active.freeze.to_dict() if active.freeze else None,
        "regions": regions,
    }


def exit_code(data: dict[str, Any]) -> int:
    """3 when no controller leads, else 4 when a region is unknown, else 0 (module docstring)."""
    if not data["leader"]:
        return EX_NO_LEADER
    if any(r["unknown"] for r in data["regions"].values()):
        return EX_REGION_UNKNOWN
    return 0


def _dns_weights(policy: Policy) -> dict[str, int | None] | str:
    from botocore.exceptions import BotoCoreError, ClientError

    from trafficd.dns import records
    from trafficd.dns.route53.client import list_zone, route53_client  # not the provider: it brings dnspython

    try:
        return records.own_weights(policy, list_zone(route53_client(policy), policy.dns.zone_id)[0])
    except (BotoCoreError, ClientError) as exc:
        return f"unreadable: {exc}"


# ---------------------------------------------------------------- text


def _hhmm(epoch: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(epoch))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _header(data: dict[str, Any], this_hash: str, now: float) -> list[str]:
    leader = data["leader"]
    if not leader:
        head = f"service {data['service']}: NO LEADER — no controller holds the lease; nothing moves DNS"
    else:
        head = f"service {data['service']}: leader {leader}"
        if data["leader_policy_hash"]:
            same = "same as this file" if data["leader_policy_hash"] == this_hash else f"this file: {this_hash}"
            head += f", policy {data['leader_policy_hash']} ({same})"
        if data["leader_dry_run"]:
            head += ", DRY RUN (writes no DNS)"
    lines = [head]
    for w in data.get("dry_run_watchers") or []:
        lines.append(f"dry-run watcher {w.get('id')} (policy {w.get('policy_hash')}): judges and logs, writes nothing")
    if data["evaluated_at"]:
        ev = f" ({data['last_evaluation_id']})" if data["last_evaluation_id"] else ""
        lines.append(f"last evaluation{ev} {now - data['evaluated_at']:.0f}s ago at {_hhmm(data['evaluated_at'])}")
    if data["freeze"]:
        f = data["freeze"]
        who = f" by {f['created_by']}" if f.get("created_by") else ""
        lines.append(f"FROZEN until {_hhmm(f['expires_at'])}{who}: {f['reason']} — no serving ratio moves")
    return lines


def _row(name: str, r: dict[str, Any], dns: Any) -> str:
    weight = "-" if not isinstance(dns, dict) or dns.get(name) is None else str(dns[name])
    serving = "-" if r["serving_fraction"] is None else f"{r['serving_fraction']:.2f}"
    p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.0f}ms"
    flags = (" STALE" if r["stale"] else "") + (" UNREADABLE" if r["unreadable"] else "")
    state = (r["state"] or "no state").upper() if r["unknown"] else (r["state"] or "no state")
    return (
        f"{name:<14} {state:<11} {serving:>7} {weight:>4} {p99:>8} {r['n']:>6} "
        f"{_pct(r['over_slo_fraction']):>8} {_pct(r['error_rate']):>7}{flags}"
    )


def _details(name: str, r: dict[str, Any], now: float) -> list[str]:
    pad = " " * 3
    lines = [f"{pad}why: {reason}" for reason in r["reasons"]]
    spill = {d: v for d, v in (r["users_to"] or {}).items() if v > 0 and d != name}
    if spill:
        lines.append(f"{pad}its users also go to: " + ", ".join(f"{d} {v:.2f}" for d, v in spill.items()))
    if r["override"]:
        o = r["override"]
        who = f" by {o['created_by']}" if o.get("created_by") else ""
        lines.append(f"{pad}MANUAL {o['kind'].upper()} until {_hhmm(o['expires_at'])}{who}: {o['reason']}")
    if r["hold_down_until"] and r["hold_down_until"] > now:
        lines.append(f"{pad}hold-down: no recovery for {r['hold_down_until'] - now:.0f}s more")
    if r["heartbeat_age_s"] is not None and r["stale"]:
        lines.append(f"{pad}newest agent heartbeat {r['heartbeat_age_s']:.0f}s ago")
    if r.get("capacity"):
        lines.append(f"{pad}{capacity_line(r['capacity'])}")
    return lines


def capacity_line(c: dict[str, Any]) -> str:
    """`load 100 req/s, headroom 30 req/s (live, 3s old, KV 45%)`, or why there are no live figures."""
    age = "" if c.get("age_s") is None else f", {c['age_s']:.0f}s old"
    if c["source"] != "live":
        return f"capacity: {c['source'].upper()}{age}: the declared capacity_headroom is used"
    room = "unknown" if c["headroom_rps"] is None else f"{c['headroom_rps']:.3g} req/s"
    kv = "" if c.get("kv_usage") is None else f", KV {100 * c['kv_usage']:.0f}%"
    return f"load {c['load_rps']:.3g} req/s, headroom {room} (live{age}{kv})"


def render(data: dict[str, Any], now: float, this_hash: str = "") -> str:
    """The text for a person: header, one row per region, then its reasons, spill-over and overrides."""
    lines = _header(data, this_hash, now)
    dns = data.get("dns_weights")
    lines.append(
        f"{'REGION':<14} {'STATE':<11} {'SERVING':>7} {'DNS':>4} {'P99':>8} {'N':>6} {'OVER SLO':>8} {'ERRORS':>7}"
    )
    for name, r in data["regions"].items():
        lines.append(_row(name, r, dns))
        lines.extend(_details(name, r, now))
    if isinstance(dns, str):
        lines.append(f"Route 53: {dns}")
    code = exit_code(data)
    if code == EX_REGION_UNKNOWN:
        unknown = [n for n, r in data["regions"].items() if r["unknown"]]
        lines.append(f"unknown (weights held): {', '.join(unknown)}")
    return "\n".join(lines)


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    """The same data with ISO 8601 times and the exit code."""
    from trafficd.runtime.logs import iso_time

    def iso(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: iso(v, k) for k, v in value.items()}
        if key in _TIME_KEYS and isinstance(value, int | float) and value > 1e9:
            return iso_time(float(value))
        return value

    out: dict[str, Any] = iso(data)
    out["exit_code"] = exit_code(data)
    return out


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from redis.exceptions import RedisError

    from trafficd.policy.schema import load_policy

    loaded = load_policy(args.policy)  # bad policy: every problem printed, exit 78 (trafficd.cli)
    policy = loaded.policy
    now = time.time()
    try:
        data = asyncio.run(gather(policy, now))
    except (RedisError, OSError) as exc:
        raise TransientError(f"Redis unreadable at {policy.redis.url}: {exc}") from exc  # exit 75
    if not args.no_dns:
        data["dns_weights"] = _dns_weights(policy)
    print(json.dumps(as_json(data), indent=2) if args.json else render(data, now, loaded.hash))
    return exit_code(data)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="leader, region states and why, weights, overrides (exit 3: no leader, 4: a region unknown)",
    )
    add_policy_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-dns", action="store_true", help="do not read Route 53")
    p.set_defaults(func=_run)
