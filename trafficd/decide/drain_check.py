"""The on-call drain pre-check (pure): run the real judge on the proposed override and report what it would do.

Instead of re-implementing max_drained, min_serving_regions and capacity, `check` replays `judge.evaluate` from the
controller's stored serving fractions with fresh but empty evidence (nothing to consume: the judge holds every
region where it is, only overrides move), first letting the overrides already in force take effect, then adding
the proposed drain and stepping it (one `ramp.cooldown` apart) until it reaches the floor or a guard stops it.
Every guard that stops the drained region is reported with the guard's own reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from trafficd.decide import judge, planner
from trafficd.decide.planner import EPS
from trafficd.decide.state import ControllerState, Phase, RegionState
from trafficd.model import Override, Overrides, RegionEvidence
from trafficd.policy.schema import Policy

BLOCKING = ("frozen", "max_drained", "min_serving_regions", "capacity", "never_all_zero")


def _start(policy: Policy, fractions: Mapping[str, float] | None) -> ControllerState:
    names = policy.region_names
    fr = {r: float((fractions or {}).get(r, 1.0)) for r in names}
    regions = {
        r: RegionState(serving_fraction=fr[r], phase=Phase.DOWN if fr[r] < 1.0 - EPS else Phase.NORMAL) for r in names
    }
    return ControllerState(regions=regions, matrix=planner.plan(policy, fr, planner.headroom(policy, {})))


def _neutral(policy: Policy) -> dict[str, RegionEvidence]:
    """Fresh evidence with no new probes: every region's verdict is `ok` (nothing to consume), so the judge holds
    them as they are while the healthy ones still count as receivers."""
    return {r: RegionEvidence(r, n=0, newest_sample_age_s=0.0, heartbeat_age_s=0.0) for r in policy.region_names}


def _steps(policy: Policy) -> int:
    return math.ceil(1.0 / max(policy.ramp.max_step, 0.01)) + 1


def _settle(policy: Policy, state: ControllerState, overrides: Overrides, now: float) -> tuple[ControllerState, float]:
    """Let the overrides already in force take effect (as they will before the new one)."""
    for _ in range(_steps(policy)):
        ev = judge.evaluate(policy, state, _neutral(policy), overrides, now)
        moved = any(abs(d.fraction_after - d.fraction_before) > EPS for d in ev.decisions)
        state, now = ev.state, now + policy.ramp.cooldown
        if not moved:
            break
    return state, now


def check(
    policy: Policy,
    region: str,
    overrides: Overrides,
    fractions: Mapping[str, float] | None = None,
    now: float = 0.0,
) -> list[str]:
    """Why an on-call drain of `region` would not happen as asked (empty: the judge would drain it to the floor)."""
    state, now = _settle(policy, _start(policy, fractions), overrides, now)
    proposed = Override("drain", region, "drain pre-check", now + 1e9, "pre-check", now)
    asked = Overrides(overrides.freeze, {**overrides.by_region, region: proposed})
    problems: list[str] = []
    if overrides.freeze is not None:  # the override guard ignores a drain that is not forced while frozen
        problems.append(f"frozen: nothing moves until `trafficd unfreeze` ({overrides.freeze.reason})")
        return problems
    for _ in range(_steps(policy)):
        ev = judge.evaluate(policy, state, _neutral(policy), asked, now)
        for e in ev.guard_events:
            if e.region == region and e.guard in BLOCKING and e.reason not in problems:
                problems.append(e.reason)
        d = ev.decision(region)
        if d.fraction_after <= policy.ramp.min_fraction + EPS or abs(d.fraction_after - d.fraction_before) <= EPS:
            break
        state, now = ev.state, now + policy.ramp.cooldown
    return problems
