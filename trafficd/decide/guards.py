"""Guards: named filters on the judge's desired serving fractions, applied in a fixed order (pure).

Each guard takes the plan (one `Proposal` per region: fraction before, desired fraction, who decided) and returns
it, possibly changed, with one `GuardEvent` per change, so that every change a guard makes is logged by name.
A guard may only veto or shrink a move (never invent a bigger one), except `override` (a human decision),
`fail_open` (ramp back), the `max_drained` swap (a weaker holder ramps back) and `never_all_zero` (keeps one region
serving).

Order (see docs/judge.md for why it differs slightly from the list in DESIGN §5):
frozen · override · never_drain · fail_open · cooldown · max_drained · min_serving_regions · capacity ·
never_all_zero.

A region counts as *shedding* when its fraction is below 1 (max_drained) and as *serving* when it is above 0
(min_serving_regions). Overrides given with --force bypass freeze, max_drained and min_serving_regions; other
overrides go first when slots are scarce. Fail open leaves overrides and unknown regions alone (unknown holds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from trafficd.decide import planner
from trafficd.decide.planner import EPS, tidy
from trafficd.model import Override, Overrides, TrafficMatrix
from trafficd.policy.schema import Policy

# Verdict kinds the judge gives each region's evidence.
BREACH, RECOVERED, OK, UNKNOWN = "breach", "recovered", "ok", "unknown"


@dataclass(frozen=True, slots=True)
class Proposal:
    region: str
    before: float
    desired: float
    decided_by: str  # the judge's rule, or the last guard that changed it
    reasons: tuple[str, ...] = ()
    guards: tuple[str, ...] = ()  # every guard that changed this region's plan, in order


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """One guard changing the plan (region None: a global decision such as fail open)."""

    guard: str
    region: str | None
    wanted: float | None
    allowed: float | None
    reason: str

    def to_log(self) -> dict[str, Any]:
        return {
            "guard": self.guard,
            "region": self.region,
            "serving_fraction_wanted": self.wanted,
            "serving_fraction_allowed": self.allowed,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class GuardContext:
    policy: Policy
    now: float
    overrides: Overrides  # only those in force at `now`
    verdicts: Mapping[str, str]  # region → BREACH / RECOVERED / OK / UNKNOWN
    severity: Mapping[str, float]  # higher = worse; who drains first when slots are scarce
    last_step_at: Mapping[str, float | None]
    spare: Mapping[str, float | None]  # headroom per region (planner.headroom)
    order: Sequence[str]  # placement order for the planner (regions already shedding first)
    avoid: frozenset[str] = frozenset()  # receivers of last resort only (breaching, tripped, unknown)
    previous: TrafficMatrix | None = None  # last matrix: spill-over keeps its destinations
    hold: frozenset[str] = frozenset()  # unknown receivers: keep the spill-over they receive, take no new
    global_episode: bool = False  # the judge's fail-open decision: most regions' evidence leans towards a breach
    notes: list[str] = field(default_factory=list)


Proposals = dict[str, Proposal]
Guard = Callable[[GuardContext, Proposals], tuple[Proposals, list[GuardEvent]]]


def _bite(plan: Proposals, region: str, guard: str, allowed: float, reason: str) -> GuardEvent:
    p = plan[region]
    allowed = p.before if abs(allowed - p.before) <= EPS else tidy(allowed)  # holding keeps the exact value
    plan[region] = replace(
        p, desired=allowed, decided_by=guard, reasons=(*p.reasons, reason), guards=(*p.guards, guard)
    )
    return GuardEvent(guard, region, p.desired, allowed, reason)


def _override(ctx: GuardContext, region: str) -> Override | None:
    o = ctx.overrides.by_region.get(region)
    if o is None or o.kind not in ("drain", "undrain"):
        return None
    if ctx.overrides.freeze is not None and not o.forced:
        return None  # frozen holds it until unfreeze
    return o


def _forced(ctx: GuardContext, region: str) -> bool:
    o = _override(ctx, region)
    return o is not None and o.forced


def _priority(ctx: GuardContext, region: str) -> tuple[int, float, int]:
    """Sort key: overrides first, then the worst evidence, then policy order."""
    return (
        0 if _override(ctx, region) else 1,
        -ctx.severity.get(region, 0.0),
        ctx.policy.region_names.index(region),
    )


def step_towards(policy: Policy, before: float, target: float) -> float:
    """One ramp step from `before` towards `target`, at most `ramp.max_step`, never below `ramp.min_fraction`."""
    step = policy.ramp.max_step
    floor = policy.ramp.min_fraction
    if target < before:
        return before if before <= floor else tidy(max(floor, target, before - step))
    return before if before >= 1.0 else tidy(min(1.0, target, before + step))


# ---------------------------------------------------------------- the guards


def frozen(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """Global kill switch: nothing moves (forced overrides excepted) until `trafficd unfreeze`."""
    f = ctx.overrides.freeze
    if f is None:
        return plan, []
    events = []
    for r, p in plan.items():
        if abs(p.desired - p.before) > EPS and not _forced(ctx, r):
            events.append(_bite(plan, r, "frozen", p.before, f"frozen: {f.reason}"))
    return plan, events


def override(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """On-call drain/undrain: ramp towards the floor / full serving whatever the evidence says."""
    events = []
    for r, p in plan.items():
        o = _override(ctx, r)
        if o is None:
            continue
        target = ctx.policy.ramp.min_fraction if o.kind == "drain" else 1.0
        wanted = step_towards(ctx.policy, p.before, target)
        why = f"manual {o.kind} until {o.expires_at:.0f}: {o.reason}"
        ev = _bite(plan, r, "override", wanted, why)
        if abs(wanted - p.desired) > EPS:
            events.append(ev)
    return plan, events


def never_drain(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """Regions listed in `guards.never_drain` never shed automatically (an on-call drain still works)."""
    events = []
    for r in ctx.policy.guards.never_drain:
        p = plan.get(r)
        if p is None or _override(ctx, r) is not None or p.desired >= p.before - EPS:
            continue
        why = "never_drain: the policy forbids draining this region automatically"
        events.append(_bite(plan, r, "never_drain", p.before, why))
    return plan, events


def fail_open(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """Most regions' evidence leaning towards a breach at once (the judge's global episode) is a global or probe
    problem: drain nothing, ramp back."""
    if not ctx.global_episode or ctx.overrides.freeze is not None:
        return plan, []
    why = (
        f"fail open: at least {ctx.policy.guards.fail_open_share:.0%} of the regions show breach evidence within "
        "one trip window, a global or probe problem"
    )
    ctx.notes.append(why)
    events = [GuardEvent("fail_open", None, None, None, why)]
    for r, p in plan.items():
        if _override(ctx, r) is not None or ctx.verdicts.get(r) == UNKNOWN:
            continue
        wanted = step_towards(ctx.policy, p.before, 1.0)
        if abs(wanted - p.desired) > EPS:
            events.append(_bite(plan, r, "fail_open", wanted, why))
    return plan, events


def cooldown(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """At most one step per region per `ramp.cooldown` (≥ TTL + propagation), both ways."""
    events = []
    cool_s = ctx.policy.ramp.cooldown
    for r, p in plan.items():
        last = ctx.last_step_at.get(r)
        if abs(p.desired - p.before) <= EPS or last is None:
            continue
        wait_s = last + cool_s - ctx.now
        if wait_s > EPS:
            events.append(_bite(plan, r, "cooldown", p.before, f"cooldown: last step {ctx.now - last:g}s ago"))
    return plan, events


SWAP_FACTOR = 2.0  # a blocked region takes a slot when its evidence is this many times worse than the holder's


def max_drained(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """At most `guards.max_drained` regions shedding at once; those already shedding keep their slot, unless a
    blocked region's evidence is clearly worse (`SWAP_FACTOR`): then the weakest holder ramps back up (one step per
    cooldown) and the worse region takes the slot once it is free (the swap is logged at every step)."""
    limit = ctx.policy.guards.max_drained
    shedding = [r for r, p in plan.items() if p.desired < 1.0 - EPS]
    if len(shedding) <= limit:
        return plan, []
    used = sum(1 for r in shedding if plan[r].before < 1.0 - EPS or _forced(ctx, r))
    newcomers = sorted(
        (r for r in shedding if plan[r].before >= 1.0 - EPS and not _forced(ctx, r)),
        key=lambda r: _priority(ctx, r),
    )
    events: list[GuardEvent] = []
    blocked: list[str] = []
    for r in newcomers:
        if used < limit:
            used += 1
            continue
        blocked.append(r)
        holders = ", ".join(x for x in ctx.policy.region_names if x != r and plan[x].desired < 1.0 - EPS)
        why = f"max_drained: {limit} region(s) already shedding ({holders or 'none'})"
        events.append(_bite(plan, r, "max_drained", plan[r].before, why))
    if blocked:
        events.extend(_swap(ctx, plan, blocked[0]))
    return plan, events


def _swap(ctx: GuardContext, plan: Proposals, worse: str) -> list[GuardEvent]:
    """Ramp the weakest automatic holder of a slot back up when `worse` has clearly worse evidence."""
    sev = ctx.severity.get(worse, 0.0)
    holders = [
        r
        for r, p in plan.items()
        if r != worse and p.before < 1.0 - EPS and _override(ctx, r) is None and ctx.verdicts.get(r) != UNKNOWN
    ]
    if ctx.verdicts.get(worse) != BREACH or not holders:
        return []
    weakest = min(holders, key=lambda r: (ctx.severity.get(r, 0.0), ctx.policy.region_names.index(r)))
    if sev < SWAP_FACTOR * ctx.severity.get(weakest, 0.0) or sev <= 0.0:
        return []
    last = ctx.last_step_at.get(weakest)
    p = plan[weakest]
    up = step_towards(ctx.policy, p.before, 1.0)
    if last is not None and last + ctx.policy.ramp.cooldown - ctx.now > EPS:
        up = p.before  # the holder ramps back within its own cooldown
    why = (
        f"max_drained swap: {worse}'s evidence ({sev:.2%} over) is worse than {weakest}'s "
        f"({ctx.severity.get(weakest, 0.0):.2%}): {weakest} ramps back to free its slot"
    )
    return [_bite(plan, weakest, "max_drained", max(up, p.desired), why)]


def min_serving_regions(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """Never fewer than `guards.min_serving_regions` regions serving (fraction > 0)."""
    need = ctx.policy.guards.min_serving_regions
    serving = sum(1 for p in plan.values() if p.desired > EPS)
    zeroing = sorted(
        (r for r, p in plan.items() if p.desired <= EPS < p.before and not _forced(ctx, r)),
        key=lambda r: _priority(ctx, r),
        reverse=True,
    )
    events = []
    for r in zeroing:
        if serving >= need:
            break
        serving += 1
        why = f"min_serving_regions: at least {need} region(s) must keep serving"
        events.append(_bite(plan, r, "min_serving_regions", plan[r].before, why))
    return plan, events


def capacity(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """Shed no more than the receivers' headroom can take (by neighbour preference)."""
    fractions = {r: p.desired for r, p in plan.items()}
    alloc = planner.allocate(
        ctx.policy, fractions, ctx.spare, ctx.order, ctx.avoid, last_resort=False, previous=ctx.previous, hold=ctx.hold
    )
    events = []
    for r, p in plan.items():
        short = alloc.unplaced.get(r, 0.0)
        if short <= EPS or p.desired >= p.before - EPS:
            continue
        allowed = min(p.before, p.desired + short)
        if allowed - p.desired > EPS:
            placed = 1.0 - p.desired - short
            why = f"capacity: healthy neighbours can take only {placed:.3g} of this region's users"
            if isinstance(ctx.spare, planner.Spare) and ctx.spare.by_volume:
                why = _volume_reason(ctx, ctx.spare, r, short)
            events.append(_bite(plan, r, "capacity", allowed, why))
    return plan, events


