"""The judge: verdicts on evidence, the per-region state machine, hysteresis, hold-down, ramps, state round trip."""

from __future__ import annotations

import itertools
import json

import pytest
from judgekit import drain, frame, good, make_policy, run, slow

from trafficd.decide.evidence import thresholds, window_as_slice
from trafficd.decide.judge import ControllerState, Evaluation, Phase, RegionState, evaluate, hold_down_s, judge_region
from trafficd.model import Overrides, RegionEvidence, RegionStateName, SliceCounts

H, B, DRAINING, DRAINED, REC, U = (
    RegionStateName.HEALTHY,
    RegionStateName.BREACHING,
    RegionStateName.DRAINING,
    RegionStateName.DRAINED,
    RegionStateName.RECOVERING,
    RegionStateName.UNKNOWN,
)


def states(evs: list[Evaluation], region: str = "us-east") -> list[tuple[RegionStateName, float]]:
    return [(e.decision(region).state_after, e.decision(region).fraction_after) for e in evs]


def verdict(policy, ev: RegionEvidence | None, prev: RegionState | None = None):  # type: ignore[no-untyped-def]
    """The verdict of one evaluation of `ev` (as one slice holding all its probes) from `prev`."""
    given = None if ev is None else window_as_slice(ev, 1, 1.0)
    return judge_region(policy, "us-east", prev or RegionState(), given, 10.0).verdict


@pytest.mark.parametrize(
    ("evidence", "kind", "rules"),
    [
        (RegionEvidence("us-east", n=100, over_slo_fraction=0.11), "breach", ("latency",)),  # 11 × 1.386 − 89 × 0.015
        (RegionEvidence("us-east", n=100, over_slo_fraction=0.10), "ok", ("within_slo",)),  # 12.5 < 12.88
        (RegionEvidence("us-east", n=100, errors=11), "breach", ("errors",)),
        (RegionEvidence("us-east", n=1000, over_slo_fraction=0.0), "recovered", ("healthy_rate",)),  # 15.2 ≥ 12.88
        (RegionEvidence("us-east", n=700, over_slo_fraction=0.0), "ok", ("within_slo",)),  # 10.6 < 12.88
        (RegionEvidence("us-east", n=5000, over_slo_fraction=0.9, stale=True), "unknown", ("stale",)),
        (RegionEvidence("us-east", n=5000, over_slo_fraction=0.9, unreadable=True), "unknown", ("unreadable",)),
        (None, "unknown", ("no_evidence",)),
    ],
)
def test_verdict_table(evidence: RegionEvidence | None, kind: str, rules: tuple[str, ...]) -> None:
    """Each signal breaches exactly when its log-likelihood evidence reaches the derived threshold; unknown wins."""
    v = verdict(make_policy(), evidence)
    assert (v.kind, v.rules) == (kind, rules)
    assert v.reasons


def test_ttft_slo_is_a_third_signal_only_when_set() -> None:
    """TTFT over its SLO breaches with a TTFT SLO in the policy and is ignored without one."""
    ev = RegionEvidence("us-east", n=1000, ttft_n=1000, ttft_over_slo_fraction=0.05)
    assert verdict(make_policy(slo={"ttft_p99": "300ms"}), ev).rules == ("ttft",)
    assert verdict(make_policy(), ev).kind == "recovered"


def test_thresholds_are_derived_from_the_false_alarm_budget() -> None:
    """A tighter budget or a faster probe rate (more probes per period) raises the threshold; looser lowers it."""
    base = thresholds(make_policy(), "us-east")["latency"]
    tighter = thresholds(make_policy(trip={"false_trips": 0.1}), "us-east")["latency"]
    looser = thresholds(make_policy(trip={"false_trip_days": 1}), "us-east")["latency"]
    faster = thresholds(make_policy(probe={"interval": "100ms"}), "us-east")["latency"]
    assert looser < base < tighter and base < faster
    assert 11.0 < base < 14.0  # ≈ ln(ARL0 · KL): 4 probes/s, 2 signals, one false trip per 90 days


