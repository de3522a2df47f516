"""Spill-over sized by measured load: receivers take at most their live headroom in requests/s (issue 16)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from judgekit import frame, good, make_policy, run, slow

from trafficd.decide import planner
from trafficd.model import RegionEvidence
from trafficd.policy.capacity import Capacity
from trafficd.probe.capacity_metrics import parse
from trafficd.stats.capacity import worker_figures

CAPACITY: dict[str, Any] = {"capacity": {"max_concurrency": 64}}


def live(region: str, load_rps: float, headroom_rps: float | None, **kw: Any) -> RegionEvidence:
    """Healthy evidence with live capacity figures."""
    return good(region, load_rps=load_rps, headroom_rps=headroom_rps, capacity_source="live", capacity_age_s=3.0, **kw)


def five_to_one() -> dict[str, RegionEvidence]:
    """us-east serves 5× eu-west's load; ap-southeast is full."""
    return {
        "us-east": live("us-east", 100.0, 60.0),
        "eu-west": live("eu-west", 20.0, 10.0),
        "ap-southeast": live("ap-southeast", 20.0, 0.0),
    }


def test_small_region_drain_fits_in_the_big_neighbour() -> None:
    """eu-west's 20 req/s fit in us-east's 60 req/s of headroom: all of eu-west's users go there."""
    p = make_policy(**CAPACITY)
    spare = planner.headroom(p, five_to_one())
    assert spare.by_volume and spare["us-east"] == 60.0
    m = planner.plan(p, {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 1.0}, spare)
    assert m["eu-west"] == {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 0.0}


def test_big_region_drain_spills_only_what_the_small_one_can_take() -> None:
    """us-east's 100 req/s drained: eu-west takes its 10 req/s (10 % of us-east's users), the rest stays."""
    p = make_policy(
        **CAPACITY, regions={"us-east": {"capacity_headroom": "60%"}, "eu-west": {"capacity_headroom": "60%"}}
    )
    m = planner.plan(p, {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 1.0}, planner.headroom(p, five_to_one()))
    assert m["us-east"] == pytest.approx({"us-east": 0.9, "eu-west": 0.1, "ap-southeast": 0.0})
    units = planner.plan(p, {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 1.0}, planner.headroom(p, {}))
    assert units["us-east"]["eu-west"] == pytest.approx(0.6)  # the old unit rule would send 60 req/s to eu-west


def test_capacity_guard_logs_the_figures() -> None:
    """A slow us-east sheds only what eu-west can take; the guard's reason gives load, headroom and what stays."""
    p = make_policy(**CAPACITY)
    figures = five_to_one()
    evals = run(
        p,
        [
            frame(
                slow("us-east", load_rps=100.0, headroom_rps=60.0, capacity_source="live"),
                figures["eu-west"],
                figures["ap-southeast"],
            )
        ],
    )
    d = {x.region: x for x in evals[0].decisions}["us-east"]
    assert d.fraction_after == pytest.approx(0.9)
    assert "capacity" in d.guards
    why = next(r for r in d.reasons if r.startswith("capacity:"))
    assert "us-east serves 100 req/s of its users' 100" in why
    assert "eu-west 10 req/s (live, 3s old)" in why and "ap-southeast 0 req/s (live, 3s old)" in why
    assert "40 req/s (40% of its users) stay at us-east" in why


def _vllm(running: int, kv: float, completed: float) -> str:
    return (
        f'vllm:num_requests_running{{model_name="m"}} {running}\nvllm:num_requests_waiting{{model_name="m"}} 0\n'
        f'vllm:kv_cache_usage_perc{{model_name="m"}} {kv}\n'
        f'vllm:request_success_total{{model_name="m",finished_reason="stop"}} {completed}\n'
    )


@pytest.mark.parametrize(("kv", "expected_share"), [(0.30, 1.0), (0.85, 0.3)])
def test_receiver_with_kv_cache_near_full_takes_less(kv: float, expected_share: float) -> None:
    """us-east's worker (20 running, 10 req/s, 64 slots) takes all of eu-west's 12 req/s with a 30 % KV cache,
    but at 85 % (target 90 %) only 20 × 0.9/0.85 − 20 = 1.18 slots × 0.5/s ≈ 0.59 req/s ≈ 5 % of them."""
    cfg = Capacity(max_concurrency=64)
    load = parse(_vllm(20, kv, 1000.0), cfg)
    us = worker_figures(load.running, load.waiting, load.limit, load.kv_usage, 10.0, cfg, at=0.0)
    p = make_policy(**CAPACITY)
    ev = {
        "us-east": live("us-east", us.load_rps, us.headroom_rps),
        "eu-west": live("eu-west", 12.0, 5.0),
        "ap-southeast": live("ap-southeast", 20.0, 0.0),
    }
    m = planner.plan(p, {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 1.0}, planner.headroom(p, ev))
    taken = m["eu-west"]["us-east"]
    if expected_share == 1.0:
        assert taken == 1.0
    else:
        assert taken == pytest.approx((20 * 0.9 / 0.85 - 20) * 0.5 / 12.0)
        assert taken < expected_share


