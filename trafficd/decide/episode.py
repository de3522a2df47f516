"""Global episodes (pure): telling a global or probe problem from a regional one, over time (docs/judge.md §1).

A region *leans* towards a breach when some signal's trip evidence reached `LEAN_SHARE` of its threshold, and
counts as leaning for one trip window after that. While at least `guards.fail_open_share` of the regions lean,
the evaluation is a **global episode**: nothing trips, drained regions ramp back (guard `fail_open`).

Two rules keep a global problem from moving weights before the episode is recognised, and after it:

- **peer hold**: a region whose evidence reaches its threshold does not trip while at least `fail_open_share` of
  the regions (itself included) show breach evidence *over the span of its own*: each region keeps, per other
  region and signal, the log-likelihood ratio (breach rate against healthy rate, not reflected) the other region
  gathered since its own breach evidence was last 0 (`RegionState.peer_llr`). Another region shows breach evidence
  until that sum, on a signal that breaches this region, is at most −`PEER_MARGIN` × its threshold (clearly
  healthy); the trip waits until then. At a global onset the others gather evidence over the same span as the
  first region, so it waits; a healthy region's sum falls by KL(p0‖p1) per probe, so a regional breach waits only
  while its span is short or the others happen to look worse than usual. Evidence at its cap (twice the
  threshold, e.g. a hard stall) trips regardless.
- **fresh evidence**: when an episode ends, every region's breach evidence is forgotten and a breach verdict
  reached on the old evidence becomes `ok`: a region needs fresh evidence of its own to trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from trafficd.decide import evidence as acc
from trafficd.decide import guards, peers
from trafficd.decide.decision import Verdict
from trafficd.decide.planner import EPS
from trafficd.policy.schema import Policy

if TYPE_CHECKING:
    from trafficd.decide.judge import Judged


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
        judged[r] = replace(j, verdict=v, state=replace(j.state, trip_llr={}, span_counts=(), lean_until=None))


def track_spans(policy: Policy, judged: dict[str, Judged]) -> None:
    """Per `peers.SPAN_FROM` level: while a region's breach evidence is above that share of its threshold, every
    region's counts of this evaluation are added to that span; at or below it the span starts afresh (peers.py)."""
    names = policy.region_names
    for r in names:
        j = judged[r]
        hs = acc.thresholds(policy, r)
        level = max((v / hs[s] for s, v in j.state.trip_llr.items() if s in hs), default=0.0)
        old = j.state.span_counts
        spans: list[dict[str, tuple[int, int, int, int]]] = []
        for i, start in enumerate(peers.SPAN_FROM):
            if level <= start:
                spans.append({})
                continue
            prev = old[i] if i < len(old) else {}
            spans.append({q: _add(prev.get(q, (0, 0, 0, 0)), judged[q].consumed) for q in names})
        new = tuple(spans) if any(spans) else ()
        if new != old:
            judged[r] = replace(j, state=replace(j.state, span_counts=new))


def _add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def suspected(policy: Policy, region: str, judged: Mapping[str, Judged]) -> str | None:
    """Why `region`'s breach does not trip yet (a global problem is suspected: the other regions, pooled over its
    span, are not clearly healthy; peers.py), or None."""
    j = judged[region]
    if j.verdict.kind != guards.BREACH:
        return None
    known = [q for q in policy.region_names if q != region and judged[q].verdict.kind != guards.UNKNOWN]
    hs = acc.thresholds(policy, region)
    held = peers.hold(policy, region, j.state.span_counts, known, {s: hs[s] for s in j.verdict.rules if s in hs})
    if not held:
        return None
    shown = ", ".join(f"{s} {v:+.2f}" for s, v in sorted(held.items()))
    return (
        f"a global problem is suspected, no trip yet: over this region's span of evidence the other regions "
        f"(pooled) show breach evidence ({shown} of the threshold; clearly healthy at ≤ −{peers.PEER_MARGIN:g}); "
        "it trips once they are clearly healthy"
    )
