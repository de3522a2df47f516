"""`trafficd history`: what the controller decided and did, and why — from the audit stream in Redis.

    trafficd history --policy F [--since 2h] [--until TIME] [--region R] [--kind decision] [--json]

Every entry names its evaluation id (the same id as in the controller's log events) and its reasons, so "why was
eu-west drained at 03:12" is `trafficd history --policy F --region eu-west --since 03:00 --until 03:30`.
`--since`/`--until` take a duration back from now (`90m`, `2h`) or a UTC time (`03:00`, `2026-12-02T03:00`,
`2026-12-02T03:00:00Z`). The stream keeps about 20,000 entries and 14 days (`runtime/audit.py`).
Exit codes: 0 shown (also when nothing happened), 1 Redis unreadable, 2 bad arguments, 78 bad policy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from trafficd.cli import add_policy_argument, open_policy
from trafficd.errors import TransientError
from trafficd.runtime import audit
from trafficd.runtime.logs import iso_time

if TYPE_CHECKING:
    from trafficd.policy.schema import Policy

# The policy schema and redis-py are imported by the handler: `history --help` needs neither.

EX_USAGE = 2


def parse_when(text: str, now: float) -> float:
    """A duration back from `now` (`2h`) or a UTC time (`03:12`, `2026-12-02T03:12`, with or without `Z`)."""
    from trafficd.policy.values import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    raw = text.strip().removesuffix("Z").removesuffix("z")
    try:
        clock = dt.time.fromisoformat(raw)
    except ValueError:
        clock = None
    if clock is not None:  # a time of day: today (UTC), or yesterday when that is still to come
        today = dt.datetime.fromtimestamp(now, tz=dt.UTC).date()
        at = dt.datetime.combine(today, clock, tzinfo=dt.UTC).timestamp()
        return at - 86_400.0 if at > now else at
    try:
        stamp = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"not a duration or a UTC time: {text!r} (e.g. 2h, 90m, 03:12, 2026-12-02T03:12Z)") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()


async def fetch(
    policy: Policy, since: float, until: float | None, region: str | None, kinds: list[str] | None
) -> list[audit.Entry]:
    from trafficd.stats.client import client_for  # not stats.store: the sink brings aiohttp and metrics

    client = client_for(policy, "oncall")
    try:
        return await audit.read(
            client, policy.redis.key_prefix, policy.service, since=since, until=until, region=region, kinds=kinds
        )
    finally:
        await client.aclose()


def _line(e: audit.Entry) -> str:
    when = iso_time(e.at)[:-5] + "Z"  # to the second
    ev = f"eval {e.evaluation_id}" if e.evaluation_id else "eval -"
    return f"{when}  {ev:<12} {e.kind:<9} {e.summary}"


def _evidence(e: audit.Entry) -> str | None:
    d = e.detail
    if e.kind != "decision" or d.get("n") is None:
        return None
    parts = [f"n={d['n']}"]
    if d.get("p99_ms") is not None:
        parts.insert(0, f"p99 {d['p99_ms']:.0f} ms")
    if d.get("n"):
        parts.append(f"errors {100 * float(d.get('error_rate') or 0):.2f}%")
    if d.get("guards"):
        parts.append("guards " + ", ".join(d["guards"]))
    parts.append(f"policy {e.policy_hash}")
    return "evidence: " + ", ".join(parts)


def render(entries: list[audit.Entry], since: float, region: str | None) -> str:
    scope = f" for {region}" if region else ""
    if not entries:
        return f"nothing recorded{scope} since {iso_time(since)[:-5]}Z"
    lines = []
    for e in entries:
        lines.append(_line(e))
        evidence = _evidence(e)
        if evidence:
            lines.append(f"{'':34} {evidence}")
    return "\n".join(lines)


def as_json(entries: list[audit.Entry]) -> list[dict[str, Any]]:
    """Entries as JSON objects, times as ISO 8601 UTC."""
    out = []
    for e in entries:
        d = e.to_dict()
        d["at"] = iso_time(e.at)
        for key in ("hold_down_until", "expires_at", "created_at"):
            if isinstance(d.get(key), int | float) and d[key] > 1e9:
                d[key] = iso_time(float(d[key]))
        out.append(d)
    return out


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from redis.exceptions import RedisError

    policy = open_policy(args)  # bad policy 78, unknown region 2 (trafficd.cli)
    now = time.time()
    try:
        since = parse_when(args.since, now)
        until = None if args.until is None else parse_when(args.until, now)
    except ValueError as exc:
        print(f"trafficd history: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        entries = asyncio.run(fetch(policy, since, until, args.region, args.kind))
    except (RedisError, OSError) as exc:
        raise TransientError(f"cannot read the audit stream from Redis at {policy.redis.url}: {exc}") from exc
    print(json.dumps(as_json(entries), indent=2) if args.json else render(entries, since, args.region))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="decisions, guards, overrides and Route 53 changes, with their reasons")
    add_policy_argument(p)
    p.add_argument("--since", default="2h", help="a duration back (2h, 90m) or a UTC time (03:00); default 2h")
    p.add_argument("--until", default=None, help="end: a duration back or a UTC time (default: now)")
    p.add_argument("--region", default=None, help="only entries about this region (and global ones)")
    p.add_argument("--kind", action="append", choices=audit.KINDS, help="only these kinds (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list)")
    p.set_defaults(func=_run)
