"""Where each region's users would go if it were drained, by volume and by units: `bench-decisions --load
us-east=100,eu-west=20 --headroom us-east=60,eu-west=10` (requests/s per region; docs/capacity.md).

Runs the planner's own code (`planner.headroom`, `planner.plan`) on live figures given on the command line, once
by volume (the figures) and once by the old unit rule (the policy's declared `capacity_headroom`), and prints for
each region drained to 0 where its users' requests/s go and what stays at it.
"""

from __future__ import annotations

import math
from typing import Any

from trafficd.decide import planner
from trafficd.errors import UsageError
from trafficd.model import RegionEvidence
from trafficd.policy.schema import Policy


def figures(text: str | None, what: str) -> dict[str, float]:
    """`us-east=100,eu-west=20` → {region: value}; a bad pair is a usage error naming it."""
    out: dict[str, float] = {}
    for pair in filter(str.strip, (text or "").split(",")):
        name, _, value = pair.partition("=")
        try:
            rps = float(value)
        except ValueError:
            rps = -1.0
        if not 0.0 <= rps < math.inf:
            raise UsageError(f"--{what}: {pair!r} is not REGION=REQUESTS_PER_S (a number ≥ 0)")
        out[name.strip()] = rps
    return out


def table(policy: Policy, load: dict[str, float], headroom: dict[str, float]) -> list[dict[str, Any]]:
    """One row per region drained to 0: its users' req/s, where they go by volume and by units, what stays."""
    unknown = sorted(set(load) - set(policy.regions)) + sorted(set(headroom) - set(policy.regions))
    if unknown:
        raise UsageError(f"unknown region {unknown[0]!r}; the regions are {policy.region_names}")
    evidence = {
        r: RegionEvidence(
            region=r,
            n=1000,
            load_rps=load.get(r),
            headroom_rps=headroom.get(r),
            capacity_source="live" if r in load else "missing",
        )
        for r in policy.region_names
    }
    by_volume, by_units = planner.headroom(policy, evidence), planner.headroom(policy, {})
    rows = []
    for r in policy.region_names:
        fractions = {x: (0.0 if x == r else 1.0) for x in policy.region_names}
        users = load.get(r, 0.0)
        vol = planner.plan(policy, fractions, by_volume)[r]
        unit = planner.plan(policy, fractions, by_units)[r]
        rows.append(
            {
                "drained": r,
                "users_rps": users,
                "by_volume_rps": {d: round(v * users, 3) for d, v in vol.items() if v > 0},
                "by_units_rps": {d: round(v * users, 3) for d, v in unit.items() if v > 0},
            }
        )
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["spill-over if drained (req/s; the region itself = what stays):"]
    for row in rows:

        def fmt(m: dict[str, float]) -> str:
            return ", ".join(f"{d} {v:g}" for d, v in m.items()) or "-"

        lines.append(f"  {row['drained']:<14} users {row['users_rps']:g} req/s")
        lines.append(f"    by volume: {fmt(row['by_volume_rps'])}")
        lines.append(f"    by units:  {fmt(row['by_units_rps'])}")
    return "\n".join(lines)
