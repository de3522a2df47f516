"""The judge: verdicts on evidence, the per-region state machine, hysteresis, hold-down, ramps, state round trip."""

from __future__ import annotations

import itertools
import json

import pytest
from judgekit import drain, frame, good, make_policy, run, slow

from trafficd.decide.judge import ControllerState, Phase, RegionState, evaluate, hold_down_s, verdict
from trafficd.model import Overrides, RegionEvidence, RegionStateName

H, B, DRAINING, DRAINED, REC, U = (
    RegionStateName.HEALTHY,
    RegionStateName.BREACHING,
    RegionStateName.DRAINING,
    RegionStateName.DRAINED,
    RegionStateName.RECOVERING,
    RegionStateName.UNKNOWN,
)


def states(evs: list, region: str = "us-east") -> list[tuple[RegionStateName, float]]:
    return [(e.decision(region).state_after, e.decision(region).fraction_after) for e in evs]


@pytest.mark.parametrize(
    ("evidence", "kind", "rules"),
    [
        (RegionEvidence("us-east", n=1000, over_slo_fraction=0.011, p99_ms=3100), "breach", ("p99",)),
        (RegionEvidence("us-east", n=1000, over_slo_fraction=0.01, p99_ms=3000), "ok", ("within_slo",)),
        (RegionEvidence("us-east", n=99, over_slo_fraction=0.5, p99_ms=9000), "unknown", ("too_few_samples",)),
        (RegionEvidence("us-east", n=10, recent_over=3, recent_n=20), "breach", ("fast_rule",)),
        (RegionEvidence("us-east", n=10, recent_over=2, recent_n=20), "unknown", ("too_few_samples",)),
        (RegionEvidence("us-east", n=1000, recent_over=5, recent_n=40), "ok", ("within_slo",)),
        (RegionEvidence("us-east", n=1000, recent_over=6, recent_n=40, p99_ms=1000), "breach", ("fast_rule",)),
        (RegionEvidence("us-east", n=1000, errors=11, p99_ms=1000), "breach", ("error_rate",)),
        (RegionEvidence("us-east", n=1000, errors=10, p99_ms=1000), "ok", ("within_slo",)),
        (RegionEvidence("us-east", n=1000, errors=8, p99_ms=1000), "recovered", ("below_recover",)),
        (RegionEvidence("us-east", n=1000, p99_ms=2399), "recovered", ("below_recover",)),
        (RegionEvidence("us-east", n=1000, p99_ms=2400), "ok", ("within_slo",)),
        (RegionEvidence("us-east", n=1000, p99_ms=None), "ok", ("within_slo",)),
        (RegionEvidence("us-east", n=5000, over_slo_fraction=0.9, stale=True), "unknown", ("stale",)),
        (RegionEvidence("us-east", n=5000, over_slo_fraction=0.9, unreadable=True), "unknown", ("unreadable",)),
        (None, "unknown", ("no_evidence",)),
    ],
)
def test_verdict_table(evidence: RegionEvidence | None, kind: str, rules: tuple[str, ...]) -> None:
    """Each trigger fires exactly at its threshold (exact over-fraction, k of m, error rate) and unknown wins."""
    v = verdict(make_policy(), evidence)
    assert (v.kind, v.rules) == (kind, rules)
    assert v.reasons


def test_ttft_slo_is_a_second_trigger_only_when_set() -> None:
    """TTFT over its SLO breaches with a TTFT SLO in the policy and is ignored without one."""
    ev = RegionEvidence("us-east", n=1000, p99_ms=1000, ttft_n=1000, ttft_over_slo_fraction=0.05, ttft_p99_ms=900)
    assert verdict(make_policy(slo={"ttft_p99": "300ms"}), ev).rules == ("ttft",)
    assert verdict(make_policy(), ev).kind == "recovered"
    slow_ttft = RegionEvidence("us-east", n=1000, p99_ms=1000, ttft_n=1000, ttft_p99_ms=260)
    assert verdict(make_policy(slo={"ttft_p99": "300ms"}), slow_ttft).kind == "ok"  # 260 ≥ 0.8 × 300


def test_trip_needs_consecutive_breaching_evaluations() -> None:
    """One breach is only `breaching`; a healthy evaluation resets the count; the k-th in a row trips."""
    p = make_policy(trip={"evaluations": 3})
    evs = run(p, [frame(slow("us-east")), frame(slow("us-east")), frame(), frame(slow("us-east"))] * 1)
    assert [s for s, _ in states(evs)] == [B, B, H, B]
    evs = run(p, [frame(slow("us-east"))] * 3)
    assert states(evs) == [(B, 1.0), (B, 1.0), (DRAINING, 0.5)]
    assert evs[-1].decision("us-east").rule == "trip"