def test_each_slice_is_consumed_once() -> None:
    """The same slice seen in several evaluations (overlapping windows) counts once; a slice still filling counts
    only its new probes."""
    p = make_policy()
    first = RegionEvidence("us-east", n=50, slices=(SliceCounts(7, 50, 4),))
    j1 = judge_region(p, "us-east", RegionState(), first, 1.0)
    j2 = judge_region(p, "us-east", j1.state, first, 2.0)
    assert j1.consumed_n == 50 and j2.consumed_n == 0 and j2.state.trip_llr == j1.state.trip_llr
    grown = RegionEvidence("us-east", n=80, slices=(SliceCounts(7, 80, 6), SliceCounts(8, 10, 0)))
    j3 = judge_region(p, "us-east", j2.state, grown, 3.0)
    assert j3.consumed_n == 40 and j3.state.cursor == 8 and j3.state.cursor_counts == (10, 0, 0, 0)
    assert judge_region(p, "us-east", j3.state, grown, 4.0).consumed_n == 0


def test_trip_accumulates_evidence_over_evaluations() -> None:
    """5 % over adds ~5.5 per evaluation: breaching is reached on the third evaluation, not the first."""
    evs = run(make_policy(), [frame(slow("us-east", over=0.05))] * 3)
    assert states(evs) == [(H, 1.0), (H, 1.0), (DRAINING, 0.5)]
    assert evs[-1].decision("us-east").rule == "trip"


def test_a_hard_stall_trips_on_its_first_evaluation() -> None:
    """Every probe failing: the first slice of failures is enough evidence."""
    stall = RegionEvidence("us-east", n=1000, errors=1000, over_slo_fraction=1.0)
    d = run(make_policy(), [frame(stall)])[0].decision("us-east")
    assert (d.state_after, d.fraction_after, d.rule) == (DRAINING, 0.5, "trip")
    assert set(d.verdict.rules) == {"latency", "errors"}


def test_unknown_holds_the_current_serving_fraction() -> None:
    """A stale or unreadable region keeps its fraction, its phase and its accumulated evidence."""
    p = make_policy()
    seq = [frame(slow("us-east"))]  # tripped: 0.5
    unknowns = [
        RegionEvidence("us-east", n=5000, over_slo_fraction=0.5, stale=True),
        RegionEvidence("us-east", n=0, unreadable=True),
    ]
    evs = run(p, seq + [frame(u) for u in unknowns] + [frame(slow("us-east"))] * 2, every_s=3)
    assert states(evs)[1:3] == [(U, 0.5)] * 2
    assert all(e.decision("us-east").rule == "unknown" for e in evs[1:3])
    assert evs[2].state.regions["us-east"].phase == Phase.DOWN
    assert evs[2].state.regions["us-east"].trip_llr == evs[0].state.regions["us-east"].trip_llr
    assert states(evs)[3] == (DRAINED, 0.0)  # resumes draining once evidence is back


def test_intermittent_staleness_does_not_erase_evidence() -> None:
    """5 % over with every second evaluation stale still trips: unknown keeps what was accumulated."""
    stale = RegionEvidence("us-east", n=1000, over_slo_fraction=0.05, stale=True)
    evs = run(make_policy(), [frame(slow("us-east", over=0.05)), frame(stale)] * 3)
    assert any(e.decision("us-east").rule == "trip" for e in evs)


def test_missing_region_evidence_is_unknown() -> None:
    """A region with no evidence at all is unknown and holds."""
    evs = run(make_policy(), [{"eu-west": good("eu-west"), "ap-southeast": good("ap-southeast")}])
    d = evs[0].decision("us-east")
    assert (d.state_after, d.fraction_after, d.verdict.rules) == (U, 1.0, ("no_evidence",))


def test_breach_recover_full_cycle_ramps_both_ways() -> None:
    """Trip → drain in max_step steps → evidence of the healthy rate + hold-down → ramp up in steps → healthy."""
    p = make_policy()
    evs = run(p, [frame(slow("us-east"))] * 6 + [frame()] * 30, every_s=2)
    got = states(evs)
    assert got[:3] == [(DRAINING, 0.5), (DRAINED, 0.0), (DRAINED, 0.0)]
    first_up = next(i for i, e in enumerate(evs) if e.decision("us-east").rule == "recover")
    assert first_up >= 6 + 4  # ≥ 4 healthy evaluations (200 probes, ~3.0 each) before health evidence reaches 12.17
    ups = [f for _, f in got[first_up:]]
    assert ups == sorted(ups) and 0.5 in ups and ups[-1] == 1.0
    assert got[-1] == (H, 1.0)
    fractions = [f for _, f in got]
    assert all(abs(a - b) <= 0.5 + 1e-9 for a, b in itertools.pairwise(fractions))
    assert evs[-1].state.regions["us-east"].phase == Phase.NORMAL


