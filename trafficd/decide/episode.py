"""Global episodes (pure): telling a global or probe problem from a regional one, over time (docs/judge.md §1).

A region *leans* towards a breach when some signal's trip evidence reached `LEAN_SHARE` of its threshold, and
counts as leaning for one trip window after that. While at least `guards.fail_open_share` of the regions lean,
the evaluation is a **global episode**: nothing trips, drained regions ramp back (guard `fail_open`).

Two rules keep a global problem from moving weights before the episode is recognised, and after it:

- **warm hold**: a region whose evidence reaches its threshold does not trip while at least `fail_open_share` of
  the regions (itself included) show breach evidence of `WARM_SHARE` of their threshold: at 2–3 % over
  everywhere the first region to reach its threshold would otherwise trip a few evaluations before the others
  lean. At the healthy rate another region's evidence is that high only a few % of the time (the CUSUM's tail
  is ≈ e^−x), so a real regional breach is rarely held, and then only until the others' evidence decays.
- **fresh evidence**: when an episode ends, every region's breach evidence is forgotten and a breach verdict
  reached on the old evidence becomes `ok`: a region needs fresh evidence of its own to trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from trafficd.decide import evidence as acc
from trafficd.decide import guards
from trafficd.decide.decision import Verdict
from trafficd.decide.planner import EPS
from trafficd.policy.schema import Policy

if TYPE_CHECKING:
    from trafficd.decide.judge import Judged

WARM_SHARE = 0.05  # another region's trip evidence at this share of h holds a trip (global problem suspected)


def global_episode(policy: Policy, judged: Mapping[str, Judged], now: float) -> bool:
    """True while at least `fail_open_share` of the regions leaned towards a breach within the last trip window."""
    names = policy.region_names
    leaning = [r for r in names if (judged[r].state.lean_until or 0.0) > now]
    if not leaning:
        return False
    return len(leaning) / len(names) >= policy.guards.fail_open_share - EPS


def forget_breach_evidence(judged: dict[str, Judged]) -> None:
    """After a global episode every region needs fresh evidence of its own to trip: its breach evidence is
    forgotten, and a breach verdict reached on it becomes `ok`."""
    for r, j in judged.items():
        v = j.verdict
        if v.kind == guards.BREACH:
            why = "a global episode just ended: breach evidence forgotten, fresh evidence of its own needed to trip"
            v = Verdict(guards.OK, ("after_global_episode",), (*v.reasons, why), v.severity)
        judged[r] = replace(j, verdict=v, state=replace(j.state, trip_llr={}, lean_until=None))


def warm(policy: Policy, judged: Mapping[str, Judged]) -> list[str]:
    """Regions whose breach evidence reached WARM_SHARE of their threshold (unknown ones do not count)."""
    out = []
    for r in policy.region_names:
        j = judged[r]
        if j.verdict.kind == guards.UNKNOWN:
            continue
        hs = acc.thresholds(policy, r)
        if any(j.state.trip_llr.get(s, 0.0) >= WARM_SHARE * h for s, h in hs.items()):
            out.append(r)
    return out


def overwhelming(policy: Policy, region: str, j: Judged) -> bool:
    """Breach evidence at its cap (twice the threshold, e.g. a hard stall's first failures): trips even when a global
    problem is suspected (a global episode still holds it)."""
    hs = acc.thresholds(policy, region)
    return any(j.state.trip_llr.get(s, 0.0) >= 2.0 * h - 1e-6 for s, h in hs.items())


def suspected(policy: Policy, judged: Mapping[str, Judged]) -> bool:
    """A global problem is suspected: at least `fail_open_share` of the regions are warm (a trip then waits)."""
    names = policy.region_names
    return len(warm(policy, judged)) / len(names) >= policy.guards.fail_open_share - EPS
