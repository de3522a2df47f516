"""The peer hold (decide/peers.py, episode.py): is a breach regional or global, judged over the breaching region's
own span of evidence with the other regions pooled."""

from __future__ import annotations

from judgekit import frame, make_policy, run, slow

from trafficd.decide import episode, peers
from trafficd.decide.evidence import thresholds
from trafficd.decide.judge import ControllerState, Judged, RegionState, Verdict, evaluate
from trafficd.model import Overrides, RegionEvidence, SliceCounts

H = 12.89  # the default policy's threshold at 4 probes/s (only the ratio to it matters here)


def span(n: int, rate: float) -> peers.Span:
    """n probes, a share `rate` of them over the SLO (and errors alike)."""
    k = round(n * rate)
    return (n, k, k, 0)


def test_the_lower_bound_on_a_rate_is_below_it_and_tight_for_a_stall() -> None:
    """Wilson's lower bound is below the observed rate, 0 without data, and high for all probes failing."""
    assert peers.lower_rate(0, 0) == 0.0
    assert 0.0 < peers.lower_rate(1000, 50) < 0.05
    assert peers.lower_rate(40, 40) > 0.7
    assert peers.lower_rate(10, 12) == peers.lower_rate(10, 10)  # an inconsistent count reads as all of them


def test_the_number_of_others_needed_follows_the_fail_open_share() -> None:
    """Three regions at 75 % need both others; four at 75 % need two of three; at 30 % none (one is enough)."""
    assert peers.needed(make_policy()) == 2
    assert peers.needed(make_policy(guards={"fail_open_share": "30%"})) == 0


def test_healthy_others_over_a_long_span_are_clearly_healthy_breaching_ones_are_not() -> None:
    """Over 1,000 probes each, two regions at 0.5 % pool to well under −margin × h; two at 2 % well above it."""
    p = make_policy(trip={"breach_rate": "2%"})
    own = span(1000, 0.02)
    healthy = peers.pooled(p, own, [span(1000, 0.005)] * 2, "latency", peers.PEER_MARGIN * H)
    breaching = peers.pooled(p, own, [span(1000, 0.02)] * 2, "latency", peers.PEER_MARGIN * H)
    assert healthy is not None and healthy <= -peers.PEER_MARGIN * H
    assert breaching is not None and breaching > 0.0


def test_a_short_span_cannot_tell_healthy_others_at_the_breach_rate_but_can_for_a_stall() -> None:
    """Over 40 probes each, healthy others are not yet clearly healthy against the breach rate; against a stall's
    rate (all 40 of A's probes failing) the same others rule a global problem out at once."""
    p = make_policy(trip={"breach_rate": "2%"})
    others = [span(40, 0.0)] * 2
    at_breach = peers.pooled(p, span(40, 0.05), others, "latency", peers.PEER_MARGIN * H)
    at_stall = peers.pooled(p, span(40, 1.0), others, "latency", peers.PEER_MARGIN * H)
    assert at_breach is not None and at_breach > -peers.PEER_MARGIN * H
    assert at_stall is not None and at_stall <= -peers.PEER_MARGIN * H


def test_one_region_deep_in_a_breach_does_not_outweigh_a_healthy_one() -> None:
    """Each region's share is capped: a second region at 20 % and a healthy third do not make a global problem."""
    p = make_policy(trip={"breach_rate": "2%"})
    v = peers.pooled(p, span(1000, 0.02), [span(1000, 0.2), span(1000, 0.0)], "latency", peers.PEER_MARGIN * H)
    assert v is not None and v <= -peers.PEER_MARGIN * H


def test_too_few_others_with_evidence_cannot_make_a_global_problem() -> None:
    """With fewer other regions (with probes in the span) than the share needs, nothing holds the trip."""
    p = make_policy()
    assert peers.pooled(p, span(100, 0.5), [span(100, 0.5)], "latency", 5.0) is None
    held = peers.hold(p, "us-east", [{"us-east": span(100, 0.5), "eu-west": (0, 0, 0, 0)}], ["eu-west"], {"latency": H})
    assert held == {}


def _judged(trip: float, consumed: tuple[int, int, int, int], spans: tuple = ()) -> Judged:  # type: ignore[type-arg]
    state = RegionState(trip_llr={"latency": trip, "errors": 0.0}, span_counts=spans)
    return Judged(Verdict("ok", (), ()), state, consumed[0], consumed)


def test_spans_grow_while_evidence_is_up_and_start_afresh_at_or_below_their_level() -> None:
    """Above half the threshold both spans add every region's counts; at a quarter or below both start afresh."""
    p = make_policy()
    h = thresholds(p, "us-east")["latency"]
    judged = {
        "us-east": _judged(0.6 * h, (10, 1, 0, 0)),
        "eu-west": _judged(0.3 * h, (10, 0, 0, 0)),
        "ap-southeast": _judged(0.0, (10, 2, 0, 0)),
    }
    episode.track_spans(p, judged)
    us, eu, ap = (judged[r].state.span_counts for r in ("us-east", "eu-west", "ap-southeast"))
    assert us == ({r: judged[r].consumed for r in judged},) * 2
    assert eu[0] == {r: judged[r].consumed for r in judged} and eu[1] == {}
    assert ap == ()
    judged["us-east"] = _judged(0.2 * h, (10, 0, 0, 0), us)
    episode.track_spans(p, judged)
    assert judged["us-east"].state.span_counts == ()


def test_a_regional_breach_waits_for_clearly_healthy_others_then_trips() -> None:
    """A region at 6 % with the others at 1 % reaches its threshold before the others are clearly healthy over its
    span: the trip waits (rule `global`, the reason names the pooled evidence), then goes ahead."""
    p = make_policy()
    evs = run(p, [frame(slow("us-east", over=0.06), slow("eu-west", over=0.01), slow("ap-southeast", over=0.01))] * 12)
    rules = [e.decision("us-east").rule for e in evs]
    first = rules.index("global")
    assert "trip" in rules[first:] and all(r == "global" for r in rules[first : rules.index("trip")])
    held = evs[first].decision("us-east")
    assert held.fraction_after == 1.0 and any("(pooled) show breach evidence" in x for x in held.reasons)
    assert held.to_log()["span_counts"] and len(held.to_log()["span_counts"]) == len(peers.SPAN_FROM)


def test_the_span_counts_survive_a_json_round_trip_and_decide_the_same() -> None:
    """A state holding spans round-trips through to_dict/from_dict and gives the same next evaluation."""
    import json

    p = make_policy()
    evs = run(p, [frame(slow("us-east", over=0.06))] * 3)
    st = evs[-1].state
    assert st.regions["us-east"].span_counts
    back = ControllerState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st
    nxt = {
        r: RegionEvidence(r, n=100, slices=(SliceCounts(99, 100, 6 if r == "us-east" else 0, 0, 0),))
        for r in p.region_names
    }
    assert evaluate(p, back, nxt, Overrides(), 5.0) == evaluate(p, st, nxt, Overrides(), 5.0)
