"""Unknown holds everything about a region: its own serving fraction and the spill-over shares it receives."""

from __future__ import annotations

from judgekit import frame, make_policy

from trafficd.decide import planner
from trafficd.decide.judge import evaluate
from trafficd.decide.state import ControllerState, Phase, RegionState
from trafficd.model import Overrides, RegionEvidence, RegionStateName, identity_matrix

UNLIMITED: dict[str, float | None] = {"us-east": None, "eu-west": None, "ap-southeast": None}
SPLIT = {"us-east": 0.25, "eu-west": 0.5, "ap-southeast": 0.25}


def _previous() -> dict[str, dict[str, float]]:
    m = identity_matrix(["us-east", "eu-west", "ap-southeast"])
    m["eu-west"] = dict(SPLIT)
    return m


def test_planner_keeps_the_share_a_held_receiver_already_takes() -> None:
    """eu-west sheds half, a quarter to each neighbour; ap-southeast goes unknown: its quarter stays, not moved to
    us-east (without `hold` it would be re-planned onto the trusted us-east)."""
    p = make_policy()
    fractions = {"us-east": 1.0, "eu-west": 0.5, "ap-southeast": 1.0}
    avoid = {"eu-west", "ap-southeast"}
    held = planner.plan(p, fractions, UNLIMITED, avoid=avoid, previous=_previous(), hold={"ap-southeast"})
    assert held["eu-west"] == SPLIT
    moved = planner.plan(p, fractions, UNLIMITED, avoid=avoid, previous=_previous())
    assert moved["eu-west"]["ap-southeast"] == 0.0  # the flap issue 11 saw: 64 → 0 → 64


def test_a_held_receiver_gets_no_new_share() -> None:
    """eu-west sheds more while ap-southeast is unknown: the new share goes to us-east, ap-southeast keeps 0.25."""
    p = make_policy()
    fractions = {"us-east": 1.0, "eu-west": 0.25, "ap-southeast": 1.0}
    m = planner.plan(
        p, fractions, UNLIMITED, avoid={"eu-west", "ap-southeast"}, previous=_previous(), hold={"ap-southeast"}
    )
    assert m["eu-west"] == {"us-east": 0.5, "eu-west": 0.25, "ap-southeast": 0.25}


def test_judge_holds_the_spill_over_an_unknown_region_receives() -> None:
    """Through the judge: ap-southeast's agent is stale, so eu-west's users keep going a quarter to ap-southeast."""
    p = make_policy()
    state = ControllerState(
        regions={
            "us-east": RegionState(),
            "eu-west": RegionState(RegionStateName.DRAINING, 0.5, Phase.DOWN, hold_down_until=1e12, last_step_at=0.0),
            "ap-southeast": RegionState(),
        },
        matrix=_previous(),
    )
    stale = RegionEvidence(region="ap-southeast", n=0, stale=True)
    evaluation = evaluate(p, state, frame(stale), Overrides(), now=1000.0)
    assert evaluation.decision("ap-southeast").verdict.kind == "unknown"
    assert evaluation.matrix["eu-west"]["ap-southeast"] == 0.25
    assert evaluation.matrix["ap-southeast"] == {"us-east": 0.0, "eu-west": 0.0, "ap-southeast": 1.0}
