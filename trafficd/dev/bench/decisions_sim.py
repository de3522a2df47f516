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
probes that hit the total deadline: they count as errors too and complete `deadlines.total` after they started.
A *hard stall* (`STALL`) fails every probe started after the onset (each completes at its deadline).
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
    """One region's probes: how many complete in each evaluation interval, and how many of them are over/errors."""

    rng: random.Random
    shape: str
    per_step: float  # probes started per evaluation interval
    late_steps: int  # a probe hitting the deadline completes this many intervals after it started
    carry: float = 0.0
    late: dict[int, int] = field(default_factory=dict)  # interval → failures completing then

    def _started(self) -> int:
        x = self.per_step + self.carry
        n = int(x)
        self.carry = x - n
        return n

    def step(self, k: int, p: float) -> tuple[int, int, int]:
        """(probes, over the SLO, errors) completing in interval `k` when a share `p` is over (STALL: all fail)."""
        started = self._started()
        if p == STALL:
            failing, over = started, 0
        else:
            rnd = self.rng.random
            over = sum(1 for _ in range(started) if rnd() < p)
            failing = 0
            if self.shape == "two-peaked":
                failing, over = over, 0
        if failing:
            due = k + self.late_steps
            self.late[due] = self.late.get(due, 0) + failing
        done = self.late.pop(k, 0)  # failures completing now: over the SLO and errors
        return started - failing + done, over + done, done


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
        late = max(1, round(pol.probe.deadlines.total / step_s))
        keep = max(1, round(pol.windows.trip / step_s))
        self.probes = {
            r: Probes(random.Random(self.seed * 7919 + i), self.shape, ch.probe_rate(pol, r) * step_s, late)
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