def _volume_reason(ctx: GuardContext, spare: planner.Spare, region: str, short: float) -> str:
    """The capacity guard's figures by volume: the source's load and demand, each receiver's headroom, what stays."""
    loads = spare.load or {}
    demand = planner.demand_rps(loads, ctx.previous, region)
    offers = []
    for dst in planner.sticky_preference(ctx.policy, region, ctx.previous):
        if dst in ctx.avoid or dst in ctx.hold or ctx.verdicts.get(dst) == UNKNOWN:
            continue
        room, basis, age = spare.get(dst), spare.basis.get(dst, "?"), spare.age_s.get(dst)
        figure = "unlimited" if room is None else f"{room:.3g} req/s"
        offers.append(f"{dst} {figure} ({basis}{'' if age is None else f', {age:.0f}s old'})")
    return (
        f"capacity: {region} serves {loads.get(region, 0.0):.3g} req/s of its users' {demand:.3g}; receivers' "
        f"headroom: {', '.join(offers) or 'none'}; {short * demand:.3g} req/s ({short:.0%} of its users) stay at "
        f"{region}"
    )


def never_all_zero(ctx: GuardContext, plan: Proposals) -> tuple[Proposals, list[GuardEvent]]:
    """Some region always keeps serving: all-zero weights make Route 53 spread traffic evenly."""
    if any(p.desired > EPS for p in plan.values()):
        return plan, []
    best = max(plan.values(), key=lambda p: (p.before, -ctx.policy.region_names.index(p.region)))
    allowed = best.before if best.before > EPS else step_towards(ctx.policy, 0.0, 1.0)
    return plan, [_bite(plan, best.region, "never_all_zero", allowed, "never_all_zero: one region must serve")]


ORDER: tuple[tuple[str, Guard], ...] = (
    ("frozen", frozen),
    ("override", override),
    ("never_drain", never_drain),
    ("fail_open", fail_open),
    ("cooldown", cooldown),
    ("max_drained", max_drained),
    ("min_serving_regions", min_serving_regions),
    ("capacity", capacity),
    ("never_all_zero", never_all_zero),
)


def apply_guards(ctx: GuardContext, plan: Mapping[str, Proposal]) -> tuple[Proposals, tuple[GuardEvent, ...]]:
    """Run every guard in ORDER; return the final plan and every change any guard made."""
    current = dict(plan)
    events: list[GuardEvent] = []
    for _name, guard in ORDER:
        current, made = guard(ctx, current)
        events.extend(made)
    return current, tuple(events)


def check_manual_drain(
    policy: Policy, region: str, overrides: Overrides, fractions: Mapping[str, float] | None = None
) -> list[str]:
    """Why an on-call drain of `region` would not happen (empty: allowed), found by running the real judge on the
    proposed override (drain_check.py). `fractions`: the controller's stored serving fractions."""
    from trafficd.decide import drain_check  # it runs the judge, which imports this module

    return drain_check.check(policy, region, overrides, fractions)
