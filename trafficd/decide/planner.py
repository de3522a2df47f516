"""Serving fractions → traffic matrix (pure).

Each region R has a serving fraction s_R: the share of R's own users that R keeps. The rest, 1 - s_R, is R's
displaced share; it goes to *receivers* — regions serving fully (s = 1) — in R's preference order
(`regions.R.neighbours` first, then the remaining regions in policy order), each up to its spare capacity.

Capacity: a receiver's headroom is the extra traffic it can take as a share of its own. We do not know traffic
volumes, so every region's users count as one unit of traffic (documented in docs/judge.md). The headroom used is
the smaller of the declared `capacity_headroom` and the live figure in the evidence, when either is known; a
region with neither is unlimited. A displaced share that fits nowhere stays at its source, so every row of the
matrix sums to exactly 1 and no weight set is ever all zero.

Sources are placed in the order given (the judge puts regions already shedding first, so that a new drain never
takes headroom away from one in progress). Given the previous matrix, a source first keeps the destinations it
already spills to (if still trusted and with room), so spill-over does not hop between neighbours and a region
that has just recovered is not handed someone else's users all at once. A receiver in `hold` (unknown: no
evidence) keeps exactly the shares it already receives — unknown holds everything about a region, the spill-over
it takes included — and gets no new ones.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from trafficd.model import RegionEvidence, TrafficMatrix
from trafficd.policy.schema import Policy

EPS = 1e-9


def tidy(x: float) -> float:
    """Round away float noise (0.1 + 0.2) so that fractions compare and print cleanly."""
    return round(x, 9) + 0.0


def preference(policy: Policy, source: str) -> list[str]:
    """Where `source`'s displaced users go, best first: its neighbours, then every other region in policy order."""
    listed = [n for n in policy.regions[source].neighbours if n != source]
    rest = [r for r in policy.region_names if r != source and r not in listed]
    return listed + rest


def sticky_preference(policy: Policy, source: str, previous: TrafficMatrix | None) -> list[str]:
    """Preference, but the destinations `source` spilled to last time first: spill-over does not hop around."""
    pref = preference(policy, source)
    row = (previous or {}).get(source, {})
    used = [d for d in pref if row.get(d, 0.0) > EPS]
    return used + [d for d in pref if d not in used]


def headroom(policy: Policy, evidence: Mapping[str, RegionEvidence]) -> dict[str, float | None]:
    """Spare capacity per region: min(declared, live) when known, None when unlimited (nothing declared)."""
    out: dict[str, float | None] = {}
    for name, region in policy.regions.items():
        known = [h for h in (region.capacity_headroom, _live(evidence.get(name))) if h is not None]
        out[name] = max(0.0, min(known)) if known else None
    return out


def _live(ev: RegionEvidence | None) -> float | None:
    if ev is None or ev.stale or ev.unreadable:
        return None
    return ev.headroom


@dataclass(frozen=True, slots=True)
class Allocation:
    """Where each source's displaced share went (`moved[src][dst]`) and what fit nowhere (`unplaced[src]`)."""

    moved: dict[str, dict[str, float]]
    unplaced: dict[str, float]


def receivers(fractions: Mapping[str, float]) -> list[str]:
    return [r for r, s in fractions.items() if s >= 1.0 - EPS]


def allocate(
    policy: Policy,
    fractions: Mapping[str, float],
    spare: Mapping[str, float | None],
    order: Sequence[str] | None = None,
    avoid: Collection[str] = (),
    last_resort: bool = True,
    previous: TrafficMatrix | None = None,
    hold: Collection[str] = (),
) -> Allocation:
    """Greedy placement of every displaced share, source by source in `order`, by preference and headroom.

    Receivers in `avoid` (breaching, tripped or unknown) are used only in a second pass and only when
    `last_resort` is true: a drain already in place then keeps its users away from the source rather than
    snapping back, but no guard lets a region start shedding onto them.
    """
    takers = set(receivers(fractions))
    remaining: dict[str, float | None] = {r: spare.get(r) for r in takers}
    moved: dict[str, dict[str, float]] = {}
    need: dict[str, float] = {}
    sources = list(order if order is not None else policy.region_names)
    for src in sources:
        if 1.0 - fractions[src] > EPS:
            need[src] = 1.0 - fractions[src]
            moved[src] = {}
    _pin_held(need, moved, remaining, takers, hold, previous)
    tiers = [False, True] if last_resort else [False]
    for distrusted in tiers:
        for src in need:
            for dst in sticky_preference(policy, src, previous):
                if dst not in takers or dst in hold or (dst in avoid) != distrusted or need[src] <= EPS:
                    continue
                avail = remaining[dst]
                take = need[src] if avail is None else min(need[src], avail)
                if take <= EPS:
                    continue
                moved[src][dst] = moved[src].get(dst, 0.0) + take
                need[src] -= take
                if avail is not None:
                    remaining[dst] = avail - take
    unplaced = {src: (n if n > EPS else 0.0) for src, n in need.items()}
    return Allocation(moved=moved, unplaced=unplaced)


def _pin_held(
    need: dict[str, float],
    moved: dict[str, dict[str, float]],
    remaining: dict[str, float | None],
    takers: set[str],
    hold: Collection[str],
    previous: TrafficMatrix | None,
) -> None:
    """Receivers in `hold` keep the shares they received last time (as far as the source still sheds them)."""
    for src in need:
        for dst in hold:
            share = (previous or {}).get(src, {}).get(dst, 0.0)
            if dst == src or dst not in takers or share <= EPS:
                continue
            take = min(share, need[src])
            moved[src][dst] = take
            need[src] -= take
            if remaining[dst] is not None:
                remaining[dst] = max(0.0, (remaining[dst] or 0.0) - take)


def plan(
    policy: Policy,
    fractions: Mapping[str, float],
    spare: Mapping[str, float | None],
    order: Sequence[str] | None = None,
    avoid: Collection[str] = (),
    previous: TrafficMatrix | None = None,
    hold: Collection[str] = (),
) -> TrafficMatrix:
    """The traffic matrix for these serving fractions: row = source, value = share served by each destination."""
    names = policy.region_names
    alloc = allocate(policy, fractions, spare, order, avoid, previous=previous, hold=hold)
    matrix: TrafficMatrix = {}
    for src in names:
        row = {dst: 0.0 for dst in names}
        for dst, share in alloc.moved.get(src, {}).items():
            row[dst] = tidy(share)
        row[src] = tidy(1.0 - sum(v for d, v in row.items() if d != src))
        matrix[src] = row
    return matrix
