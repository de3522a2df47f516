"""Judging regions (pure): evidence → per-region state machine → guards → traffic matrix.

`evaluate(policy, state, evidence, overrides, now)` is the one function the controller and `trafficd simulate`
call. It does no I/O and reads no clock; the same inputs always give the same `Evaluation`.

Per region (DESIGN §4): the evidence gets a verdict — `unknown` (stale, unreadable, missing, too few samples),
`breach` (exact `over_slo_fraction > 1 - slo.quantile` with n ≥ min_samples; the fast rule; error rate; TTFT),
`recovered` (p99 from the histogram under `recover.below` × SLO, error rate and TTFT likewise), or `ok` (in
between). A phase carries the hysteresis: `normal` → (trip after `trip.evaluations` breaching evaluations or the
fast rule) → `down` → (recovered for `recover.evaluations` and past the hold-down) → `up` → back to `normal` at
full serving. Breaching again while `up` re-trips and grows the hold-down. Unknown holds everything.
The direction the phase asks for becomes a one-step move of the serving fraction, then the guards filter it and
the planner turns the fractions into the traffic matrix. State names shown to humans derive from phase + motion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from trafficd.decide import guards, planner
from trafficd.decide.planner import EPS
from trafficd.decide.state import ControllerState, Phase, RegionState
from trafficd.model import Overrides, RegionEvidence, RegionStateName, TrafficMatrix
from trafficd.policy.schema import FastRule, Policy
from trafficd.stats.sketch import exceeds_quantile

__all__ = ["ControllerState", "Decision", "Evaluation", "Phase", "RegionState", "Verdict", "evaluate", "verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # guards.BREACH / RECOVERED / OK / UNKNOWN
    rules: tuple[str, ...]  # triggers that fired (p99, fast_rule, error_rate, ttft) or why unknown
    reasons: tuple[str, ...]
    severity: float = 0.0


def _fast_rule(fast: FastRule | None, ev: RegionEvidence) -> bool:
    """k of the last m probes over the SLO (when the store gives more than m, the same proportion)."""
    if fast is None or ev.recent_n <= 0 or ev.recent_over < fast.over:
        return False
    return ev.recent_n <= fast.of_last or ev.recent_over / ev.recent_n >= fast.over / fast.of_last


def _over_quantile(fraction: float, n: int, q: float) -> bool:
    """Exact q-quantile-over-threshold test on counts (a float `fraction > 1 - q` is wrong at q = 0.9)."""
    return exceeds_quantile(round(fraction * n), n, q)


def verdict(policy: Policy, ev: RegionEvidence | None) -> Verdict:
    """What this window's evidence says about a region, with the reasons in words."""
    if ev is None:
        return Verdict(guards.UNKNOWN, ("no_evidence",), ("no evidence for this region",))
    if ev.unreadable:
        return Verdict(guards.UNKNOWN, ("unreadable",), ("stats store unreadable",))
    if ev.stale:
        return Verdict(guards.UNKNOWN, ("stale",), ("agent heartbeat or newest sample is stale",))
    q = policy.slo.quantile
    q_tail = 1.0 - q
    min_n = policy.windows.min_samples
    enough = ev.n >= min_n
    rules: list[str] = []
    reasons: list[str] = []
    slo_ms = policy.slo_threshold_ms
    if enough and _over_quantile(ev.over_slo_fraction, ev.n, q):
        rules.append("p99")
        reasons.append(f"{ev.over_slo_fraction:.2%} of {ev.n} samples over {slo_ms:g}ms (> {q_tail:.2%})")
    fast = policy.trip.fast_rule
    if _fast_rule(fast, ev):
        rules.append("fast_rule")
        reasons.append(f"fast rule: {ev.recent_over} of the last {ev.recent_n} probes over the SLO")
    if enough and ev.error_rate > policy.slo.error_rate:
        rules.append("error_rate")
        reasons.append(f"error rate {ev.error_rate:.2%} > {policy.slo.error_rate:.2%}")
    ttft_ms = policy.ttft_threshold_ms
    if ttft_ms is not None and ev.ttft_n >= min_n and _over_quantile(ev.ttft_over_slo_fraction, ev.ttft_n, q):
        rules.append("ttft")
        reasons.append(f"{ev.ttft_over_slo_fraction:.2%} of TTFTs over {ttft_ms:g}ms")
    if rules:
        severity = ev.over_slo_fraction + ev.error_rate + ev.ttft_over_slo_fraction
        if ev.recent_n:
            severity += ev.recent_over / ev.recent_n
        return Verdict(guards.BREACH, tuple(rules), tuple(reasons), severity)
    if not enough:
        return Verdict(guards.UNKNOWN, ("too_few_samples",), (f"{ev.n} samples < min_samples {min_n}",))
    below = policy.recover.below
    p99_ok = ev.p99_ms is not None and ev.p99_ms < below * slo_ms
    err_ok = ev.error_rate <= below * policy.slo.error_rate
    ttft_ok = ttft_ms is None or ev.ttft_p99_ms is None or ev.ttft_p99_ms < below * ttft_ms
    if p99_ok and err_ok and ttft_ok:
        return Verdict(guards.RECOVERED, ("below_recover",), (f"p99 {ev.p99_ms:g}ms < {below * slo_ms:g}ms",))
    p99_txt = "unknown" if ev.p99_ms is None else f"{ev.p99_ms:g}ms"
    return Verdict(guards.OK, ("within_slo",), (f"within the SLO, p99 {p99_txt} not under {below * slo_ms:g}ms",))


