"""Where a new leader starts (pure): the stored state, aligned with what Route 53 holds now.

No start changes DNS. With no stored state (first start, Redis restarted empty) the state is the one the owned
records imply: each region's serving fraction is what DNS gives it now; a region serving less than fully is
taken as tripped (phase `down`, a fresh hold-down), so it stays where it is until the normal recovery brings it
back. With a stored state, every pool whose Route 53 shares differ from the stored matrix by more than the
0–255 weight rounding (a batch whose outcome the last leader never saw, a hand edit) is taken from Route 53, so
the next step starts from the truth and never jumps. (The controller also sends nothing in its first evaluation
as leader: a start itself never writes.)
"""

from __future__ import annotations

from dataclasses import replace

from trafficd.decide.planner import EPS, tidy
from trafficd.decide.state import ControllerState, Phase, RegionState
from trafficd.model import RegionStateName, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy

WEIGHT_TOLERANCE = 1.0 / 255  # one unit of a Route 53 weight: the rounding between a share and its record


def fractions_from_dns(policy: Policy, matrix: TrafficMatrix) -> dict[str, float]:
    """Each region's serving fraction as the records express it (a missing pool counts as serving fully)."""
    names = policy.region_names
    if policy.dns.topology == "weighted":  # one weighted record per region: a shedding region's column is lower
        row = next(iter(matrix.values()), {})
        top = max(row.values(), default=0.0)
        return {r: (tidy(min(1.0, row.get(r, 0.0) / top)) if top > EPS else 1.0) for r in names}
    return {r: tidy(matrix[r].get(r, 0.0)) if r in matrix else 1.0 for r in names}


def _tripped(policy: Policy, fraction: float, now: float) -> RegionState:
    floor = policy.ramp.min_fraction
    return RegionState(
        name=RegionStateName.DRAINED if fraction <= floor + EPS else RegionStateName.DRAINING,
        serving_fraction=fraction,
        phase=Phase.DOWN,
        last_step_at=now,
        trip_times=(now,),
        hold_down_until=now + policy.recover.hold_down,
        since=now,
        reasons=(f"started from Route 53: serving {fraction:.3g} of its users",),
    )


def state_from_dns(policy: Policy, matrix: TrafficMatrix, now: float) -> ControllerState:
    """The state the owned records imply (no stored state): drained regions stay drained."""
    names = policy.region_names
    fractions = fractions_from_dns(policy, matrix)
    regions = {
        r: (RegionState(since=now) if f >= 1.0 - EPS else _tripped(policy, f, now)) for r, f in fractions.items()
    }
    full = identity_matrix(names)
    return ControllerState(regions=regions, matrix={r: dict(matrix.get(r, full[r])) for r in names})


def _row_differs(a: dict[str, float], b: dict[str, float]) -> bool:
    return any(abs(a.get(d, 0.0) - b.get(d, 0.0)) > WEIGHT_TOLERANCE + EPS for d in set(a) | set(b))


def align_with_dns(
    policy: Policy, stored: ControllerState, matrix: TrafficMatrix, now: float
) -> tuple[ControllerState, list[str]]:
    """The stored state with every pool Route 53 disagrees on taken from Route 53; returns the regions changed."""
    names = policy.region_names
    full = identity_matrix(names)
    dns_fractions = fractions_from_dns(policy, matrix)
    regions = dict(stored.regions)
    rows = {r: dict(stored.matrix.get(r, full[r])) for r in names}
    changed = []
    for r in names:
        prev = regions.get(r, RegionState(since=now))
        dns_row = matrix.get(r, full[r])
        fraction_off = abs(prev.serving_fraction - dns_fractions[r]) > WEIGHT_TOLERANCE + EPS
        if not fraction_off and not _row_differs(rows[r], dns_row):
            continue
        changed.append(r)
        rows[r] = dict(dns_row)
        f = dns_fractions[r]
        if f < 1.0 - EPS and prev.phase == Phase.NORMAL:
            regions[r] = _tripped(policy, f, now)
        else:
            regions[r] = replace(prev, serving_fraction=f)
    return replace(stored, regions=regions, matrix=rows), changed
