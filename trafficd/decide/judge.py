"""Judging regions (pure): evidence → accumulated evidence → per-region state machine → guards → traffic matrix.

`evaluate(policy, state, evidence, overrides, now)` is the one function the controller and `trafficd simulate`
call. It does no I/O and reads no clock; the same inputs always give the same `Evaluation`.

Per region (docs/judge.md): the new slices of the evidence are consumed once into per-signal CUSUM statistics
(evidence.py) and give a verdict — `unknown` (stale, unreadable, missing: nothing consumed, nothing forgotten),
`breach` (some signal's evidence of the breach rate reached its threshold, which is derived from the false-alarm
budget in characteristic.py), `recovered` (every signal's evidence of the healthy rate reached it) or `ok`.
A phase carries the hysteresis: `normal` → (breach: trip) → `down` (shed a step while the breach evidence holds)
→ (recovered and past the hold-down) → `up` → back to `normal` at full serving. Breaching again while `up` re-trips
and grows the hold-down. When most regions' evidence leans towards a breach at once (a global or probe problem)
nothing trips (fail open); after such an episode every region starts its breach evidence afresh.
The direction the phase asks for becomes a one-step move of the serving fraction, then the guards filter it and
the planner turns the fractions into the traffic matrix. State names shown to humans derive from phase + motion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from trafficd.decide import episode as epi
from trafficd.decide import evidence as acc
from trafficd.decide import guards, planner
from trafficd.decide.decision import Decision, Evaluation, Verdict
from trafficd.decide.planner import EPS
from trafficd.decide.state import ControllerState, Phase, RegionState
from trafficd.model import Overrides, RegionEvidence, RegionStateName
from trafficd.policy.schema import Policy

__all__ = [
    "ControllerState",
    "Decision",
    "Evaluation",
    "Phase",
    "RegionState",
    "Verdict",
    "evaluate",
    "judge_region",
]


@dataclass(frozen=True, slots=True)
class Judged:
    """One region's verdict and its statistics after consuming this evaluation's evidence."""

    verdict: Verdict
    state: RegionState
    consumed_n: int = 0
    consumed: tuple[int, int, int, int] = (0, 0, 0, 0)  # n, over, errors, ttft_over consumed now (peers.py)


def _unknown(ev: RegionEvidence | None) -> Verdict | None:
    if ev is None:
        return Verdict(guards.UNKNOWN, ("no_evidence",), ("no evidence for this region",))
    if ev.unreadable:
        return Verdict(guards.UNKNOWN, ("unreadable",), ("stats store unreadable",))
    if ev.stale:
        return Verdict(guards.UNKNOWN, ("stale",), ("agent heartbeat or newest sample is stale",))
    return None


def _severity(ev: RegionEvidence) -> float:
    return max(ev.over_slo_fraction, ev.error_rate, ev.ttft_over_slo_fraction)


def judge_region(policy: Policy, region: str, prev: RegionState, ev: RegionEvidence | None, now: float) -> Judged:
    """Consume the region's new evidence and say what it shows (unknown keeps the statistics as they were)."""
    unknown = _unknown(ev)
    if unknown is not None or ev is None:
        return Judged(unknown or Verdict(guards.UNKNOWN, ("no_evidence",), ()), prev)
    up = acc.update(policy, region, prev, ev)
    state = up.state
    c = up.consumed
    consumed = (c.n, c.over, c.errors, c.ttft_over)
    if up.leaning:
        state = replace(state, lean_until=now + policy.windows.trip)
    hs = acc.thresholds(policy, region)
    window = (
        f"{ev.over_slo_fraction:.2%} of {ev.n} samples over {policy.slo_threshold_ms:g}ms in the trip window, "
        f"errors {ev.error_rate:.2%}"
    )
    if up.breaching:
        why = tuple(
            f"{s}: evidence of the breach rate {state.trip_llr[s]:.1f} ≥ threshold {hs[s]:g}" for s in up.breaching
        )
        verdict = Verdict(guards.BREACH, up.breaching, (window, *why), _severity(ev))
        return Judged(verdict, state, c.n, consumed)
    worst = min(hs, key=lambda s: state.recover_llr.get(s, 0.0) / hs[s])
    health = f"evidence of health {state.recover_llr.get(worst, 0.0):.1f} of {hs[worst]:g} ({worst})"
    if up.recovered:
        return Judged(Verdict(guards.RECOVERED, ("healthy_rate",), (health,)), state, c.n, consumed)
    return Judged(Verdict(guards.OK, ("within_slo",), (health,), _severity(ev)), state, c.n, consumed)