@dataclass(frozen=True, slots=True)
class _Step:
    state: RegionState
    direction: int  # -1 shed one step, 0 hold, +1 restore one step
    rule: str
    reasons: tuple[str, ...]


def hold_down_s(policy: Policy, trip_times: tuple[float, ...]) -> float:
    """hold_down × 2^(trips - 1), capped at hold_down_max; trips older than hold_down_decay are forgotten."""
    trips = max(1, len(trip_times))
    return float(min(policy.recover.hold_down * 2 ** (trips - 1), policy.recover.hold_down_max))


def _trip(policy: Policy, prev: RegionState, now: float, rule: str, reasons: tuple[str, ...]) -> _Step:
    keep = tuple(t for t in prev.trip_times if now - t < policy.recover.hold_down_decay)
    trips = (*keep, now)[-32:]
    hold_s = hold_down_s(policy, trips)
    why = (*reasons, f"trip {len(trips)} within {policy.recover.hold_down_decay:g}s: hold-down {hold_s:g}s")
    state = replace(prev, phase=Phase.DOWN, recover_streak=0, trip_times=trips, hold_down_until=now + hold_s)
    return _Step(state, -1, rule, why)


def _machine(policy: Policy, prev: RegionState, v: Verdict, now: float) -> _Step:
    """One evaluation of the hysteresis for one region (before guards)."""
    if v.kind == guards.UNKNOWN:
        return _Step(replace(prev, breach_streak=0, recover_streak=0), 0, "unknown", v.reasons)
    k = policy.trip.evaluations
    if v.kind == guards.BREACH:
        streak = prev.breach_streak + 1
        state = replace(prev, breach_streak=streak, recover_streak=0)
        tripping = "fast_rule" in v.rules or streak >= k
        why = (*v.reasons, f"breaching {streak} of {k} evaluations")
        if prev.phase == Phase.DOWN:
            # Every breach pushes the hold-down: recovery may start only hold_down after the last breach.
            until = max(prev.hold_down_until or now, now + hold_down_s(policy, prev.trip_times))
            state = replace(state, hold_down_until=until)
            return _Step(state, -1, "draining", (*v.reasons, "still breaching: shed one more step"))
        if tripping:
            return _trip(policy, state, now, "trip" if prev.phase == Phase.NORMAL else "retrip", why)
        return _Step(state, 0, "breach", why)
    # ok or recovered
    streak = prev.recover_streak + 1 if v.kind == guards.RECOVERED else 0
    state = replace(prev, breach_streak=0, recover_streak=streak)
    if prev.phase == Phase.NORMAL:
        if prev.serving_fraction < 1.0 - EPS:
            return _Step(state, +1, "restore", (*v.reasons, "not tripped: ramp back to full serving"))
        return _Step(state, 0, "healthy", v.reasons)
    if prev.phase == Phase.UP:
        if v.kind == guards.RECOVERED:
            return _Step(state, +1, "recover", (*v.reasons, "recovering: one step up"))
        return _Step(state, 0, "hold", (*v.reasons, "not under the recovery threshold: hold"))
    m = policy.recover.evaluations
    wait_s = (prev.hold_down_until or 0.0) - now
    if v.kind != guards.RECOVERED:
        return _Step(state, 0, "hold", (*v.reasons, f"recovery needs p99 < {policy.recover.below:.0%} of SLO"))
    if streak < m:
        return _Step(state, 0, "recovery_pending", (*v.reasons, f"below the recovery threshold {streak} of {m}"))
    if wait_s > EPS:
        return _Step(state, 0, "hold_down", (*v.reasons, f"hold-down: {wait_s:g}s left"))
    return _Step(replace(state, phase=Phase.UP), +1, "recover", (*v.reasons, f"recovered for {streak} of {m}"))


