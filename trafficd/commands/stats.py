"""`trafficd stats`: the window statistics the controller sees, per region, worker, model and worker × model.

Reads Redis exactly as the controller does (`StatsView.detail`), for the trip and the long window, with each
region's live load and headroom (`stats/capacity_store.py`, docs/capacity.md), and prints a table (or `--json`).
Logs go to stderr so that stdout stays data. Exit codes: 0 shown, 75 Redis unreadable, 2 unknown region, 78 bad
policy (or Redis password unusable).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from trafficd.cli import add_policy_argument, open_policy
from trafficd.errors import EX_TEMPFAIL

if TYPE_CHECKING:  # imported by the handler (`_collect`): `stats --help` needs neither redis-py nor the schema
    from trafficd.policy.schema import Policy
    from trafficd.stats.view import GroupStats, RegionDetail
    from trafficd.stats.window import WindowStats


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms"


def _age(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s ago"


def _window(w: WindowStats | None) -> str:
    if w is None or w.n == 0:
        return "n=0"
    return (
        f"n={w.n} err={w.error_rate:.2%} over_slo={w.over_slo_fraction:.2%} p50={_ms(w.p50_ms)} "
        f"p90={_ms(w.p90_ms)} p99={_ms(w.p99_ms)} p999={_ms(w.p999_ms)} ttft_p99={_ms(w.ttft_p99_ms)} "
        f"ttft_over={w.ttft_over_slo_fraction:.2%}"
    )


def render(detail: dict[str, RegionDetail], policy: Policy, capacity: dict[str, Any] | None = None) -> str:
    """The human table: one block per region, then its workers, models and worker × model series."""
    trip, long = int(policy.windows.trip), int(policy.windows.long)
    lines: list[str] = []
    for region, d in detail.items():
        if d.unreadable:
            lines.append(f"{region}: UNREADABLE (Redis could not be read)")
            continue
        stale = d.newest_sample_age_s is None or d.newest_sample_age_s > policy.windows.stale_after
        stale = stale or d.heartbeat_age_s is None or d.heartbeat_age_s > policy.windows.stale_after
        lines.append(
            f"{region}{' [STALE]' if stale else ''}: newest sample {_age(d.newest_sample_age_s)}, heartbeat "
            f"{_age(d.heartbeat_age_s)}, rejected for clock skew {d.rejected_clock_skew_total}"
        )
        if (capacity or {}).get(region) is not None:
            lines.append(f"  capacity {_capacity((capacity or {})[region])}")
        lines.append(f"  region   {trip}s: {_window(d.trip)}")
        lines.append(f"           {long}s: {_window(d.long)}")
        groups: list[tuple[str, dict[str, GroupStats]]] = [
            ("worker", d.workers),
            ("model", d.models),
            ("series", d.series),
        ]
        for kind, group in groups:
            for name, g in group.items():
                lines.append(f"  {kind:<8} {name}")
                lines.append(f"           {trip}s: {_window(g.trip)}")
                lines.append(f"           {long}s: {_window(g.long)}")
    return "\n".join(lines)


def _capacity(c: Any) -> str:
    """One region's live capacity (stats/capacity.py: RegionCapacity)."""
    age = "" if c.age_s is None else f", {c.age_s:.0f}s old"
    if c.source != "live":
        stale = f" (workers {', '.join(c.stale_workers)})" if c.stale_workers else ""
        return f"{c.source.upper()}{age}{stale}: the declared capacity_headroom is used"
    room = "unknown" if c.headroom_rps is None else f"{c.headroom_rps:.3g} req/s"
    kv = "" if c.kv_usage is None else f", KV {100 * c.kv_usage:.0f}%"
    return f"load {c.load_rps:.3g} req/s, headroom {room} (live{age}, {c.workers} workers{kv})"


async def _collect(policy: Policy, now: float) -> tuple[dict[str, RegionDetail], dict[str, Any]]:
    from trafficd.stats import capacity_store
    from trafficd.stats.client import TRANSIENT, client_for  # not stats.store: the sink brings aiohttp and metrics
    from trafficd.stats.view import StatsView

    client = client_for(policy, "oncall")
    try:
        detail = await StatsView(client, policy).detail(now)
        try:
            capacity: dict[str, Any] = dict(await capacity_store.read(client, policy, now))
        except TRANSIENT:
            capacity = {}
        return detail, capacity
    finally:
        await client.aclose()


def _stats(args: argparse.Namespace) -> int:
    import asyncio

    policy = open_policy(args)  # bad policy 78, unknown region 2; an unusable Redis password 78 (trafficd.cli)
    detail, capacity = asyncio.run(_collect(policy, time.time()))
    if args.region is not None:
        detail = {args.region: detail[args.region]}
    if args.json:
        out = {r: {**dataclasses.asdict(d), "capacity": _capacity_json(capacity.get(r))} for r, d in detail.items()}
        print(json.dumps(out, indent=2))
    else:
        print(render(detail, policy, capacity))
    if any(d.unreadable for d in detail.values()):
        print(f"cannot read the statistics from Redis at {policy.redis.url}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


def _capacity_json(c: Any) -> dict[str, Any] | None:
    return None if c is None else dataclasses.asdict(c)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="window statistics per region, worker and model, as the controller sees them")
    add_policy_argument(p)
    p.add_argument("--region", default=None, help="only this region")
    p.add_argument("--json", action="store_true", help="JSON instead of the table")
    p.set_defaults(func=_stats)