# ---------------------------------------------------------------- the state machine


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
    until = now + hold_s
    flap = policy.recover.flap_window
    if prev.restored_at is not None and flap > 0 and now - prev.restored_at < flap:
        # At most one drain–restore cycle per flap window: the next restore waits until the window has passed.
        until = max(until, prev.restored_at + flap)
        why = (
            *why,
            f"flapping: tripped {now - prev.restored_at:g}s after the last restore; no restore before "
            f"{flap:g}s after it (recover.flap_window)",
        )
    state = replace(prev, phase=Phase.DOWN, recover_llr={}, trip_times=trips, hold_down_until=until)
    return _Step(state, -1, rule, why)


def _breach_step(
    policy: Policy, prev: RegionState, v: Verdict, now: float, suspected: str | None, episode: bool
) -> _Step:
    if prev.phase == Phase.DOWN:
        # Every breach pushes the hold-down: recovery may start only hold_down after the last breach.
        until = max(prev.hold_down_until or now, now + hold_down_s(policy, prev.trip_times))
        return _Step(replace(prev, hold_down_until=until), -1, "draining", (*v.reasons, "still breaching: shed a step"))
    if episode:
        return _Step(prev, 0, "global", (*v.reasons, "most regions breach at once: a global problem, no trip"))
    if suspected:
        return _Step(prev, 0, "global", (*v.reasons, suspected))
    return _trip(policy, prev, now, "trip" if prev.phase == Phase.NORMAL else "retrip", v.reasons)


def _down_step(prev: RegionState, v: Verdict, now: float) -> _Step:
    wait_s = (prev.hold_down_until or 0.0) - now
    if v.kind != guards.RECOVERED:
        return _Step(prev, 0, "hold", (*v.reasons, "tripped: waiting for evidence of the healthy rate"))
    if wait_s > EPS:
        return _Step(prev, 0, "hold_down", (*v.reasons, f"hold-down: {wait_s:g}s left"))
    state = replace(prev, phase=Phase.UP, trip_llr={})
    return _Step(state, +1, "recover", (*v.reasons, "back at the healthy rate: one step up"))


def _machine(policy: Policy, prev: RegionState, v: Verdict, now: float, suspected: str | None, episode: bool) -> _Step:
    """One evaluation of the hysteresis for one region (before guards); `prev` carries the updated evidence.
    No new trip in a global `episode`, nor while one is `suspected` (why, episode.py)."""
    if v.kind == guards.UNKNOWN:
        return _Step(prev, 0, "unknown", (*v.reasons, "unknown: hold (evidence kept)"))
    if v.kind == guards.BREACH:
        return _breach_step(policy, prev, v, now, suspected, episode)
    if prev.phase == Phase.DOWN:
        return _down_step(prev, v, now)
    if prev.phase == Phase.UP:
        return _Step(prev, +1, "recover", (*v.reasons, "recovering: one step up"))
    if prev.serving_fraction < 1.0 - EPS:
        return _Step(prev, +1, "restore", (*v.reasons, "not tripped: ramp back to full serving"))
    return _Step(prev, 0, "healthy", v.reasons)


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
    if v.kind == guards.BREACH:
        return RegionStateName.BREACHING
    return RegionStateName.RECOVERING if after < 1.0 - EPS else RegionStateName.HEALTHY


def active_overrides(overrides: Overrides, now: float) -> Overrides:
    """Only the overrides still in force at `now` (expiry is checked here too, not only by Redis)."""
    freeze = overrides.freeze if overrides.freeze and overrides.freeze.expires_at > now else None
    by_region = {r: o for r, o in overrides.by_region.items() if o.expires_at > now}
    return Overrides(freeze=freeze, by_region=by_region)


# ---------------------------------------------------------------- one evaluation, in named steps


@dataclass(frozen=True, slots=True)
class _Judgement:
    prev: dict[str, RegionState]
    judged: dict[str, Judged]
    steps: dict[str, _Step]
    episode: bool


def _judge_all(
    policy: Policy, state: ControllerState, evidence: Mapping[str, RegionEvidence], now: float
) -> _Judgement:
    names = policy.region_names
    prev = {r: state.regions.get(r, RegionState()) for r in names}
    judged = {r: judge_region(policy, r, prev[r], evidence.get(r), now) for r in names}
    episode = epi.global_episode(policy, judged, now)
    if state.global_episode and not episode:
        epi.forget_breach_evidence(judged)
    epi.track_spans(policy, judged)
    steps = {
        r: _machine(policy, judged[r].state, judged[r].verdict, now, epi.suspected(policy, r, judged), episode)
        for r in names
    }
    return _Judgement(prev, judged, steps, episode)


