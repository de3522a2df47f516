"""Guards: each named filter bites when it should, says so by name, and leaves the plan alone otherwise."""

from __future__ import annotations

import pytest
from judgekit import drain, frame, good, make_policy, run, slow

from trafficd.decide import guards
from trafficd.decide.evidence import window_as_slice
from trafficd.decide.guards import GuardContext, Proposal, apply_guards, check_manual_drain
from trafficd.decide.judge import ControllerState, RegionState, evaluate
from trafficd.model import Override, Overrides, RegionStateName
from trafficd.policy.schema import Policy

NAMES = ("us-east", "eu-west", "ap-southeast")


def ctx(policy: Policy, **kw: object) -> GuardContext:
    base: dict[str, object] = {
        "policy": policy,
        "now": 100.0,
        "overrides": Overrides(),
        "verdicts": dict.fromkeys(NAMES, guards.OK),
        "severity": dict.fromkeys(NAMES, 0.0),
        "last_step_at": dict.fromkeys(NAMES),
        "spare": dict.fromkeys(NAMES),
        "order": list(NAMES),
    }
    base.update(kw)
    return GuardContext(**base)  # type: ignore[arg-type]


def plan(**moves: tuple[float, float]) -> dict[str, Proposal]:
    """Proposals: region=(before, desired); unnamed regions hold at 1."""
    out = {r: Proposal(r, 1.0, 1.0, "healthy") for r in NAMES}
    for key, (before, desired) in moves.items():
        r = key.replace("_", "-")
        out[r] = Proposal(r, before, desired, "trip")
    return out


def freeze(until: float = 1e12) -> Override:
    return Override("freeze", None, "incident 42", until)


def test_order_is_fixed_and_named() -> None:
    """The guards run in one documented order, each under its own name."""
    assert [name for name, _ in guards.ORDER] == [
        "frozen",
        "override",
        "never_drain",
        "fail_open",
        "cooldown",
        "max_drained",
        "min_serving_regions",
        "capacity",
        "never_all_zero",
    ]


def test_no_guard_bites_on_a_plain_drain() -> None:
    """One region shedding one step within every limit passes untouched, with no guard events."""
    final, events = apply_guards(ctx(make_policy()), plan(us_east=(1.0, 0.5)))
    assert final["us-east"].desired == 0.5 and final["us-east"].decided_by == "trip" and events == ()


def test_frozen_holds_every_move_but_forced_overrides() -> None:
    """Under a freeze nothing moves, logged as `frozen` with the freeze's reason; a forced drain still moves."""
    p = make_policy()
    forced = Override("drain", "eu-west", "hardware", 1e12, forced=True)
    c = ctx(p, overrides=Overrides(freeze=freeze(), by_region={"eu-west": forced}))
    final, events = apply_guards(c, plan(us_east=(1.0, 0.5)))
    assert final["us-east"].desired == 1.0 and final["us-east"].decided_by == "frozen"
    assert any(e.guard == "frozen" and "incident 42" in e.reason for e in events)
    assert final["eu-west"].desired == 0.5 and final["eu-west"].decided_by == "override"


def test_unforced_override_waits_for_unfreeze() -> None:
    """An ordinary drain set while frozen does not move the region until the freeze ends."""
    p = make_policy()
    o = Overrides(freeze=freeze(), by_region={"eu-west": drain("eu-west", 1e12)})
    final, _ = apply_guards(ctx(p, overrides=o), plan())
    assert final["eu-west"].desired == 1.0


def test_override_drain_and_undrain_ramp_whatever_the_judge_wants() -> None:
    """Drain ramps down by max_step even when healthy; undrain ramps up even while breaching."""
    p = make_policy(guards={"max_drained": 2})
    o = Overrides(
        by_region={"us-east": drain("us-east", 1e12), "eu-west": Override("undrain", "eu-west", "probe bug", 1e12)}
    )
    final, events = apply_guards(ctx(p, overrides=o), plan(eu_west=(0.0, 0.0)))
    assert (final["us-east"].desired, final["us-east"].decided_by) == (0.5, "override")
    assert (final["eu-west"].desired, final["eu-west"].decided_by) == (0.5, "override")
    assert {e.region for e in events if e.guard == "override"} == {"us-east", "eu-west"}


