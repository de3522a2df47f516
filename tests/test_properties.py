"""Property tests (hypothesis): invariants of evaluate() over random policies, states, evidence and overrides."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from judgekit import REGIONS, make_policy

from trafficd.decide import planner
from trafficd.decide.judge import ControllerState, Evaluation, Phase, RegionState, evaluate, judge_region
from trafficd.model import Override, Overrides, RegionEvidence, RegionStateName, SliceCounts
from trafficd.policy.schema import Policy

EPS = 1e-9
# TRAFFICD_PROPERTY_EXAMPLES=5000 for a longer hunt; the default keeps the file under ~15 s on 2 shared cores.
EXAMPLES = int(os.environ.get("TRAFFICD_PROPERTY_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    def pct(lo: int, hi: int) -> st.SearchStrategy[str]:
        return st.integers(lo, hi).map(lambda v: f"{v}%")

    caps = {r: {"capacity_headroom": draw(st.one_of(st.none(), pct(0, 100)))} for r in REGIONS}
    regions = {r: {k: v for k, v in c.items() if v is not None} for r, c in caps.items()}
    live = {"capacity": {"max_concurrency": 64}} if draw(st.booleans()) else {}  # spill by volume (issue 16)
    return make_policy(
        **live,
        regions=regions,
        trip={
            "breach_rate": draw(st.sampled_from(["1.5%", "2%", "5%"])),
            "false_trips": draw(st.sampled_from([1, 10])),
        },
        recover={"hold_down": f"{draw(st.integers(1, 30))}s"},
        ramp={
            "max_step": draw(pct(5, 100)),
            "min_fraction": draw(st.sampled_from(["0%", "0%", "10%", "30%"])),
            "cooldown": f"{draw(st.integers(1, 20))}s",
        },
        guards={
            "min_serving_regions": draw(st.integers(1, 3)),
            "max_drained": draw(st.integers(0, 3)),
            "fail_open_share": draw(pct(30, 100)),
            "never_drain": draw(st.lists(st.sampled_from(REGIONS), max_size=2, unique=True)),
        },
    )


@st.composite
def slices(draw: st.DrawFn, kind: str) -> tuple[SliceCounts, ...]:
    """Exact per-slice counts around the current slice ids (some already consumed by a drawn cursor)."""
    out = []
    for sid in range(draw(st.integers(95, 100)), 101):
        n = draw(st.integers(0, 40))
        share = {"slow": draw(st.floats(0.02, 1.0)), "mid": draw(st.floats(0.0, 0.02))}.get(kind, 0.0)
        errors = int(n * draw(st.floats(0.02, 1.0))) if kind == "errors" else 0
        out.append(SliceCounts(sid, n, int(n * share), errors, 0))
    return tuple(out)


@st.composite
def evidence(draw: st.DrawFn, region: str) -> RegionEvidence | None:
    kind = draw(st.sampled_from(["good", "slow", "mid", "few", "stale", "missing", "errors"]))
    if kind == "missing":
        return None
    sl = draw(slices(kind)) if kind != "few" else ()
    n = sum(x.n for x in sl)
    return RegionEvidence(
        region=region,
        n=n,
        errors=sum(x.errors for x in sl),
        over_slo_fraction=sum(x.over for x in sl) / n if n else 0.0,
        p99_ms=draw(st.one_of(st.none(), st.floats(100, 20000))),
        stale=kind == "stale",
        headroom=draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
        slices=sl,
        **draw(live_capacity()),
    )


@st.composite
def live_capacity(draw: st.DrawFn) -> dict[str, Any]:
    """Live load and headroom in req/s (docs/capacity.md), or none, or stale figures."""
    kind = draw(st.sampled_from(["none", "live", "live", "stale"]))
    if kind == "none":
        return {}
    if kind == "stale":
        return {"capacity_source": "stale", "capacity_age_s": 99.0}
    return {
        "capacity_source": "live",
        "load_rps": draw(st.floats(0.0, 1000.0)),
        "headroom_rps": draw(st.one_of(st.none(), st.floats(0.0, 1000.0))),
        "capacity_age_s": 1.0,
    }


frames = st.fixed_dictionaries({r: evidence(r) for r in REGIONS}).map(
    lambda d: {r: e for r, e in d.items() if e is not None}
)


@st.composite
def overrides(draw: st.DrawFn, now: float) -> Overrides:
    by_region = {}
    for r in REGIONS:
        kind = draw(st.sampled_from([None, None, "drain", "undrain"]))
        if kind:
            until = now + draw(st.floats(-10, 100))
            by_region[r] = Override(kind, r, "prop", until, forced=draw(st.booleans()))
    freeze = Override("freeze", None, "prop", now + 50) if draw(st.integers(0, 5)) == 0 else None
    return Overrides(freeze=freeze, by_region=by_region)


@st.composite
def states(draw: st.DrawFn, policy: Policy, now: float) -> ControllerState:
    floor = policy.ramp.min_fraction
    regions = {}
    for r in REGIONS:
        s = draw(st.one_of(st.just(1.0), st.just(floor), st.floats(floor, 1.0)))
        regions[r] = RegionState(
            name=draw(st.sampled_from(list(RegionStateName))),
            serving_fraction=s,
            phase=draw(st.sampled_from(list(Phase))),
            trip_llr={"latency": draw(st.floats(0.0, 30.0)), "errors": draw(st.floats(0.0, 30.0))},
            recover_llr={"latency": draw(st.floats(0.0, 30.0)), "errors": draw(st.floats(0.0, 30.0))},
            cursor=draw(st.one_of(st.none(), st.integers(90, 101))),
            lean_until=draw(st.one_of(st.none(), st.floats(now - 20, now + 20))),
            last_step_at=draw(st.one_of(st.none(), st.floats(now - 40, now))),
            trip_times=tuple(draw(st.lists(st.floats(now - 5000, now), max_size=4))),
            hold_down_until=draw(st.one_of(st.none(), st.floats(now - 50, now + 50))),
            restored_at=draw(st.one_of(st.none(), st.floats(now - 30000, now))),
        )
    fractions = {r: s.serving_fraction for r, s in regions.items()}
    matrix = planner.plan(policy, fractions, planner.headroom(policy, {}))
    return ControllerState(regions=regions, matrix=matrix, global_episode=draw(st.booleans()))


def check_invariants(
    policy: Policy,
    before: ControllerState,
    ev: Evaluation,
    now: float,
    o: Overrides,
    evidence: dict[str, RegionEvidence] | None = None,
) -> None:
    """What must hold after every evaluation, whatever the inputs."""
    prev = {r: before.regions.get(r, RegionState()).serving_fraction for r in REGIONS}
    after = ev.fractions
    # weights in range, rows sum to 1, never all zero
    for row in ev.matrix.values():
        assert all(-EPS <= w <= 1.0 + EPS for w in row.values())
        assert abs(sum(row.values()) - 1.0) < 1e-6
    assert any(s > EPS for s in after.values()) or all(s <= EPS for s in prev.values())
    # no step larger than max_step, never below the floor unless it already was
    for r in REGIONS:
        assert abs(after[r] - prev[r]) <= policy.ramp.max_step + EPS
        assert after[r] >= min(prev[r], policy.ramp.min_fraction) - EPS
    active = {r: x for r, x in o.by_region.items() if x.expires_at > now}
    forced = {r for r, x in active.items() if x.forced}
    frozen = o.freeze is not None and o.freeze.expires_at > now
    moved = {r for r in REGIONS if abs(after[r] - prev[r]) > EPS}
    # frozen: only forced overrides move (never_all_zero aside, which needs an all-zero state)
    if frozen and any(s > EPS for s in prev.values()):
        assert moved <= forced
    # cooldown: a region moves only once its cooldown has passed (the all-zero rescue aside)
    for r in moved if any(s > EPS for s in prev.values()) else ():
        last = before.regions.get(r, RegionState()).last_step_at
        assert last is None or now - last >= policy.ramp.cooldown - EPS
        assert ev.state.regions[r].last_step_at == now
    # max_drained: no new region starts shedding beyond the limit (forced drains aside)
    newly = {r for r in REGIONS if prev[r] >= 1.0 - EPS and after[r] < 1.0 - EPS} - forced
    if newly:
        assert sum(1 for r in REGIONS if after[r] < 1.0 - EPS) <= max(policy.guards.max_drained, len(forced) + 1)
        assert sum(1 for r in REGIONS if after[r] < 1.0 - EPS and r not in forced) <= policy.guards.max_drained
    # min_serving_regions: no region newly reaches 0 below the minimum (forced drains aside)
    zeroed = {r for r in REGIONS if prev[r] > EPS and after[r] <= EPS} - forced
    if zeroed:
        assert sum(1 for r in REGIONS if after[r] > EPS) >= policy.guards.min_serving_regions
    # unknown holds (no override, and not the all-zero rescue)
    for r in REGIONS:
        d = ev.decision(r)
        if d.verdict.kind == "unknown" and r not in active and any(s > EPS for s in prev.values()):
            assert after[r] == prev[r]
            assert d.state_after == RegionStateName.UNKNOWN
    # fail open (a global episode): nothing sheds more (overrides aside)
    if ev.fail_open and not frozen:
        for r in set(REGIONS) - set(active):
            assert after[r] >= prev[r] - EPS
    # never_drain: listed regions never shed automatically
    for r in set(policy.guards.never_drain) - set(active):
        assert after[r] >= prev[r] - EPS
    # capacity: a region that shed more this time has all of its displaced share placed, within headroom
    for r in REGIONS:
        if after[r] < prev[r] - EPS:
            assert abs(ev.matrix[r][r] - after[r]) < 1e-6
    # an unknown receiver keeps the spill-over it already takes (unknown holds) and is given no new share
    held = {r for r in REGIONS if ev.decision(r).state_after == RegionStateName.UNKNOWN}
    for src in REGIONS:
        old = (before.matrix or {}).get(src, {})
        for dst in held - {src}:
            assert ev.matrix[src][dst] <= old.get(dst, 0.0) + 1e-9
    if any(after[r] < prev[r] - EPS for r in REGIONS):
        spare = planner.headroom(policy, evidence or {})
        received, scale = _spill_received(spare, before, ev, held)
        for dst in REGIONS:
            cap = spare[dst]
            assert cap is None or received[dst] <= cap + 1e-6 * max(scale, cap)


def _spill_received(
    spare: planner.Spare, before: ControllerState, ev: Evaluation, held: set[str]
) -> tuple[dict[str, float], float]:
    """What each receiver takes from the others: shares (by units), or requests/s of new spill (by volume: spill
    it already carried is in its measured headroom; and for a held, unknown receiver, whose held shares are not
    charged against a spare it can no longer report); and the scale of the figures (shares are rounded to 1e-9)."""
    received = dict.fromkeys(REGIONS, 0.0)
    scale = 1.0
    for src in REGIONS:
        old = (before.matrix or {}).get(src, {})
        demand = planner.demand_rps(spare.load, before.matrix, src) if spare.load is not None else 1.0
        scale += demand
        for dst in REGIONS:
            if dst != src:
                new = ev.matrix[src][dst] - (old.get(dst, 0.0) if spare.by_volume or dst in held else 0.0)
                received[dst] += max(0.0, new) * demand
    return received, scale


@SETTINGS
@given(data=st.data())
def test_one_evaluation_from_any_state_keeps_the_invariants(data: Any) -> None:
    """From an arbitrary stored state, one evaluation keeps every invariant and guard."""
    policy = data.draw(policies())
    now = data.draw(st.floats(100.0, 10_000.0))
    before = data.draw(states(policy, now))
    o = data.draw(overrides(now))
    frame = data.draw(frames)
    ev = evaluate(policy, before, frame, o, now)
    check_invariants(policy, before, ev, now, o, frame)


@SETTINGS
@given(policy=policies(), timeline=st.lists(frames, min_size=1, max_size=25), every_s=st.integers(1, 15))
def test_sequences_keep_the_invariants(policy: Policy, timeline: list[dict[str, RegionEvidence]], every_s: int) -> None:
    """Along any sequence of evaluations from a fresh start, every step keeps the invariants."""
    state = ControllerState()
    for i, frame in enumerate(timeline):
        now = 1000.0 + i * every_s
        ev = evaluate(policy, state, frame, Overrides(), now)
        check_invariants(policy, state, ev, now, Overrides(), frame)
        state = ev.state


@SETTINGS
@given(data=st.data())
def test_same_inputs_same_output(data: Any) -> None:
    """evaluate is deterministic, and a state round-tripped through to_dict/from_dict decides the same."""
    policy = data.draw(policies())
    now = data.draw(st.floats(100.0, 10_000.0))
    before = data.draw(states(policy, now))
    frame = data.draw(frames)
    o = data.draw(overrides(now))
    first = evaluate(policy, before, frame, o, now)
    assert evaluate(policy, before, frame, o, now) == first
    again = evaluate(policy, ControllerState.from_dict(before.to_dict()), frame, o, now)
    assert again.matrix == first.matrix and again.state == first.state


@SETTINGS
@given(policy=policies(), ev=evidence("us-east"))
def test_verdict_kind_is_total(policy: Policy, ev: RegionEvidence | None) -> None:
    """Every piece of evidence gets exactly one verdict kind, with at least one reason."""
    v = judge_region(policy, "us-east", RegionState(), ev, 1000.0).verdict
    assert v.kind in ("breach", "recovered", "ok", "unknown") and v.reasons