def test_recovery_is_decided_on_exceedance_evidence_not_the_p99() -> None:
    """At 1.5 % over (between the rates, p99 under the SLO) a tripped region does not recover; at 0 % it does."""
    p = make_policy(recover={"hold_down": "1s"})
    between = slow("us-east", p99_ms=1000, over=0.015)
    evs = run(p, [frame(slow("us-east"))] * 2 + [frame(between)] * 40, every_s=2)
    assert all(s == DRAINED for s, _ in states(evs)[2:])
    evs = run(p, [frame(slow("us-east"))] * 2 + [frame()] * 40, every_s=2)
    assert states(evs)[-1] == (H, 1.0)


def test_hold_down_grows_with_repeated_trips_and_is_capped() -> None:
    """hold_down doubles per trip within hold_down_decay, up to hold_down_max; old trips are forgotten."""
    p = make_policy(recover={"hold_down": "5s", "hold_down_max": "40s", "hold_down_decay": "100s"})
    assert [hold_down_s(p, tuple(range(k))) for k in range(1, 6)] == [5, 10, 20, 40, 40]
    prev = RegionState(trip_times=(0.0, 10.0, 20.0))
    st = ControllerState(regions={"us-east": prev})
    fast = RegionEvidence("us-east", n=50, errors=50, over_slo_fraction=1.0)
    after = evaluate(p, st, frame(window_as_slice(fast, 50, 1.0)), Overrides(), 50.0).state.regions["us-east"]
    assert after.trip_times == (0.0, 10.0, 20.0, 50.0) and after.hold_down_until == 50.0 + 40.0
    after = evaluate(p, st, frame(window_as_slice(fast, 115, 1.0)), Overrides(), 115.0).state.regions["us-east"]
    assert after.trip_times == (20.0, 115.0) and after.hold_down_until == 115.0 + 10.0


def test_hold_down_counts_from_the_last_breach() -> None:
    """While tripped, every breaching evaluation pushes the hold-down to now + hold-down."""
    p = make_policy(recover={"hold_down": "20s"})
    evs = run(p, [frame(slow("us-east"))] * 5 + [frame()] * 30, every_s=2)
    last_breach_t = max(i * 2.0 for i, e in enumerate(evs) if e.decision("us-east").verdict.kind == "breach")
    assert evs[4].state.regions["us-east"].hold_down_until == 8.0 + 20
    first_up = next(i for i, e in enumerate(evs) if e.decision("us-east").rule == "recover")
    assert first_up * 2.0 >= last_breach_t + 20


def test_breach_while_recovering_retrips_and_grows_hold_down() -> None:
    """A region breaching again on the way up re-trips (second trip: doubled hold-down) and sheds again."""
    p = make_policy(recover={"hold_down": "2s"}, ramp={"max_step": "25%"})
    evs = run(p, [frame(slow("us-east"))] * 2 + [frame()] * 30, every_s=2)
    up = next(i for i, e in enumerate(evs) if e.decision("us-east").rule == "recover")
    seq = [frame(slow("us-east"))] * 2 + [frame()] * (up - 1) + [frame(slow("us-east"))] * 3
    evs = run(p, seq, every_s=2)
    rules = [e.decision("us-east").rule for e in evs]
    assert "retrip" in rules and rules.index("retrip") > rules.index("recover")
    st = evs[rules.index("retrip")].state.regions["us-east"]
    assert len(st.trip_times) == 2 and st.phase == Phase.DOWN
    assert states(evs)[-1][0] in (DRAINING, DRAINED)


