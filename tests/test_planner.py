"""Planner: serving fractions → traffic matrix by neighbour preference and capacity headroom."""

from __future__ import annotations

import pytest
from judgekit import make_policy

from trafficd.decide import planner
from trafficd.model import RegionEvidence, identity_matrix

UNLIMITED: dict[str, float | None] = {"us-east": None, "eu-west": None, "ap-southeast": None}


def test_nothing_drained_is_the_identity() -> None:
    """Every region serving fully gives the identity matrix."""
    p = make_policy()
    fractions = dict.fromkeys(p.region_names, 1.0)
    assert planner.plan(p, fractions, UNLIMITED) == identity_matrix(p.region_names)


def test_displaced_share_goes_to_the_first_neighbour() -> None:
    """A half-drained us-east sends its other half to eu-west, its first neighbour."""
    p = make_policy()
    m = planner.plan(p, {"us-east": 0.5, "eu-west": 1.0, "ap-southeast": 1.0}, UNLIMITED)
    assert m["us-east"] == {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.0}
    assert m["eu-west"] == {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 0.0}


def test_headroom_spills_to_the_next_neighbour() -> None:
    """eu-west can take 30 %: the rest of a drained us-east goes to ap-southeast."""
    p = make_policy()
    spare = {"us-east": None, "eu-west": 0.3, "ap-southeast": None}
    m = planner.plan(p, {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 1.0}, spare)
    assert m["us-east"] == {"us-east": 0.0, "eu-west": 0.3, "ap-southeast": 0.7}


def test_what_fits_nowhere_stays_at_the_source() -> None:
    """With 20 % + 10 % headroom, a drained region still serves the 70 % nobody can take."""
    p = make_policy()
    spare = {"us-east": None, "eu-west": 0.2, "ap-southeast": 0.1}
    m = planner.plan(p, {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 1.0}, spare)
    assert m["us-east"] == pytest.approx({"us-east": 0.7, "eu-west": 0.2, "ap-southeast": 0.1})
    assert planner.allocate(p, {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 1.0}, spare).unplaced == {
        "us-east": pytest.approx(0.7)
    }


def test_only_fully_serving_regions_receive() -> None:
    """A region that is itself shedding never receives spill-over; non-neighbours are the last resort."""
    p = make_policy(regions={"us-east": {"neighbours": ["eu-west"]}})
    m = planner.plan(p, {"us-east": 0.0, "eu-west": 0.5, "ap-southeast": 1.0}, UNLIMITED)
    assert m["us-east"] == {"us-east": 0.0, "eu-west": 0.0, "ap-southeast": 1.0}
    assert m["eu-west"] == {"us-east": 0.0, "eu-west": 0.5, "ap-southeast": 0.5}


def test_order_decides_who_gets_scarce_headroom() -> None:
    """Sources are placed in the given order: the first keeps the shared receiver's headroom."""
    p = make_policy()
    spare = {"us-east": None, "eu-west": None, "ap-southeast": 0.5}
    fr = {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 1.0}
    a = planner.allocate(p, fr, spare, ["eu-west", "us-east"])
    assert a.unplaced == {"eu-west": 0.0, "us-east": 0.5}
    b = planner.allocate(p, fr, spare, ["us-east", "eu-west"])
    assert b.unplaced == {"us-east": 0.0, "eu-west": 0.5}


def test_headroom_is_the_smaller_of_declared_and_live() -> None:
    """Declared capacity_headroom and the live evidence figure: the smaller wins; stale live figures are ignored."""
    p = make_policy(regions={"eu-west": {"capacity_headroom": "50%"}, "ap-southeast": {"capacity_headroom": "40%"}})
    ev = {
        "us-east": RegionEvidence("us-east", n=1, headroom=0.2),
        "eu-west": RegionEvidence("eu-west", n=1, headroom=0.3),
        "ap-southeast": RegionEvidence("ap-southeast", n=1, headroom=0.1, stale=True),
    }
    assert planner.headroom(p, ev) == {"us-east": 0.2, "eu-west": 0.3, "ap-southeast": 0.4}
    assert planner.headroom(p, {}) == {"us-east": None, "eu-west": 0.5, "ap-southeast": 0.4}


def test_rows_always_sum_to_one_with_float_steps() -> None:
    """Awkward fractions (0.1 steps) still give rows summing to exactly 1."""
    p = make_policy()
    for s in (0.1, 0.3, 0.7, 0.9):
        m = planner.plan(p, {"us-east": s, "eu-west": 1.0, "ap-southeast": 1.0}, {"eu-west": 0.05})
        for row in m.values():
            assert sum(row.values()) == pytest.approx(1.0, abs=1e-9)
            assert all(0.0 <= v <= 1.0 for v in row.values())


def test_preference_lists_neighbours_then_the_rest() -> None:
    """Preference is the neighbours in order, then every other region in policy order."""
    p = make_policy(regions={"ap-southeast": {"neighbours": ["eu-west"]}})
    assert planner.preference(p, "ap-southeast") == ["eu-west", "us-east"]
    assert planner.preference(p, "us-east") == ["eu-west", "ap-southeast"]


def test_distrusted_receivers_are_a_last_resort_only() -> None:
    """A breaching neighbour is skipped while a healthy one has room, used only to keep an existing drain."""
    p = make_policy()
    fr = {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 1.0}
    m = planner.plan(p, fr, UNLIMITED, avoid={"eu-west"})
    assert m["us-east"] == {"us-east": 0.0, "eu-west": 0.0, "ap-southeast": 1.0}
    spare = {"us-east": None, "eu-west": None, "ap-southeast": 0.4}
    m = planner.plan(p, fr, spare, avoid={"eu-west"})
    assert m["us-east"] == pytest.approx({"us-east": 0.0, "eu-west": 0.6, "ap-southeast": 0.4})
    strict = planner.allocate(p, fr, spare, avoid={"eu-west"}, last_resort=False)
    assert strict.unplaced == {"us-east": pytest.approx(0.6)}