def _proposals(policy: Policy, j: _Judgement) -> guards.Proposals:
    out: guards.Proposals = {}
    for r, step in j.steps.items():
        before = j.prev[r].serving_fraction
        target = {-1: policy.ramp.min_fraction, 0: before, 1: 1.0}[step.direction]
        desired = guards.step_towards(policy, before, target) if step.direction else before
        out[r] = guards.Proposal(r, before, desired, step.rule, step.reasons)
    return out


def _context(
    policy: Policy,
    state: ControllerState,
    evidence: Mapping[str, RegionEvidence],
    j: _Judgement,
    active: Overrides,
    now: float,
) -> guards.GuardContext:
    names = policy.region_names
    order = sorted(names, key=lambda r: (j.prev[r].serving_fraction >= 1.0 - EPS, names.index(r)))
    verdicts = {r: jd.verdict for r, jd in j.judged.items()}
    avoid = frozenset(
        r
        for r in names
        if verdicts[r].kind in (guards.BREACH, guards.UNKNOWN) or j.steps[r].state.phase != Phase.NORMAL
    )
    return guards.GuardContext(
        policy=policy,
        now=now,
        overrides=active,
        verdicts={r: v.kind for r, v in verdicts.items()},
        severity={r: v.severity for r, v in verdicts.items()},
        last_step_at={r: j.prev[r].last_step_at for r in names},
        spare=planner.headroom(policy, evidence),
        order=order,
        avoid=avoid,
        previous=state.matrix,
        hold=frozenset(r for r in names if verdicts[r].kind == guards.UNKNOWN),  # unknown holds its spill-over too
        global_episode=j.episode,
    )


def _region_after(
    policy: Policy, j: _Judgement, r: str, p: guards.Proposal, active: Overrides, now: float
) -> tuple[RegionState, RegionStateName]:
    step, before, after = j.steps[r], j.prev[r].serving_fraction, p.desired
    hand = r in active.by_region and active.by_region[r].kind == "drain" and "override" in p.guards
    name = _name(policy, step, j.judged[r].verdict, before, after, hand)
    new = step.state
    if new.phase == Phase.UP and after >= 1.0 - EPS:
        new = replace(new, phase=Phase.NORMAL, restored_at=now)  # a drain–restore cycle completed
    moved = abs(after - before) > EPS
    new = replace(
        new,
        name=name,
        serving_fraction=after,
        last_step_at=now if moved else new.last_step_at,
        since=now if name != j.prev[r].name else j.prev[r].since,
        reasons=p.reasons,
    )
    return new, name


def evaluate(
    policy: Policy,
    state: ControllerState,
    evidence: Mapping[str, RegionEvidence],
    overrides: Overrides,
    now: float,
) -> Evaluation:
    """Judge every region of the policy, filter the moves through the guards, plan the traffic matrix."""
    names = policy.region_names
    j = _judge_all(policy, state, evidence, now)
    active = active_overrides(overrides, now)
    ctx = _context(policy, state, evidence, j, active, now)
    final, events = guards.apply_guards(ctx, _proposals(policy, j))
    fractions = {r: final[r].desired for r in names}
    matrix = planner.plan(policy, fractions, ctx.spare, ctx.order, ctx.avoid, previous=state.matrix, hold=ctx.hold)
    regions: dict[str, RegionState] = {}
    decisions = []
    for r in names:
        p = final[r]
        regions[r], name = _region_after(policy, j, r, p, active, now)
        decisions.append(
            Decision(
                region=r,
                evidence=evidence.get(r),
                verdict=j.judged[r].verdict,
                state_before=j.prev[r].name,
                state_after=name,
                fraction_before=j.prev[r].serving_fraction,
                fraction_after=p.desired,
                weights_before=dict(state.matrix.get(r) or _identity_row(names, r)),
                weights_after=dict(matrix[r]),
                decided_by=p.decided_by,
                rule=j.steps[r].rule,
                guards=p.guards,
                reasons=p.reasons,
                hold_down_until=regions[r].hold_down_until,
                llr=acc.describe(policy, r, regions[r]),
                span_counts=regions[r].span_counts,
                consumed_n=j.judged[r].consumed_n,
            )
        )
    new_state = ControllerState(
        regions=regions,
        matrix=matrix,
        evaluated_at=now,
        evaluations=state.evaluations + 1,
        global_episode=j.episode,
    )
    return Evaluation(
        state=new_state,
        matrix=matrix,
        decisions=tuple(decisions),
        guard_events=events,
        fail_open=j.episode,
        frozen=active.freeze is not None,
        notes=tuple(ctx.notes),
    )


def _identity_row(names: list[str], src: str) -> dict[str, float]:
    return {dst: (1.0 if dst == src else 0.0) for dst in names}
