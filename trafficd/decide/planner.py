"""Serving fractions → traffic matrix (pure).

Each region R has a serving fraction s_R: the share of R's own users that R keeps. The rest, 1 - s_R, is R's
displaced share; it goes to *receivers* — regions serving fully (s = 1) — in R's preference order
(`regions.R.neighbours` first, then the remaining regions in policy order), each up to its spare capacity.

Capacity (docs/capacity.md): a receiver takes displaced users up to its spare capacity, counted in one of two ways.
*By volume* when every region's live load is known (`RegionEvidence.load_rps`): spare is requests/s — the live
`headroom_rps`, else the declared `capacity_headroom` × the region's load — and a displaced share d of source S
costs d × D_S, S's users' demand (its load ÷ the share of its own users it served in the previous matrix). Live
headroom is measured with the current spill-over already on the receiver, so the spill a source already sends
to a receiver (previous matrix) costs nothing again; only new spill is charged. *By units* otherwise (the old
rule): spare is the smaller of the declared `capacity_headroom` and a live share, and every region's users
count as one unit. A region that reads live capacity but has no usable figures and declares nothing has spare 0,
never unlimited; a region with no capacity settings at all is unlimited. A displaced share that fits nowhere
stays at its source, so every row of the matrix sums to exactly 1 and no weight set is ever all zero.

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


class Spare(dict[str, float | None]):
    """Spare capacity per region (None: unlimited), in requests/s when `load` is given (by volume: every region's
    live load in requests/s), else in units of users (one unit per region). `basis[r]` says where r's figure came
    from (`live`, `declared`, `none`, `unlimited`, `unit`) and `age_s[r]` how old live figures were, for logs."""

    def __init__(
        self,
        values: Mapping[str, float | None],
        *,
        load: Mapping[str, float] | None = None,
        basis: Mapping[str, str] | None = None,
        age_s: Mapping[str, float | None] | None = None,
    ) -> None:
        super().__init__(values)
        self.load: dict[str, float] | None = dict(load) if load is not None else None
        self.basis = dict(basis or {})
        self.age_s = dict(age_s or {})

    @property
    def by_volume(self) -> bool:
        return self.load is not None


def headroom(policy: Policy, evidence: Mapping[str, RegionEvidence]) -> Spare:
    """Spare capacity per region: by volume (req/s) when some region's live load is known and not zero, else by
    units."""
    live = {r: v for r in policy.region_names if (v := _live_load(evidence.get(r))) is not None}
    if any(v > 0.0 for v in live.values()):  # idle regions alone give no scale for a region of unknown load
        return _volume_spare(policy, evidence, live)
    return _unit_spare(policy, evidence)


def _live_load(ev: RegionEvidence | None) -> float | None:
    if ev is None or ev.unreadable or ev.capacity_source != "live":
        return None
    return ev.load_rps


def _volume_spare(policy: Policy, evidence: Mapping[str, RegionEvidence], live: Mapping[str, float]) -> Spare:
    """Requests/s per receiver. A region whose load is unknown is assumed as busy as the busiest known one when it
    sheds (its spill is not under-counted) and as idle as the least busy one when it receives (declared share)."""
    high, low = max(live.values()), min(live.values())
    values: dict[str, float | None] = {}
    basis: dict[str, str] = {}
    for name, region in policy.regions.items():
        ev = evidence.get(name)
        rps = ev.headroom_rps if ev is not None and name in live else None
        if rps is not None:
            values[name], basis[name] = max(0.0, rps), "live"
        elif region.capacity_headroom is not None:
            values[name], basis[name] = region.capacity_headroom * live.get(name, low), "declared"
        elif policy.capacity_for(name) is not None:
            values[name], basis[name] = 0.0, "none"  # live capacity configured, no figure: never unlimited
        else:
            values[name], basis[name] = None, "unlimited"
    loads = {r: live.get(r, high) for r in policy.region_names}
    ages = {r: (evidence[r].capacity_age_s if r in live and r in evidence else None) for r in policy.region_names}
    return Spare(values, load=loads, basis=basis, age_s=ages)


def _unit_spare(policy: Policy, evidence: Mapping[str, RegionEvidence]) -> Spare:
    """The unit rule: the declared share, or simulate's live `headroom` share, whichever is smaller."""
    values: dict[str, float | None] = {}
    basis: dict[str, str] = {}
    for name, region in policy.regions.items():
        known = [h for h in (region.capacity_headroom, _live_share(evidence.get(name))) if h is not None]
        if known:
            values[name], basis[name] = max(0.0, min(known)), "unit"
        elif policy.capacity_for(name) is not None:
            values[name], basis[name] = 0.0, "none"  # live capacity configured but unusable: never unlimited
        else:
            values[name], basis[name] = None, "unlimited"
    return Spare(values, basis=basis)