def test_fast_rule_trips_at_once_even_below_min_samples() -> None:
    """k of the last m probes over the SLO trips on the first evaluation, without min_samples."""
    hard = RegionEvidence("us-east", n=8, recent_over=8, recent_n=8)
    evs = run(make_policy(), [frame(hard)])
    d = evs[0].decision("us-east")
    assert (d.state_after, d.fraction_after, d.rule) == (DRAINING, 0.5, "trip")
    assert "fast_rule" in d.verdict.rules


def test_unknown_holds_the_current_serving_fraction() -> None:
    """A stale, unreadable or thin region keeps its fraction and its phase, whatever it was doing."""
    p = make_policy()
    seq = [frame(slow("us-east"))] * 2  # tripped: 0.5
    unknowns = [
        RegionEvidence("us-east", n=5000, over_slo_fraction=0.5, stale=True),
        RegionEvidence("us-east", n=0, unreadable=True),
        RegionEvidence("us-east", n=3),
    ]
    evs = run(p, seq + [frame(u) for u in unknowns] + [frame(slow("us-east"))] * 2, every_s=3)
    assert states(evs)[2:5] == [(U, 0.5)] * 3
    assert all(e.decision("us-east").rule == "unknown" for e in evs[2:5])
    assert evs[4].state.regions["us-east"].phase == Phase.DOWN
    assert states(evs)[5] == (DRAINED, 0.0)  # resumes draining once evidence is back


def test_missing_region_evidence_is_unknown() -> None:
    """A region with no evidence at all is unknown and holds."""
    evs = run(make_policy(), [{"eu-west": good("eu-west"), "ap-southeast": good("ap-southeast")}])
    d = evs[0].decision("us-east")
    assert (d.state_after, d.fraction_after, d.verdict.rules) == (U, 1.0, ("no_evidence",))


def test_breach_recover_full_cycle_ramps_both_ways() -> None:
    """Trip → drain in max_step steps → wait m recovered evaluations → ramp up in steps → healthy."""
    p = make_policy()
    evs = run(p, [frame(slow("us-east"))] * 6 + [frame()] * 12, every_s=2)
    got = states(evs)
    assert got[:4] == [(B, 1.0), (DRAINING, 0.5), (DRAINED, 0.0), (DRAINED, 0.0)]
    # last breach at t=10 → hold-down until 15 s; the 4th recovered evaluation (t=18) starts the ramp up
    assert got[6:10] == [(DRAINED, 0.0)] * 3 + [(REC, 0.5)]
    ups = [f for _, f in got[6:]]
    assert ups == sorted(ups) and 0.5 in ups and ups[-1] == 1.0
    assert got[-1] == (H, 1.0)
    fractions = [f for _, f in got]
    assert all(abs(a - b) <= 0.5 + 1e-9 for a, b in itertools.pairwise(fractions))
    assert evs[-1].state.regions["us-east"].phase == Phase.NORMAL


def test_recovery_needs_the_lower_threshold_held_for_m_evaluations() -> None:
    """p99 under the SLO but above recover.below never recovers; an interruption restarts the count."""
    p = make_policy(recover={"hold_down": "1s"})
    between = good("us-east", p99_ms=2800)
    evs = run(p, [frame(slow("us-east"))] * 3 + [frame(between)] * 8, every_s=2)
    assert all(s == DRAINED for s, _ in states(evs)[3:])
    seq = [frame(slow("us-east"))] * 3 + [frame()] * 3 + [frame(between)] + [frame()] * 4
    evs = run(p, seq, every_s=2)
    assert [e.decision("us-east").recover_streak for e in evs[3:]] == [1, 2, 3, 0, 1, 2, 3, 4]
    assert states(evs)[-2][1] == 0.0 and states(evs)[-1] == (REC, 0.5)


def test_hold_down_grows_with_repeated_trips_and_is_capped() -> None:
    """hold_down doubles per trip within hold_down_decay, up to hold_down_max; old trips are forgotten."""
    p = make_policy(recover={"hold_down": "5s", "hold_down_max": "40s", "hold_down_decay": "100s"})
    assert [hold_down_s(p, tuple(range(k))) for k in range(1, 6)] == [5, 10, 20, 40, 40]
    prev = RegionState(trip_times=(0.0, 10.0, 20.0))
    st = ControllerState(regions={"us-east": prev})
    fast = RegionEvidence("us-east", n=5, recent_over=5, recent_n=5)
    after = evaluate(p, st, frame(fast), Overrides(), 50.0).state.regions["us-east"]
    assert after.trip_times == (0.0, 10.0, 20.0, 50.0) and after.hold_down_until == 50.0 + 40.0
    after = evaluate(p, st, frame(fast), Overrides(), 115.0).state.regions["us-east"]
    assert after.trip_times == (20.0, 115.0) and after.hold_down_until == 115.0 + 10.0


