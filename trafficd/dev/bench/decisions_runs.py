"""The experiments of the decisions benchmark, each driving a whole `Fleet` through `judge.evaluate`.

The region under test is the policy's first (`A`); the second (`B`) plays the worse region of the max_drained
swap; every other region probes at the healthy rate unless the experiment says otherwise.
"""

from __future__ import annotations

from typing import Any

from trafficd.decide.judge import Phase
from trafficd.decide.planner import EPS
from trafficd.dev.bench.decisions_sim import STALL, Fleet, moved, restored, shed
from trafficd.policy.schema import Policy

HOUR_S = 3600.0
SPAN_H = 6.0


def _max_in_window(times: list[float], width: float) -> int:
    """The most events in any window of `width` (sliding, half-open: events exactly `width` apart are in two
    windows; the times are hours, so the comparison allows for their float rounding — 21,600 s apart read as
    5.999999999 h and counted as one window)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def stationary(policy: Policy, p: float, shape: str, hours: float, seed: int, everywhere: bool) -> dict[str, Any]:
    """A constant share `p` over the SLO for `hours` region-hours — in region A alone (the others healthy), or with
    `everywhere` in every region (each region's own series counted: 3 region-hours per hour; used where nothing
    trips, so the regions do not interact): shifts (the serving fraction leaving 1), completed drain–restore
    cycles, the share of time below full serving, the most shifts and cycles in any 6-hour span (sliding) of one
    region, and fixed 6-hour spans with more than one shift."""
    fleet = Fleet(policy, shape, seed)
    names = policy.region_names if everywhere else policy.region_names[:1]
    fleet.warm()
    start = fleet.now
    steps = round(hours / len(names) * HOUR_S / fleet.step_s)
    shifts: dict[str, list[float]] = {r: [] for r in names}
    cycles: dict[str, list[float]] = {r: [] for r in names}
    below = 0
    rates = dict.fromkeys(names, p)
    for _ in range(steps):
        before = fleet.fractions()
        fleet.step(rates)
        after = fleet.fractions()
        t = (fleet.now - start) / HOUR_S
        for r in shed(before, after):
            if r in shifts:
                shifts[r].append(t)
        for r in restored(before, after):
            if r in cycles:
                cycles[r].append(t)
        below += sum(1 for r in names if after[r] < 1.0 - EPS)
    spans = max(1, int(steps * fleet.step_s / HOUR_S // SPAN_H))
    per_span = [sum(1 for s in shifts[r] if k * SPAN_H <= s < (k + 1) * SPAN_H) for r in names for k in range(spans)]
    return {
        "hours": hours,
        "shifts": sum(len(v) for v in shifts.values()),
        "cycles": sum(len(v) for v in cycles.values()),
        "shed_share": below / (steps * len(names)),
        "spans_6h": spans * len(names),
        "spans_over_one_cycle": sum(1 for c in per_span if c > 1),
        "max_shifts_in_6h": max(_max_in_window(v, SPAN_H) for v in shifts.values()),
        "max_cycles_in_6h": max(_max_in_window(v, SPAN_H) for v in cycles.values()),
    }


def _onset_rates(policy: Policy, p: float, offset: float, step_s: float) -> float:
    """The share over the SLO of the interval the onset falls in (`offset` before its end)."""
    if p == STALL:
        return STALL
    return p * offset / step_s + policy.trip.healthy_rate * (1.0 - offset / step_s)


def _delay(fleet: Fleet, region: str, rates: dict[str, float], horizon_s: float) -> tuple[float | None, float]:
    """Run until `region`'s serving fraction first moves; the delay from the onset, which falls uniformly within
    the first interval (that interval has the onset's share only for its part after the onset), and how long its
    trip was held before (rule `global`: a global problem suspected, the peer hold)."""
    offset = fleet.probes[region].rng.random() * fleet.step_s
    first = dict(rates)
    if rates.get(region) not in (None, STALL):
        first[region] = _onset_rates(fleet.policy, rates[region], offset, fleet.step_s)
    held = 0.0
    for k in range(round(horizon_s / fleet.step_s)):
        before = fleet.fractions()[region]
        ev = fleet.step(first if k == 0 else rates)
        if abs(fleet.fractions()[region] - before) > EPS:
            return k * fleet.step_s + offset, held
        held += fleet.step_s if ev.decision(region).rule == "global" else 0.0
    return None, held


def detection(policy: Policy, p: float, shape: str, runs: int, seed: int) -> dict[str, Any]:
    """Region A at `p` from a healthy start (others healthy), per one-hour run: the delay to its first weight
    change, and how long the peer hold kept its trip waiting (the price of fail open over time)."""
    delays: list[float] = []
    held: list[float] = []
    for r in range(runs):
        fleet = Fleet(policy, shape, seed * 100_003 + r)
        fleet.warm()
        d, h = _delay(fleet, policy.region_names[0], {policy.region_names[0]: p}, HOUR_S)
        if d is not None:
            delays.append(d)
            held.append(h)
    return {"runs": runs, "delays": delays, "misses": runs - len(delays), "held": held}


def fail_open(policy: Policy, p: float, shape: str, runs: int, seed: int) -> dict[str, Any]:
    """Every region at `p` at once (a global or probe problem) for one hour: how often any weight moved, and the
    share of evaluations in a global episode."""
    runs_moved = 0
    region_shifts = 0
    episode = 0
    steps = round(HOUR_S / policy.windows.evaluate_every)
    everywhere = dict.fromkeys(policy.region_names, p)
    for r in range(runs):
        fleet = Fleet(policy, shape, seed * 100_003 + r)
        fleet.warm()
        any_move = False
        for _ in range(steps):
            before = fleet.fractions()
            ev = fleet.step(everywhere)
            after = fleet.fractions()
            any_move = any_move or moved(before, after)
            region_shifts += len(shed(before, after))
            episode += ev.fail_open
        runs_moved += any_move
    return {
        "runs": runs,
        "region_hours": runs * len(policy.region_names),
        "runs_moved": runs_moved,
        "region_shifts": region_shifts,
        "episode_share": episode / (runs * steps),
    }


def _drain(fleet: Fleet, region: str, p: float, limit_s: float) -> bool:
    """Run with `region` at `p` until it is drained to the floor (True) or `limit_s` passed."""
    floor = fleet.policy.ramp.min_fraction
    for _ in range(round(limit_s / fleet.step_s)):
        fleet.step({region: p})
        st = fleet.state.regions[region]
        if st.serving_fraction <= floor + EPS and st.phase == Phase.DOWN:
            return True
    return False


def swap(policy: Policy, shape: str, runs: int, seed: int) -> dict[str, Any]:
    """Region A drained by a real but weaker breach (breach rate, still on); then B stalls hard. The delay from the
    stall's onset to B's first weight change (A must first ramp back to free the only max_drained slot), and
    whether more than `max_drained` regions ever shed at once."""
    a, b = policy.region_names[0], policy.region_names[1]
    delays: list[float] = []
    over_limit = 0
    skipped = 0
    for r in range(runs):
        fleet = Fleet(policy, shape, seed * 100_003 + r)
        fleet.warm()
        if not _drain(fleet, a, policy.trip.breach_rate, HOUR_S):
            skipped += 1
            continue
        rates = {a: policy.trip.breach_rate, b: STALL}
        offset = fleet.probes[b].rng.random() * fleet.step_s
        hit = None
        for k in range(round(HOUR_S / fleet.step_s)):
            before = fleet.fractions()[b]
            fleet.step(rates)
            fr = fleet.fractions()
            over_limit += sum(1 for f in fr.values() if f < 1.0 - EPS) > policy.guards.max_drained
            if abs(fr[b] - before) > EPS:
                hit = k * fleet.step_s + offset
                break
        if hit is not None:
            delays.append(hit)
    return {"runs": runs - skipped, "delays": delays, "misses": runs - skipped - len(delays), "over_limit": over_limit}


def after_episode(policy: Policy, shape: str, runs: int, seed: int, stays: bool) -> dict[str, Any]:
    """Every region at 3 % over for 20 minutes (a global episode), then back to the healthy rate — or, with
    `stays`, A stays at the breach rate. Measured from the end of the episode: shifts in the next hour (none
    expected when all are healthy), and with `stays` the delay to A's first shift (fresh evidence of its own)."""
    names = policy.region_names
    a = names[0]
    episodes = shifts = during = 0
    delays: list[float] = []
    for r in range(runs):
        fleet = Fleet(policy, shape, seed * 100_003 + r)
        fleet.warm()
        seen = False
        for _ in range(round(1200.0 / fleet.step_s)):
            before = fleet.fractions()
            seen = fleet.step(dict.fromkeys(names, 0.03)).fail_open or seen
            during += len(shed(before, fleet.fractions()))
        if not seen:
            continue
        episodes += 1
        rates = {a: policy.trip.breach_rate} if stays else {}
        end = fleet.now
        before = fleet.fractions()
        while fleet.step(rates).fail_open:  # the episode ends one trip window after the last leaning region
            end = fleet.now
            before = fleet.fractions()
        for i in range(round(HOUR_S / fleet.step_s)):
            if i:  # the evaluation that ended the episode is the first one after it
                before = fleet.fractions()
                fleet.step(rates)
            started = shed(before, fleet.fractions())
            shifts += len(started)
            if stays and a in started:
                delays.append(fleet.now - end)
                break
    return {"runs": runs, "episodes": episodes, "shifts_during": during, "shifts_after": shifts, "delays": delays}