def test_floor_min_fraction_is_never_crossed() -> None:
    """With ramp.min_fraction 20 %, a drained region keeps serving 20 % of its users."""
    p = make_policy(ramp={"min_fraction": "20%", "max_step": "30%"})
    evs = run(p, [frame(slow("us-east"))] * 10, every_s=2)
    assert [f for _, f in states(evs)] == [0.7, 0.4, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
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
    """to_log() has p99, n, error rate, the evidence against its thresholds, states, fractions, weights, reasons."""
    evs = run(make_policy(), [frame(slow("us-east", errors=2))] * 1)
    log = evs[-1].decision("us-east").to_log()
    for key in (
        "p99_ms", "n", "error_rate", "state_before", "state_after", "serving_fraction_before", "llr", "consumed_n",
        "span_counts",
        "serving_fraction_after", "weights_before", "weights_after", "decided_by", "rule", "guards", "reasons",
    ):  # fmt: skip
        assert key in log
    assert log["state_before"] == "healthy" and log["state_after"] == "draining"
    assert log["weights_before"] == {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 0.0}
    assert log["weights_after"] == {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.0}
    assert log["decided_by"] == "trip" and log["n"] == 1000 and log["error_rate"] == 0.002
    assert log["consumed_n"] == 100 and log["llr"]["latency"]["trip"] >= log["llr"]["latency"]["threshold"]
    json.dumps(log)


def test_regions_dropped_from_the_policy_are_forgotten() -> None:
    """State for a region the policy no longer lists is dropped; new regions start healthy."""
    st = ControllerState(regions={"gone": RegionState(serving_fraction=0.0)})
    ev = evaluate(make_policy(), st, frame(), Overrides(), 0.0)
    assert set(ev.state.regions) == {"us-east", "eu-west", "ap-southeast"}
    assert all(r.serving_fraction == 1.0 for r in ev.state.regions.values())


def test_global_episode_fails_open_and_needs_fresh_evidence_after() -> None:
    """Every region at 5 % over: nothing trips (fail open over time); afterwards a region needs new evidence."""
    p = make_policy()
    everywhere = frame(*(slow(r, over=0.05) for r in ("us-east", "eu-west", "ap-southeast")))
    evs = run(p, [everywhere] * 20 + [frame()] * 40, every_s=2)
    assert all(f == 1.0 for e in evs for f in e.fractions.values())
    assert evs[5].fail_open and not evs[-1].fail_open
    assert evs[-1].state.regions["us-east"].trip_llr.get("latency", 0.0) == 0.0


def test_a_breach_verdict_reached_on_evidence_from_a_global_episode_does_not_trip_when_it_ends() -> None:
    """When a global episode ends, breach evidence gathered during it is forgotten in that very evaluation: the
    region's breach verdict becomes ok and nothing trips until it has fresh evidence of its own."""
    p = make_policy()
    h = thresholds(p, "us-east")["latency"]
    leaning = RegionState(trip_llr={"latency": 2 * h, "errors": 0.0}, lean_until=-1.0)
    st = ControllerState(regions={"us-east": leaning}, global_episode=True)
    ev = evaluate(p, st, frame(slow("us-east", over=0.11)), Overrides(), 0.0)
    d = ev.decision("us-east")
    assert not ev.fail_open and d.fraction_after == 1.0
    assert d.verdict.kind == "ok" and d.verdict.rules == ("after_global_episode",)
    assert ev.state.regions["us-east"].trip_llr.get("latency", 0.0) == 0.0


def test_a_trip_waits_while_most_regions_show_breach_evidence_but_not_for_overwhelming_evidence() -> None:
    """A region reaching its threshold while every other region shows breach evidence too (a global problem
    suspected) holds (rule `global`); it trips once the others are clearly healthy, and at once when its own rate
    is so far above theirs that a global problem is ruled out (a stall-like 50 % against their 2 %)."""
    p = make_policy()
    warm = (slow("eu-west", over=0.02), slow("ap-southeast", over=0.02))
    held, later = run(p, [frame(slow("us-east", over=0.11), *warm), frame(slow("us-east", over=0.11))])
    assert held.decision("us-east").verdict.kind == "breach" and held.decision("us-east").rule == "global"
    assert held.decision("us-east").fraction_after == 1.0
    assert later.decision("us-east").rule == "trip" and later.decision("us-east").fraction_after < 1.0
    (stall,) = run(p, [frame(slow("us-east", over=0.5), *warm)])
    assert stall.decision("us-east").rule == "trip" and stall.decision("us-east").fraction_after < 1.0


def test_a_re_trip_within_the_flap_window_holds_until_the_window_has_passed() -> None:
    """At most one drain–restore cycle per `recover.flap_window`: a region tripped again within it of its last
    restore is not restored before the window has passed, whatever its evidence of health."""
    p = make_policy(recover={"flap_window": "2m"})
    evs = run(p, [frame(slow("us-east"))] + [frame()] * 40)
    restored_at = evs[-1].state.regions["us-east"].restored_at
    assert states(evs)[-1] == (H, 1.0) and restored_at is not None
    again = run(p, [frame(slow("us-east"))] + [frame()] * 150, start=41.0, state=evs[-1].state)
    assert again[0].decision("us-east").rule == "trip"
    assert any("flapping" in r for r in again[0].decision("us-east").reasons)
    back = next(e for e in again if e.decision("us-east").fraction_after == 1.0 and e is not again[0])
    assert back.state.evaluated_at is not None and back.state.evaluated_at >= restored_at + 120.0