def test_hold_down_counts_from_the_last_breach() -> None:
    """While tripped, every breaching evaluation pushes the hold-down to now + hold-down."""
    p = make_policy(recover={"hold_down": "20s", "evaluations": 1})
    evs = run(p, [frame(slow("us-east"))] * 5 + [frame()] * 12, every_s=2)
    last_breach_t = 8.0
    assert evs[4].state.regions["us-east"].hold_down_until == last_breach_t + 20
    first_up = next(i for i, e in enumerate(evs) if e.decision("us-east").rule == "recover")
    assert first_up * 2.0 >= last_breach_t + 20
    assert evs[first_up - 1].decision("us-east").rule == "hold_down"


def test_breach_while_recovering_retrips_and_grows_hold_down() -> None:
    """A region breaching again on the way up re-trips (second trip: doubled hold-down) and sheds again."""
    p = make_policy(recover={"evaluations": 1, "hold_down": "2s"}, ramp={"max_step": "25%"})
    seq = [frame(slow("us-east"))] * 3 + [frame()] + [frame(slow("us-east"))] * 3
    evs = run(p, seq, every_s=2)
    rules = [e.decision("us-east").rule for e in evs]
    assert rules == ["breach", "trip", "draining", "recover", "breach", "retrip", "draining"]
    assert states(evs)[3:6] == [(REC, 0.75), (REC, 0.75), (DRAINING, 0.5)]
    st = evs[rules.index("retrip")].state.regions["us-east"]
    assert len(st.trip_times) == 2 and st.phase == Phase.DOWN
    assert states(evs)[-1][0] in (DRAINING, DRAINED)


def test_floor_min_fraction_is_never_crossed() -> None:
    """With ramp.min_fraction 20 %, a drained region keeps serving 20 % of its users."""
    p = make_policy(ramp={"min_fraction": "20%", "max_step": "30%"})
    evs = run(p, [frame(slow("us-east"))] * 10, every_s=2)
    assert [f for _, f in states(evs)] == [1.0, 0.7, 0.4, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    assert states(evs)[-1][0] == DRAINED


def test_manual_drain_names_the_state_draining_then_drained() -> None:
    """A healthy region drained by hand shows draining → drained and ramps back when the drain expires."""
    p = make_policy()
    evs = run(p, [frame()] * 10, every_s=2, overrides=Overrides(by_region={"us-east": drain("us-east", 9.0)}))
    assert states(evs)[:5] == [(DRAINING, 0.5), (DRAINED, 0.0), (DRAINED, 0.0), (DRAINED, 0.0), (DRAINED, 0.0)]
    assert states(evs)[5:7] == [(REC, 0.5), (H, 1.0)]


def test_state_round_trips_through_json() -> None:
    """ControllerState.to_dict → JSON → from_dict gives the same state and the same next evaluation."""
    p = make_policy()
    evs = run(p, [frame(slow("us-east"))] * 4, every_s=2)
    st = evs[-1].state
    back = ControllerState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st
    nxt = frame()
    assert evaluate(p, back, nxt, Overrides(), 20.0) == evaluate(p, st, nxt, Overrides(), 20.0)
    assert ControllerState.from_dict({}) == ControllerState()
    init = ControllerState.initial(p, 5.0)
    assert set(init.regions) == set(p.region_names) and init.matrix["us-east"]["us-east"] == 1.0


def test_decision_log_carries_every_input_and_output() -> None:
    """to_log() has p99, n, error rate, states, fractions and weights before/after, the decider and reasons."""
    evs = run(make_policy(), [frame(slow("us-east", errors=2))] * 2)
    log = evs[-1].decision("us-east").to_log()
    for key in (
        "p99_ms", "n", "error_rate", "state_before", "state_after", "serving_fraction_before",
        "serving_fraction_after", "weights_before", "weights_after", "decided_by", "rule", "guards", "reasons",
    ):  # fmt: skip
        assert key in log
    assert log["state_before"] == "breaching" and log["state_after"] == "draining"
    assert log["weights_before"] == {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 0.0}
    assert log["weights_after"] == {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.0}
    assert log["decided_by"] == "trip" and log["n"] == 1000 and log["error_rate"] == 0.002
    json.dumps(log)


def test_regions_dropped_from_the_policy_are_forgotten() -> None:
    """State for a region the policy no longer lists is dropped; new regions start healthy."""
    st = ControllerState(regions={"gone": RegionState(serving_fraction=0.0)})
    ev = evaluate(make_policy(), st, frame(), Overrides(), 0.0)
    assert set(ev.state.regions) == {"us-east", "eu-west", "ap-southeast"}
    assert all(r.serving_fraction == 1.0 for r in ev.state.regions.values())


def test_quantile_breach_is_decided_on_counts_not_floats() -> None:
    """At quantile 90 %, 1 slow of 10 keeps the p90 under the SLO (no breach) and 2 of 10 put it over (breach)."""
    policy = make_policy(slo={"quantile": "90%"}, windows={"min_samples": 10})
    assert "p99" not in verdict(policy, slow("r", n=10, over=0.1)).rules
    assert "p99" in verdict(policy, slow("r", n=10, over=0.2)).rules