def test_fail_open_drains_nothing_and_ramps_back() -> None:
    """In a global episode (the judge's decision), nothing sheds, a drained region ramps back, and it says so."""
    p = make_policy()
    c = ctx(p, verdicts=dict.fromkeys(NAMES, guards.BREACH), global_episode=True)
    final, events = apply_guards(c, plan(us_east=(0.0, 0.0), eu_west=(1.0, 0.5)))
    assert final["us-east"].desired == 0.5 and final["eu-west"].desired == 1.0
    assert events[0].guard == "fail_open" and events[0].region is None and "75%" in events[0].reason
    assert c.notes and "global or probe problem" in c.notes[0]


def test_fail_open_needs_the_global_episode_not_one_evaluation() -> None:
    """Every verdict breaching in one evaluation is not fail open by itself: the episode is judged over time."""
    _, events = apply_guards(ctx(make_policy(), verdicts=dict.fromkeys(NAMES, guards.BREACH)), plan(us_east=(1.0, 0.5)))
    assert not any(e.guard == "fail_open" for e in events)


def test_fail_open_episode_needs_the_share_of_leaning_regions() -> None:
    """Two of three regions with breach evidence (67 %) is below 75 %: one trips; at 60 % nothing trips."""
    two = [frame(slow("us-east", over=0.05), slow("eu-west", over=0.05))] * 6
    evs = run(make_policy(), two, every_s=2)
    assert any(e.decision(r).rule == "trip" for e in evs for r in ("us-east", "eu-west"))
    evs = run(make_policy(guards={"fail_open_share": "60%"}), two, every_s=2)
    assert evs[-1].fail_open and all(f == 1.0 for e in evs for f in e.fractions.values())


def test_fail_open_leaves_overrides_and_unknown_regions_alone() -> None:
    """A manual drain stays drained and an unknown region holds during fail open."""
    p = make_policy(guards={"fail_open_share": "60%"})
    verdicts = {"us-east": guards.BREACH, "eu-west": guards.BREACH, "ap-southeast": guards.UNKNOWN}
    o = Overrides(by_region={"us-east": drain("us-east", 1e12)})
    final, _ = apply_guards(ctx(p, verdicts=verdicts, overrides=o), plan(us_east=(0.5, 0.5), ap_southeast=(0.5, 0.5)))
    assert final["us-east"].desired == 0.0 and final["ap-southeast"].desired == 0.5


def test_cooldown_holds_a_second_step_too_soon() -> None:
    """A region that moved less than ramp.cooldown ago holds, both down and up."""
    p = make_policy(ramp={"cooldown": "10s"}, guards={"max_drained": 3})
    c = ctx(p, last_step_at={"us-east": 95.0, "eu-west": 95.0, "ap-southeast": 89.0})
    final, events = apply_guards(c, plan(us_east=(0.5, 0.0), eu_west=(0.5, 1.0), ap_southeast=(0.5, 1.0)))
    assert final["us-east"].desired == 0.5 and final["us-east"].decided_by == "cooldown"
    assert final["eu-west"].desired == 0.5
    assert final["ap-southeast"].desired == 1.0
    assert sorted(e.region or "" for e in events if e.guard == "cooldown") == ["eu-west", "us-east"]


def test_max_drained_keeps_the_slot_of_the_region_already_shedding() -> None:
    """With max_drained 1, a second region may not start shedding while the first is drained."""
    final, events = apply_guards(ctx(make_policy()), plan(us_east=(0.5, 0.0), eu_west=(1.0, 0.5)))
    assert final["us-east"].desired == 0.0 and final["eu-west"].desired == 1.0
    assert [e.guard for e in events] == ["max_drained"] and events[0].region == "eu-west"


