"""Warnings on a valid policy: settings that are legal but probably not meant (`checks.warnings` runs these).

- `timing_warnings`: timers and deadlines that work against each other (cooldown under the DNS TTL, evaluations
  rarer than the trip window, probe deadlines not above the SLO they are judged against);
- `deprecated`: fields of the old point-estimate rule, still accepted and ignored, each naming what replaces it;
- `never_drain_warnings`: settings that together leave the controller nothing it may do;
- `capacity_warnings`: live capacity without a declared fallback headroom.

Each returns `(location, reason)` like `checks.py`; `trafficd policy check` prints them and
`--warnings-as-errors` fails on them.
"""

from __future__ import annotations

from trafficd.policy.load import Loc
from trafficd.policy.schema import Policy
from trafficd.policy.values import format_duration as _fmt


def timing_warnings(p: Policy) -> list[tuple[Loc, str]]:
    """Timers and deadlines that fit but work against each other: steps judged on stale weights, slices never
    judged, timeouts that never count as over the SLO."""
    out: list[tuple[Loc, str]] = []
    if p.ramp.cooldown < p.dns.ttl:
        out.append(
            (
                ("ramp", "cooldown"),
                f"({_fmt(p.ramp.cooldown)}) is shorter than dns.ttl ({p.dns.ttl}s): resolvers may still hold the "
                "previous weights when the next step is judged",
            )
        )
    if p.windows.evaluate_every > p.windows.trip:
        out.append((("windows", "evaluate_every"), "is longer than windows.trip: some slices are never judged"))
    if p.probe.deadlines.total <= p.slo.total_p99:
        out.append(
            (
                ("probe", "deadlines", "total"),
                f"({_fmt(p.probe.deadlines.total)}) is not above slo.total_p99 ({_fmt(p.slo.total_p99)}): a probe "
                "that times out is recorded at its deadline and never counts as over the SLO",
            )
        )
    if p.slo.ttft_p99 is not None and p.probe.deadlines.first_token <= p.slo.ttft_p99:
        out.append(
            (
                ("probe", "deadlines", "first_token"),
                f"({_fmt(p.probe.deadlines.first_token)}) is not above slo.ttft_p99 ({_fmt(p.slo.ttft_p99)}): "
                "a probe that times out never counts as over the TTFT SLO",
            )
        )
    return out


def capacity_warnings(p: Policy) -> list[tuple[Loc, str]]:
    """Live capacity without a declared fallback: stale metrics then let the region take no new spill-over."""
    out: list[tuple[Loc, str]] = []
    for name, region in p.regions.items():
        if region.capacity_headroom is None and p.capacity_for(name) is not None:
            out.append(
                (
                    ("regions", name),
                    "reads live capacity but declares no capacity_headroom: while its metrics are stale or "
                    "missing it takes no new spill-over (never an unlimited amount); declare one as the fallback",
                )
            )
    return out


_SEQUENTIAL = "deprecated: ignored since the sequential trip rule (docs/judge.md)"
DEPRECATED: tuple[tuple[Loc, str], ...] = (
    (
        ("windows", "min_samples"),
        "evidence accumulates probe by probe, so a window needs no minimum number of samples; remove it "
        "(`trafficd policy check` prints the detection delay the region's probe rate gives)",
    ),
    (
        ("trip", "evaluations"),
        "consecutive evaluations no longer count; remove it (how fast a region trips follows from "
        "trip.healthy_rate, trip.breach_rate and trip.false_trips per trip.false_trip_days)",
    ),
    (
        ("trip", "fast_rule", "over"),
        "a hard stall trips on its error evidence within the probe deadline + one evaluation; remove it "
        "(trip.fast_rule.of_last still sizes the recent-probe list `trafficd stats` shows)",
    ),
    (
        ("recover", "below"),
        "recovery is evidence that the rate is back at trip.healthy_rate, not the p99 value; remove it",
    ),
    (
        ("recover", "evaluations"),
        "recovery needs evidence of trip.healthy_rate as strong as a trip's, then recover.hold_down; remove it",
    ),
)


def _is_set(p: Policy, loc: Loc) -> bool:
    """Whether the policy file wrote this field (not the default)."""
    node: object = p
    for key in loc[:-1]:
        node = getattr(node, str(key), None)
        if node is None:
            return False
    return loc[-1] in getattr(node, "model_fields_set", ())


def deprecated(p: Policy) -> list[tuple[Loc, str]]:
    """Fields of the old point-estimate rule: still accepted (old policies load, a running daemon keeps working),
    ignored by the judge, and each a warning naming what replaces it."""
    return [(loc, f"{_SEQUENTIAL}; {what}") for loc, what in DEPRECATED if _is_set(p, loc)]


_NEVER = "trafficd can never drain a region"


def never_drain_warnings(p: Policy) -> list[tuple[Loc, str]]:
    """Settings that together leave the controller nothing it may do: legal (a dry run, a freeze by policy) but
    probably not meant; `policy check --warnings-as-errors` fails on them."""
    out: list[tuple[Loc, str]] = []
    g, n = p.guards, len(p.regions)
    if p.regions and set(g.never_drain) >= set(p.regions):
        out.append((("guards", "never_drain"), "lists every region: trafficd will never drain anything"))
    if g.max_drained == 0:
        out.append((("guards", "max_drained"), f"is 0: {_NEVER}; allow at least 1"))
    if g.min_serving_regions == n:
        out.append(
            (("guards", "min_serving_regions"), f"equals the number of regions ({n}): {_NEVER}; use at most {n - 1}")
        )
    if p.ramp.max_step == 0:
        out.append((("ramp", "max_step"), f"is 0%: no serving fraction can ever move, so {_NEVER}"))
    if p.ramp.min_fraction >= 1.0:
        out.append((("ramp", "min_fraction"), f"is 100%: a drained region keeps all its traffic, so {_NEVER}"))
    headrooms = [r.capacity_headroom for r in p.regions.values()]
    if n > 1 and all(h == 0 for h in headrooms):
        out.append(
            (
                ("regions", next(iter(p.regions)), "capacity_headroom"),
                f"every region's capacity_headroom is 0%: no neighbour can take spilled traffic, so {_NEVER}",
            )
        )
    return out