def test_stale_receiver_falls_back_to_declared_times_load() -> None:
    """us-east's figures are stale: it takes its declared 60 % of the least busy known load (20 req/s) = 12 req/s."""
    p = make_policy(**CAPACITY, regions={"us-east": {"capacity_headroom": "60%"}})
    ev = five_to_one()
    ev["us-east"] = good("us-east", capacity_source="stale", capacity_age_s=95.0)
    spare = planner.headroom(p, ev)
    assert spare["us-east"] == pytest.approx(12.0) and spare.basis["us-east"] == "declared"
    m = planner.plan(p, {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 1.0}, spare)
    assert m["eu-west"]["us-east"] == pytest.approx(0.6)


def test_stale_without_declared_headroom_is_never_unlimited() -> None:
    """A receiver that reads live capacity, has none fresh and declares nothing takes no new spill-over."""
    p = make_policy(**CAPACITY)
    ev = five_to_one()
    ev["us-east"] = good("us-east", capacity_source="stale")
    assert planner.headroom(p, ev)["us-east"] == 0.0
    nothing_live = {r: good(r, capacity_source="missing") for r in ("us-east", "eu-west", "ap-southeast")}
    units = planner.headroom(p, nothing_live)
    assert not units.by_volume and units["us-east"] == 0.0
    assert planner.headroom(make_policy(), {})["us-east"] is None  # no capacity settings at all: as before


def test_spill_already_carried_is_not_charged_twice() -> None:
    """Live headroom is measured with the spill on it: eu-west's half already on us-east stays there at 0 headroom."""
    p = make_policy(**CAPACITY)
    ev = five_to_one()
    ev["us-east"] = live("us-east", 110.0, 0.0)
    ev["eu-west"] = live("eu-west", 10.0, 10.0)  # it serves half of its users' 20 req/s
    previous = {
        "us-east": {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 0.0},
        "eu-west": {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.0},
        "ap-southeast": {"us-east": 0.0, "eu-west": 0.0, "ap-southeast": 1.0},
    }
    fr = {"us-east": 1.0, "eu-west": 0.0, "ap-southeast": 1.0}
    alloc = planner.allocate(p, fr, planner.headroom(p, ev), previous=previous, last_resort=False)
    assert alloc.moved["eu-west"] == {"us-east": 0.5}
    assert alloc.unplaced["eu-west"] == pytest.approx(0.5)


REGIONS = ("us-east", "eu-west", "ap-southeast")


@given(
    loads=st.tuples(*(st.floats(0.0, 500.0) for _ in REGIONS)),
    rooms=st.tuples(*(st.one_of(st.none(), st.floats(0.0, 500.0)) for _ in REGIONS)),
    fractions=st.tuples(*(st.sampled_from([0.0, 0.25, 0.5, 1.0]) for _ in REGIONS)),
    carried=st.floats(0.0, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_new_spill_never_exceeds_a_receivers_headroom(
    loads: tuple[float, ...], rooms: tuple[float | None, ...], fractions: tuple[float, ...], carried: float
) -> None:
    """By volume, the requests/s a receiver gets beyond what it already carried never exceed its spare; rows sum
    to 1 and a source never serves less than its serving fraction."""
    p = make_policy(**CAPACITY, regions={"ap-southeast": {"capacity_headroom": "20%"}})
    ev = {r: live(r, load, room) for r, load, room in zip(REGIONS, loads, rooms, strict=True)}
    spare = planner.headroom(p, ev)
    fr = dict(zip(REGIONS, fractions, strict=True))
    src0 = REGIONS[0]
    previous = {r: {d: float(d == r) for d in REGIONS} for r in REGIONS}
    previous[src0] = {src0: 1.0 - carried, REGIONS[1]: carried, REGIONS[2]: 0.0}
    m = planner.plan(p, fr, spare, previous=previous)
    charged: dict[str, float] = dict.fromkeys(REGIONS, 0.0)
    scale = 1.0  # shares are rounded to 1e-9 (planner.tidy): a charge is exact to 1e-9 × the source's demand
    for src in REGIONS:
        assert sum(m[src].values()) == pytest.approx(1.0)
        assert m[src][src] >= fr[src] - 1e-9
        demand = planner.demand_rps(spare.load or {}, previous, src)
        scale += demand
        for dst in REGIONS:
            if dst != src:
                charged[dst] += max(0.0, m[src][dst] - previous[src][dst]) * demand
    for dst in REGIONS:
        room = spare[dst]
        assert room is None or charged[dst] <= room + 1e-8 * max(scale, room)