def test_max_drained_admits_the_worst_newcomer_first() -> None:
    """Two regions tripping together: the one with the worse evidence gets the slot."""
    sev = {"us-east": 0.02, "eu-west": 0.30, "ap-southeast": 0.0}
    final, _ = apply_guards(ctx(make_policy(), severity=sev), plan(us_east=(1.0, 0.5), eu_west=(1.0, 0.5)))
    assert final["eu-west"].desired == 0.5 and final["us-east"].desired == 1.0


def test_min_serving_regions_stops_the_last_step_to_zero() -> None:
    """With min_serving_regions 2 and one region at 0, another may shed but not reach 0."""
    p = make_policy(guards={"min_serving_regions": 2, "max_drained": 2})
    final, events = apply_guards(ctx(p), plan(us_east=(0.0, 0.0), eu_west=(0.5, 0.0)))
    assert final["eu-west"].desired == 0.5 and events[0].guard == "min_serving_regions"
    final, events = apply_guards(ctx(p), plan(us_east=(0.0, 0.0), eu_west=(1.0, 0.5)))
    assert final["eu-west"].desired == 0.5 and events == ()


def test_forced_override_bypasses_max_drained_and_min_serving() -> None:
    """--force means the on-call owns the risk: slot limits do not hold a forced drain."""
    p = make_policy(guards={"min_serving_regions": 2})
    o = Overrides(by_region={"eu-west": drain("eu-west", 1e12, forced=True)})
    final, _ = apply_guards(ctx(p, overrides=o), plan(us_east=(0.0, 0.0), eu_west=(0.5, 0.5)))
    assert final["eu-west"].desired == 0.0


def test_capacity_limits_the_shed_to_the_neighbours_headroom() -> None:
    """Neighbours with 20 % + 10 % headroom let a region shed only 30 % of its users."""
    spare = {"us-east": None, "eu-west": 0.2, "ap-southeast": 0.1}
    final, events = apply_guards(ctx(make_policy(), spare=spare), plan(us_east=(1.0, 0.5)))
    assert final["us-east"].desired == pytest.approx(0.7) and final["us-east"].decided_by == "capacity"
    assert events[0].guard == "capacity"


def test_capacity_never_raises_a_fraction_above_before() -> None:
    """If headroom shrinks under an existing drain, the guard holds it (no snap back); the planner copes."""
    spare = {"us-east": None, "eu-west": 0.1, "ap-southeast": 0.0}
    final, _ = apply_guards(ctx(make_policy(), spare=spare), plan(us_east=(0.5, 0.0)))
    assert final["us-east"].desired == 0.5


def test_never_all_zero_keeps_one_region_serving() -> None:
    """If every region would end at 0, the one that served most keeps its fraction."""
    p = make_policy(guards={"max_drained": 3})
    final, events = guards.never_all_zero(ctx(p), plan(us_east=(0.0, 0.0), eu_west=(0.5, 0.0), ap_southeast=(0.0, 0.0)))
    assert final["eu-west"].desired == 0.5 and [e.guard for e in events] == ["never_all_zero"]
    # a state with every region at 0 (hand-edited, say): the first region gets one ramp step back
    final, guarded = apply_guards(ctx(p), plan(us_east=(0.0, 0.0), eu_west=(0.0, 0.0), ap_southeast=(0.0, 0.0)))
    assert final["us-east"].desired == 0.5 and guarded[-1].guard == "never_all_zero"


def test_guard_names_reach_the_decision_log() -> None:
    """Through evaluate, the guard that decided is `decided_by` and appears in `guards` and the reasons."""
    p = make_policy()
    evs = run(p, [frame(slow("us-east"), slow("eu-west", over=0.5))] * 3, every_s=2)
    d = evs[-1].decision("us-east")
    assert d.decided_by == "max_drained" and d.guards == ("max_drained",)
    assert d.state_after == RegionStateName.BREACHING and d.fraction_after == 1.0
    assert any(e.guard == "max_drained" for e in evs[-1].guard_events)


