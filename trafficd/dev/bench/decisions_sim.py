"""The fleet the decisions benchmark drives: every region's probes as per-slice counts, judged by `judge.evaluate`.

`Fleet` keeps, per region of the policy, a probe generator at the region's probe rate and the slices of the last
trip window, and calls the controller's own `judge.evaluate(policy, state, evidence, overrides, now)` once per
`windows.evaluate_every` — the same code the controller runs: every slice consumed once into the per-signal
evidence, the phase machine, all guards in order (fail open, cooldown, max_drained with its swap,
min_serving_regions, capacity, never_all_zero) and the planner. What is simplified: the probes of one evaluation
interval complete into one slice (the store's slices are `windows.slice` long; the default policy's slice equals
its evaluation interval); the evidence carries the trip window's counts (they rank regions for max_drained) but
only its two newest slices, where the store gives the whole long window — the judge consumes only the slices its
cursor has not seen, so the statistics are the same, at a fraction of the cost; counts are drawn per probe with
the share `p` over the SLO; agents are alive.

Latency shapes: *one-peaked* — probes over the SLO are slow successes; *two-peaked* (stall type) — they are
probes that hit the total deadline: they count as errors too. A *hard stall* (`STALL`) fails every probe started
after the onset. As the agent reports them (docs/stats.md "Early records"), a probe over the SLO is counted — n
and over — when it passes the SLO threshold, in the interval holding its start + the threshold, and a failing
one adds its error when it hits `deadlines.total` (start + deadline); probes within the SLO are counted in the
interval they started in (they complete within it). Start times are uniform within an interval.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from trafficd.decide import characteristic as ch
from trafficd.decide.judge import ControllerState, Evaluation, evaluate
from trafficd.decide.planner import EPS
from trafficd.model import Overrides, RegionEvidence, SliceCounts
from trafficd.policy.schema import Policy

STALL = -1.0  # marker rate: every probe fails at its deadline


@dataclass
class Probes:
    """One region's probes: how many are counted in each evaluation interval, and how many of them over/errors.

    A probe over the SLO is counted (n, over) when it passes the SLO threshold — the agent's early record — in
    the interval that holds its start plus the threshold; one that fails (two-peaked, hard stall) adds its error
    when it hits the total deadline. Start times are uniform within the interval."""

    rng: random.Random
    shape: str
    per_step: float  # probes started per evaluation interval
    step_s: float
    cross_s: float  # the SLO threshold: when a running probe is counted over it
    deadline_s: float  # deadlines.total: when a stalled probe's error is known
    carry: float = 0.0
    due: dict[int, list[int]] = field(default_factory=dict)  # interval → [n, over, errors] counted then

    def _started(self) -> int:
        x = self.per_step + self.carry
        n = int(x)
        self.carry = x - n
        return n

    def _count(self, k: int, n: int, over: int, errors: int) -> None:
        row = self.due.get(k)
        if row is None:
            self.due[k] = [n, over, errors]
        else:
            row[0] += n
            row[1] += over
            row[2] += errors

    def step(self, k: int, p: float) -> tuple[int, int, int]:
        """(n, over the SLO, errors) counted in interval `k` when a share `p` is over (STALL: all fail)."""
        started = self._started()
        rnd = self.rng.random
        slow = started if p == STALL else sum(1 for _ in range(started) if rnd() < p)
        failing = p == STALL or self.shape == "two-peaked"
        self._count(k, started - slow, 0, 0)
        step = self.step_s
        for _ in range(slow):
            u = rnd() * step
            self._count(k + int((u + self.cross_s) // step), 1, 1, 0)
            if failing:
                self._count(k + int((u + self.deadline_s) // step), 0, 0, 1)
        n, over, errors = self.due.pop(k)
        return n, over, errors


@dataclass
class Fleet:
    """Every region of the policy, judged together by `evaluate` as the controller does."""

    policy: Policy
    shape: str
    seed: int
    state: ControllerState = field(init=False)
    probes: dict[str, Probes] = field(init=False)
    window: dict[str, deque[SliceCounts]] = field(init=False)  # the trip window's slices
    sums: dict[str, list[int]] = field(init=False)  # their n, over, errors
    overrides: Overrides = field(default_factory=Overrides)
    k: int = 0  # evaluations so far; now = k × evaluate_every

    def __post_init__(self) -> None:
        pol = self.policy
        step_s = pol.windows.evaluate_every
        names = pol.region_names
        self.state = ControllerState.initial(pol, 0.0)
        keep = max(1, round(pol.windows.trip / step_s))
        cross_s, deadline_s = pol.slo_threshold_ms / 1000.0, pol.probe.deadlines.total
        self.probes = {
            r: Probes(
                random.Random(self.seed * 7919 + i),
                self.shape,
                ch.probe_rate(pol, r) * step_s,
                step_s,
                cross_s,
                deadline_s,
            )
            for i, r in enumerate(names)
        }
        self.window = {r: deque(maxlen=keep) for r in names}
        self.sums = {r: [0, 0, 0] for r in names}

    @property
    def step_s(self) -> float:
        return self.policy.windows.evaluate_every

    @property
    def now(self) -> float:
        return self.k * self.step_s

    def fractions(self) -> dict[str, float]:
        return {r: s.serving_fraction for r, s in self.state.regions.items()}

    def _evidence(self, region: str, p: float) -> RegionEvidence:
        n, over, err = self.probes[region].step(self.k, p)
        win = self.window[region]
        sums = self.sums[region]
        if len(win) == win.maxlen:
            old = win[0]
            sums[0] -= old.n
            sums[1] -= old.over
            sums[2] -= old.errors
        win.append(SliceCounts(self.k, n, over, err, 0))
        sums[0] += n
        sums[1] += over
        sums[2] += err
        return RegionEvidence(
            region,
            n=sums[0],
            errors=sums[2],
            over_slo_fraction=sums[1] / sums[0] if sums[0] else 0.0,
            slices=(win[-2], win[-1]) if len(win) > 1 else (win[-1],),
        )

    def step(self, rates: dict[str, float]) -> Evaluation:
        """One evaluation: each region's new slice at its share over the SLO (default: the healthy rate)."""
        self.k += 1
        healthy = self.policy.trip.healthy_rate
        evidence = {r: self._evidence(r, rates.get(r, healthy)) for r in self.policy.region_names}
        ev = evaluate(self.policy, self.state, evidence, self.overrides, self.now)
        self.state = ev.state
        return ev

    def warm(self, seconds: float = 600.0) -> None:
        """Healthy probes first, so that the statistics start where they usually are."""
        for _ in range(round(seconds / self.step_s)):
            self.step({})


def shed(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Regions that started shedding (serving fraction left 1)."""
    return [r for r, f in after.items() if f < 1.0 - EPS and before.get(r, 1.0) >= 1.0 - EPS]


def restored(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Regions back at full serving (a drain–restore cycle completed)."""
    return [r for r, f in after.items() if f >= 1.0 - EPS and before.get(r, 1.0) < 1.0 - EPS]


def moved(before: dict[str, float], after: dict[str, float]) -> bool:
    return any(abs(after[r] - before.get(r, 1.0)) > EPS for r in after)