def _live_share(ev: RegionEvidence | None) -> float | None:
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


class _Budget:
    """What each receiver has left, and what a share of each source's users costs it (module docstring)."""

    def __init__(self, spare: Mapping[str, float | None], takers: Collection[str], previous: TrafficMatrix | None):
        self.remaining: dict[str, float | None] = {r: spare.get(r) for r in takers}
        loads = spare.load if isinstance(spare, Spare) else None
        self.cost: dict[str, float] = {}
        self.free: dict[tuple[str, str], float] = {}  # by volume: spill already carried (in the live headroom)
        if loads is None:
            return
        for src, row in (previous or {}).items():
            for dst, share in row.items():
                if dst != src and share > EPS:
                    self.free[(src, dst)] = share
        for src in loads:
            self.cost[src] = demand_rps(loads, previous, src)

    def take(self, src: str, dst: str, want: float) -> float:
        """How much of `src`'s displaced `want` (a share of its users) `dst` takes now; its spare is charged."""
        free = min(want, self.free.get((src, dst), 0.0))
        if free > 0.0:
            self.free[(src, dst)] -= free
        want -= free
        avail = self.remaining[dst]
        unit = self.cost.get(src, 1.0)
        if avail is None or unit <= EPS:
            return free + want
        paid = max(0.0, min(want, avail / unit))
        self.remaining[dst] = avail - paid * unit
        return free + paid

    def charge_held(self, src: str, dst: str, share: float) -> None:
        """A held (unknown) receiver keeps `share` whatever its spare; what was not carried already is charged."""
        free = min(share, self.free.get((src, dst), 0.0))
        if free > 0.0:
            self.free[(src, dst)] -= free
        avail = self.remaining[dst]
        if avail is not None:
            self.remaining[dst] = max(0.0, avail - (share - free) * self.cost.get(src, 1.0))


MIN_OWN_SHARE = 0.05  # below this a source's own load says too little about its users' demand


def demand_rps(loads: Mapping[str, float], previous: TrafficMatrix | None, src: str) -> float:
    """Requests/s of `src`'s users: its load ÷ the share of them it served in `previous` (they are what it
    serves); below MIN_OWN_SHARE served, at least as many as the busiest region's load."""
    load = loads.get(src, 0.0)
    own = (previous or {}).get(src, {}).get(src, 1.0)
    if own >= MIN_OWN_SHARE:
        return load / own
    return max(max(loads.values(), default=0.0), load / MIN_OWN_SHARE)


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
    budget = _Budget(spare, takers, previous)
    moved: dict[str, dict[str, float]] = {}
    need: dict[str, float] = {}
    sources = list(order if order is not None else policy.region_names)
    for src in sources:
        if 1.0 - fractions[src] > EPS:
            need[src] = 1.0 - fractions[src]
            moved[src] = {}
    _pin_held(need, moved, budget, takers, hold, previous)
    tiers = [False, True] if last_resort else [False]
    for distrusted in tiers:
        for src in need:
            for dst in sticky_preference(policy, src, previous):
                if dst not in takers or dst in hold or (dst in avoid) != distrusted or need[src] <= EPS:
                    continue
                take = budget.take(src, dst, need[src])
                if take <= EPS:
                    continue
                moved[src][dst] = moved[src].get(dst, 0.0) + take
                need[src] -= take
    unplaced = {src: (n if n > EPS else 0.0) for src, n in need.items()}
    return Allocation(moved=moved, unplaced=unplaced)


def _pin_held(
    need: dict[str, float],
    moved: dict[str, dict[str, float]],
    budget: _Budget,
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
            budget.charge_held(src, dst, take)


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