def test_fail_open_flag_on_the_evaluation() -> None:
    """When every region breaches, the evaluation says fail_open and nothing sheds."""
    p = make_policy()
    evs = run(p, [frame(slow("us-east"), slow("eu-west"), slow("ap-southeast"))] * 4, every_s=2)
    assert all(e.fail_open for e in evs) and all(f == 1.0 for f in evs[-1].fractions.values())
    summary = evs[1].to_log()
    assert summary["fail_open"] and "global or probe problem" in summary["notes"][0]
    assert summary["guard_events"][0]["guard"] == "fail_open" and summary["guard_events"][0]["region"] is None


@pytest.mark.parametrize(
    ("policy_kw", "overrides", "fractions", "expected"),
    [
        ({}, Overrides(), None, []),
        ({}, Overrides(freeze=freeze()), None, ["frozen"]),
        ({}, Overrides(by_region={"eu-west": drain("eu-west", 1e12)}), None, ["max_drained"]),
        ({}, Overrides(), {"eu-west": 0.5}, ["max_drained"]),
        ({"guards": {"max_drained": 2, "min_serving_regions": 2}}, Overrides(), {"eu-west": 0.0}, ["min_serving"]),
        ({"regions": {"eu-west": {"capacity_headroom": "30%"}, "ap-southeast": {"capacity_headroom": "20%"}}},
         Overrides(), None, ["capacity"]),
    ],
)  # fmt: skip
def test_check_manual_drain(
    policy_kw: dict[str, object], overrides: Overrides, fractions: dict[str, float] | None, expected: list[str]
) -> None:
    """The drain command's pre-check names each guard the drain would break, and nothing else."""
    problems = check_manual_drain(make_policy(**policy_kw), "us-east", overrides, fractions)
    assert [p.split(":")[0].split("_regions")[0] for p in problems] == expected


def test_cooldown_from_state_holds_through_evaluate() -> None:
    """A region stepped 1 s ago (cooldown 2 s) holds at its fraction even while still breaching."""
    p = make_policy()
    st = ControllerState(
        regions={"us-east": RegionState(RegionStateName.DRAINING, 0.5, last_step_at=9.0, phase="down")}  # type: ignore[arg-type]
    )
    ev = evaluate(p, st, frame(window_as_slice(slow("us-east"), 10, 0.1), good("eu-west")), Overrides(), 10.0)
    assert ev.decision("us-east").fraction_after == 0.5 and ev.decision("us-east").decided_by == "cooldown"


def test_never_drain_vetoes_automatic_drains_only() -> None:
    """A region in guards.never_drain keeps serving while breaching, but an on-call drain still moves it."""
    p = make_policy(guards={"never_drain": ["us-east"]})
    final, events = apply_guards(ctx(p), plan(us_east=(1.0, 0.5)))
    assert final["us-east"].desired == 1.0 and [e.guard for e in events] == ["never_drain"]
    final, _ = apply_guards(ctx(p, overrides=Overrides(by_region={"us-east": drain("us-east", 1e12)})), plan())
    assert final["us-east"].desired == 0.5


def test_max_drained_swap_ramps_a_weaker_holder_back_for_worse_evidence() -> None:
    """A stall (100 % over) blocked by a 2 % holder: the holder ramps back one step (logged); the stall waits."""
    sev = {"us-east": 0.02, "eu-west": 1.0, "ap-southeast": 0.0}
    verdicts = {"us-east": guards.OK, "eu-west": guards.BREACH, "ap-southeast": guards.OK}
    c = ctx(make_policy(), severity=sev, verdicts=verdicts)
    final, events = apply_guards(c, plan(us_east=(0.0, 0.0), eu_west=(1.0, 0.5)))
    assert final["eu-west"].desired == 1.0 and final["us-east"].desired == 0.5
    assert any(e.guard == "max_drained" and e.region == "us-east" and "swap" in e.reason for e in events)
    same = {"us-east": 0.6, "eu-west": 1.0, "ap-southeast": 0.0}  # not twice as bad: no swap
    final, _ = apply_guards(
        ctx(make_policy(), severity=same, verdicts=verdicts), plan(us_east=(0.0, 0.0), eu_west=(1.0, 0.5))
    )
    assert final["us-east"].desired == 0.0