def _name(
    policy: Policy, step: _Step, v: Verdict, before: float, after: float, drained_by_hand: bool
) -> RegionStateName:
    floor = policy.ramp.min_fraction
    if v.kind == guards.UNKNOWN:
        return RegionStateName.UNKNOWN
    phase = step.state.phase
    if drained_by_hand or phase == Phase.DOWN:
        if after <= floor + EPS and after < 1.0 - EPS:
            return RegionStateName.DRAINED
        if after >= 1.0 - EPS:
            return RegionStateName.BREACHING if v.kind == guards.BREACH else RegionStateName.RECOVERING
        if after > before + EPS:
            return RegionStateName.RECOVERING
        return RegionStateName.DRAINING
    if phase == Phase.UP:
        return RegionStateName.HEALTHY if after >= 1.0 - EPS else RegionStateName.RECOVERING
    if step.state.breach_streak > 0:
        return RegionStateName.BREACHING
    return RegionStateName.RECOVERING if after < 1.0 - EPS else RegionStateName.HEALTHY


@dataclass(frozen=True, slots=True)
class Decision:
    """One region's decision at one evaluation, with everything needed to explain it."""

    region: str
    evidence: RegionEvidence | None
    verdict: Verdict
    state_before: RegionStateName
    state_after: RegionStateName
    fraction_before: float
    fraction_after: float
    weights_before: dict[str, float]
    weights_after: dict[str, float]
    decided_by: str  # the judge's rule or the last guard that changed the plan
    rule: str  # the judge's rule, before guards
    guards: tuple[str, ...]
    reasons: tuple[str, ...]
    breach_streak: int
    recover_streak: int
    hold_down_until: float | None

    @property
    def changed(self) -> bool:
        return self.state_before != self.state_after or abs(self.fraction_after - self.fraction_before) > EPS

    def to_log(self) -> dict[str, Any]:
        ev = self.evidence
        return {
            "region": self.region,
            "p99_ms": None if ev is None else ev.p99_ms,
            "n": 0 if ev is None else ev.n,
            "error_rate": None if ev is None else round(ev.error_rate, 6),
            "over_slo_fraction": None if ev is None else ev.over_slo_fraction,
            "ttft_p99_ms": None if ev is None else ev.ttft_p99_ms,
            "verdict": self.verdict.kind,
            "triggers": list(self.verdict.rules),
            "state_before": str(self.state_before),
            "state_after": str(self.state_after),
            "serving_fraction_before": self.fraction_before,
            "serving_fraction_after": self.fraction_after,
            "weights_before": dict(self.weights_before),
            "weights_after": dict(self.weights_after),
            "decided_by": self.decided_by,
            "rule": self.rule,
            "guards": list(self.guards),
            "reasons": list(self.reasons),
            "breach_streak": self.breach_streak,
            "recover_streak": self.recover_streak,
            "hold_down_until": self.hold_down_until,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: ControllerState
    matrix: TrafficMatrix
    decisions: tuple[Decision, ...]
    guard_events: tuple[guards.GuardEvent, ...] = ()
    fail_open: bool = False
    frozen: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_log(self) -> dict[str, Any]:
        """The evaluation-wide facts (fail open, freeze, every guard change) for one summary log event."""
        return {
            "fail_open": self.fail_open,
            "frozen": self.frozen,
            "notes": list(self.notes),
            "guard_events": [e.to_log() for e in self.guard_events],
        }

    def decision(self, region: str) -> Decision:
        return next(d for d in self.decisions if d.region == region)

    @property
    def fractions(self) -> dict[str, float]:
        return {d.region: d.fraction_after for d in self.decisions}


def active_overrides(overrides: Overrides, now: float) -> Overrides:
    """Only the overrides still in force at `now` (expiry is checked here too, not only by Redis)."""
    freeze = overrides.freeze if overrides.freeze and overrides.freeze.expires_at > now else None
    by_region = {r: o for r, o in overrides.by_region.items() if o.expires_at > now}
    return Overrides(freeze=freeze, by_region=by_region)


def evaluate(
    policy: Policy,
    state: ControllerState,
    evidence: Mapping[str, RegionEvidence],
    overrides: Overrides,
    now: float,
) -> Evaluation:
    """Judge every region of the policy, filter the moves through the guards, plan the traffic matrix."""
    names = policy.region_names
    prev = {r: state.regions.get(r, RegionState()) for r in names}
    verdicts = {r: verdict(policy, evidence.get(r)) for r in names}
    steps = {r: _machine(policy, prev[r], verdicts[r], now) for r in names}
    active = active_overrides(overrides, now)
    proposals: guards.Plan = {}
    for r in names:
        before = prev[r].serving_fraction
        target = {-1: policy.ramp.min_fraction, 0: before, 1: 1.0}[steps[r].direction]
        desired = guards.step_towards(policy, before, target) if steps[r].direction else before
        proposals[r] = guards.Proposal(r, before, desired, steps[r].rule, steps[r].reasons)
    order = sorted(names, key=lambda r: (prev[r].serving_fraction >= 1.0 - EPS, names.index(r)))
    spare = planner.headroom(policy, evidence)
    avoid = frozenset(
        r for r in names if verdicts[r].kind in (guards.BREACH, guards.UNKNOWN) or steps[r].state.phase != Phase.NORMAL
    )
    hold = frozenset(r for r in names if verdicts[r].kind == guards.UNKNOWN)  # unknown holds its spill-over too
    ctx = guards.GuardContext(
        policy=policy,
        now=now,
        overrides=active,
        verdicts={r: v.kind for r, v in verdicts.items()},
        severity={r: v.severity for r, v in verdicts.items()},
        last_step_at={r: prev[r].last_step_at for r in names},
        spare=spare,
        order=order,
        avoid=avoid,
        previous=state.matrix,
        hold=hold,
    )
    final, events = guards.apply_guards(ctx, proposals)
    fractions = {r: final[r].desired for r in names}
    matrix = planner.plan(policy, fractions, spare, order, avoid, previous=state.matrix, hold=hold)
    regions: dict[str, RegionState] = {}
    decisions = []
    for r in names:
        p, step, before = final[r], steps[r], prev[r].serving_fraction
        after = p.desired
        hand = r in active.by_region and active.by_region[r].kind == "drain" and "override" in p.guards
        name = _name(policy, step, verdicts[r], before, after, hand)
        new = step.state
        if new.phase == Phase.UP and after >= 1.0 - EPS:
            new = replace(new, phase=Phase.NORMAL)
        moved = abs(after - before) > EPS
        new = replace(
            new,
            name=name,
            serving_fraction=after,
            last_step_at=now if moved else new.last_step_at,
            since=now if name != prev[r].name else prev[r].since,
            reasons=p.reasons,
        )
        regions[r] = new
        decisions.append(
            Decision(
                region=r,
                evidence=evidence.get(r),
                verdict=verdicts[r],
                state_before=prev[r].name,
                state_after=name,
                fraction_before=before,
                fraction_after=after,
                weights_before=dict(state.matrix.get(r) or _identity_row(names, r)),
                weights_after=dict(matrix[r]),
                decided_by=p.decided_by,
                rule=step.rule,
                guards=p.guards,
                reasons=p.reasons,
                breach_streak=new.breach_streak,
                recover_streak=new.recover_streak,
                hold_down_until=new.hold_down_until,
            )
        )
    new_state = ControllerState(regions=regions, matrix=matrix, evaluated_at=now, evaluations=state.evaluations + 1)
    return Evaluation(
        state=new_state,
        matrix=matrix,
        decisions=tuple(decisions),
        guard_events=events,
        fail_open=any(e.guard == "fail_open" for e in events),
        frozen=active.freeze is not None,
        notes=tuple(ctx.notes),
    )


def _identity_row(names: list[str], src: str) -> dict[str, float]:
    return {dst: (1.0 if dst == src else 0.0) for dst in names}
