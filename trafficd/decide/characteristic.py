"""The operating characteristic of the trip rule (pure): thresholds derived from the policy, and what they give.

The judge runs, per region and signal, a one-sided CUSUM (Page) of the Bernoulli log-likelihood ratio of
"a probe is over the SLO with the breach rate p1" against "… with the healthy rate p0":

    over the SLO:  a = ln(p1 / p0) > 0          within it:  b = ln((1 - p1) / (1 - p0)) < 0

Between two trips under p0 the statistic is a reflected random walk that steps +a with probability p and −|b|
otherwise; a trip is its first passage over the threshold h. Because every down step has the same size, the walk
on the lattice of |b| (up steps of k = ⌈a / |b|⌉ lattice units, rounded up: more false alarms, the safe side) is
skip-free downwards, and its average run length (ARL) from 0 solves a linear recurrence in O(h / |b|) — exactly,
without simulation or the Siegmund approximation:

    L(i) = 1 + p·L(i + k) + q·L(i − 1),   L(j ≥ H) = 0,   L(−1) = L(0)   (the reflection at 0)

`threshold(p0, p1, n)` is the smallest h whose ARL at p0 is at least n probes (bisection on that recurrence). The
judge applies the statistic once per slice (the sum of the slice's increments, then the reflection), which only
lowers it compared with one update per probe: the false-alarm rate computed here is an upper bound, the delays a
slight underestimate; `trafficd bench decisions` measures both through the real judge.

Wald's limit for the delay at the breach rate is h / KL(p1 ‖ p0) probes; CUSUM adds the overshoot over h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from trafficd.policy.schema import Policy

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Llr:
    """Per-probe log-likelihood ratio increments of one signal (breach rate p1 against healthy rate p0)."""

    p0: float
    p1: float

    @property
    def over(self) -> float:
        return math.log(self.p1 / self.p0)

    @property
    def within(self) -> float:
        return math.log((1.0 - self.p1) / (1.0 - self.p0))

    def slice(self, n: int, over: int) -> float:
        """The increment of a slice with `over` of `n` probes over the SLO."""
        return over * self.over + (n - over) * self.within

    def kl_breach(self) -> float:
        """KL(p1 ‖ p0) per probe: the mean increment at the breach rate (Wald's delay = h / this)."""
        return self.p1 * self.over + (1.0 - self.p1) * self.within

    def kl_healthy(self) -> float:
        """KL(p0 ‖ p1) per probe: how fast evidence of health accumulates at the healthy rate."""
        return -(self.p0 * self.over + (1.0 - self.p0) * self.within)


def _arl_up(llr: Llr, h: float, p: float) -> float:
    """ARL when the up step is the smaller one (high rates): the lattice of the up step, down steps rounded down
    (the safe side), the walk skip-free upwards: L(i + 1) = (L(i) − 1 − q·L(max(0, i − k))) / p from L(0) = x."""
    unit = llr.over
    k = max(1, math.floor(-llr.within / unit + 1e-9))
    top = max(1, math.ceil(h / unit - 1e-9))
    q = 1.0 - p
    c = [1.0]  # L(i) = c[i]·x + d[i]
    d = [0.0]
    for i in range(top):
        j = max(0, i - k)
        c.append((c[i] - q * c[j]) / p)
        d.append((d[i] - 1.0 - q * d[j]) / p)
        if abs(c[-1]) > 1e250:
            return math.inf
    if c[top] == 0.0:
        return math.inf
    x = -d[top] / c[top]  # L(top) = 0
    return x if x > 0 and math.isfinite(x) else math.inf


def arl(llr: Llr, h: float, p: float) -> float:
    """Average number of probes until the CUSUM from 0 passes h when each probe is over with probability p."""
    if h <= 0:
        return 1.0
    if 0.0 < p < 1.0 and llr.over < -llr.within:
        return _arl_up(llr, h, p)
    unit = -llr.within
    k = max(1, math.ceil(llr.over / unit - 1e-9))
    top = max(1, math.ceil(h / unit - 1e-9))
    if p <= 0.0:
        return math.inf
    if p >= 1.0:
        return float(math.ceil(top / k))
    q = 1.0 - p
    # L(i) = c[i]·y + d[i] with y = L(top − 1); walk down from the top with L(i−1) = (L(i) − 1 − p·L(i+k)) / q.
    c = [0.0] * (top + k + 1)
    d = [0.0] * (top + k + 1)
    c[top - 1] = 1.0
    for i in range(top - 1, 0, -1):
        c[i - 1] = (c[i] - p * c[i + k]) / q
        d[i - 1] = (d[i] - 1.0 - p * d[i + k]) / q
        if abs(c[i - 1]) > 1e250:  # astronomically long run lengths: the budget is met many times over
            return math.inf
    # Bottom: L(0) = 1 + p·L(k) + q·L(0)  →  p·L(0) − p·L(k) = 1
    cc = p * (c[0] - c[k])
    dd = 1.0 - p * (d[0] - d[k])
    if cc == 0.0:
        return math.inf
    y = dd / cc
    value = c[0] * y + d[0]
    return value if value > 0 and math.isfinite(value) else math.inf


@lru_cache(maxsize=256)
def threshold(p0: float, p1: float, probes: float) -> float:
    """The smallest h (to 0.01) whose false-alarm ARL at p0 is at least `probes`."""
    llr = Llr(p0, p1)
    lo, hi = 0.0, 1.0
    while arl(llr, hi, p0) < probes:
        hi *= 2.0
        if hi > 1e4:
            return hi
    while hi - lo > 0.01:
        mid = (lo + hi) / 2.0
        if arl(llr, mid, p0) < probes:
            lo = mid
        else:
            hi = mid
    return math.ceil(hi * 100.0 - 1e-9) / 100.0  # rounded up: the budget stays met


# ---------------------------------------------------------------- what the policy means per region


@dataclass(frozen=True, slots=True)
class Signal:
    name: str  # latency, errors, ttft
    llr: Llr


def signals(policy: Policy) -> tuple[Signal, ...]:
    """The signals judged: total latency over the SLO, errors, and TTFT over its SLO when one is set."""
    t = policy.trip
    budget = 1.0 - policy.slo.quantile
    lat = Llr(t.healthy_rate, t.breach_rate)
    scale = policy.slo.error_rate / budget  # the error SLO's budget relative to the latency one
    err = Llr(min(0.5, t.healthy_rate * scale), min(0.99, t.breach_rate * scale))
    out = [Signal("latency", lat), Signal("errors", err)]
    if policy.slo.ttft_p99 is not None:
        out.append(Signal("ttft", lat))
    return tuple(out)


def series_count(policy: Policy, region: str) -> int:
    """Workers × models probed in the region (a discovered fleet counts as one series per model: a lower bound)."""
    workers = max(1, len(policy.regions[region].workers))
    return workers * len(policy.models_for(region))


def probe_rate(policy: Policy, region: str) -> float:
    """Probes per second the region's agents produce (every series probed every `probe.interval`)."""
    return series_count(policy, region) / policy.probe.interval


def budget_probes(policy: Policy, region: str) -> float:
    """Probes between false trips of ONE signal so the region meets its budget (the budget is split over signals)."""
    per_trip_s = policy.trip.false_trip_days * DAY_S / policy.trip.false_trips
    return per_trip_s * probe_rate(policy, region) * len(signals(policy))


def region_threshold(policy: Policy, region: str) -> float:
    """h for this region: derived from the false-alarm budget, the healthy and breach rates and the probe rate."""
    sig = signals(policy)[0]
    return threshold(sig.llr.p0, sig.llr.p1, budget_probes(policy, region))


def signal_threshold(policy: Policy, region: str, sig: Signal) -> float:
    return threshold(sig.llr.p0, sig.llr.p1, budget_probes(policy, region))


@dataclass(frozen=True, slots=True)
class Judging:
    """Everything the judge needs per signal of one region, computed once per policy (the judge's hot path)."""

    names: tuple[str, ...]
    over: tuple[float, ...]  # LLR of a probe over the SLO
    within: tuple[float, ...]  # LLR of a probe within it
    h: tuple[float, ...]


_JUDGING: dict[int, tuple[Policy, dict[str, Judging]]] = {}


def judging(policy: Policy, region: str) -> Judging:
    """The per-signal increments and thresholds of `region` (cached per policy object)."""
    hit = _JUDGING.get(id(policy))
    if hit is None or hit[0] is not policy:
        if len(_JUDGING) > 32:
            _JUDGING.clear()
        hit = (policy, {})
        _JUDGING[id(policy)] = hit
    per_region = hit[1]
    j = per_region.get(region)
    if j is None:
        sigs = signals(policy)
        j = Judging(
            names=tuple(s.name for s in sigs),
            over=tuple(s.llr.over for s in sigs),
            within=tuple(s.llr.within for s in sigs),
            h=tuple(signal_threshold(policy, region, s) for s in sigs),
        )
        per_region[region] = j
    return j


@dataclass(frozen=True, slots=True)
class RegionCharacteristic:
    """What the policy promises for one region (computed, per signal the worst of them)."""

    region: str
    probes_per_s: float
    threshold: float
    detection_delay_s: float  # expected, at the breach rate, from a healthy start
    wald_delay_s: float  # h / KL(p1 ‖ p0): the sequential-test limit
    stall_delay_s: float  # onset → trip: a hung probe counts at its SLO threshold (errors: at its deadline)
    false_trips_per_period: float  # expected at the healthy rate, every signal together
    recovery_delay_s: float  # expected, at the healthy rate, from the trip (before hold-down and ramp)
    budget_met: bool


def _known_after_s(policy: Policy, signal: str) -> float:
    """How long after its start a hung probe counts for a signal: the agent reports it over an SLO threshold when
    it passes it (an early record), its error at its deadline."""
    deadline = max(policy.probe.deadlines.total, policy.probe.deadlines.first_token)
    if signal == "latency":
        return min(deadline, policy.slo.total_p99)
    if signal == "ttft" and policy.slo.ttft_p99 is not None:
        return min(deadline, policy.slo.ttft_p99)
    return deadline


def characteristic(policy: Policy, region: str) -> RegionCharacteristic:
    rate = probe_rate(policy, region)
    period = policy.trip.false_trip_days * DAY_S
    sigs = signals(policy)
    lat = sigs[0].llr
    h = signal_threshold(policy, region, sigs[0])
    false_trips = 0.0
    for s in sigs:
        hs = signal_threshold(policy, region, s)
        false_trips += period * rate / arl(s.llr, hs, s.llr.p0)
    stall_s = min(_known_after_s(policy, s.name) + math.ceil(signal_threshold(policy, region, s) / s.llr.over) / rate
                  for s in sigs) + policy.windows.evaluate_every  # fmt: skip
    return RegionCharacteristic(
        region=region,
        probes_per_s=rate,
        threshold=h,
        detection_delay_s=arl(lat, h, lat.p1) / rate + policy.windows.evaluate_every / 2,
        wald_delay_s=h / lat.kl_breach() / rate,
        stall_delay_s=stall_s,
        false_trips_per_period=false_trips,
        recovery_delay_s=h / lat.kl_healthy() / rate,
        budget_met=false_trips <= policy.trip.false_trips * 1.0001,
    )


# ---------------------------------------------------------------- what `trafficd policy check` prints


MAX_DELAY_S = 900.0  # a breach-rate delay beyond this (15 min) is reported as not meeting the targets


def _duration(s: float) -> str:
    if s == math.inf:
        return "never"
    if s >= 2 * DAY_S:
        return f"{s / DAY_S:.0f} d"
    if s >= 7200:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


def report(policy: Policy) -> list[str]:
    """Per region: expected delay at the breach rate and for a hard stall, false trips per period at the healthy
    rate, computed from the derived thresholds and the region's probe rate and series."""
    t = policy.trip
    out = []
    for r in policy.region_names:
        c = characteristic(policy, r)
        series = series_count(policy, r)
        guess = " (discovered fleet: counted as 1 worker)" if policy.regions[r].discovery is not None else ""
        out.append(
            f"region {r}: {c.probes_per_s:g} probes/s ({series} series{guess}), evidence threshold {c.threshold:g}; "
            f"at {t.breach_rate:.2%} over: drained after ~{_duration(c.detection_delay_s)} "
            f"(sequential-test limit {_duration(c.wald_delay_s)}); hard stall: ≤ {_duration(c.stall_delay_s)}; "
            f"at {t.healthy_rate:.2%} over: {c.false_trips_per_period:.2g} false trips per "
            f"{_duration(t.false_trip_days * DAY_S)} (budget {t.false_trips:g}); recovery evidence after "
            f"~{_duration(c.recovery_delay_s)} at the healthy rate"
        )
    return out


def warnings(policy: Policy) -> list[tuple[tuple[str, ...], str]]:
    """Where the policy cannot keep its promise: the budget not met, or met only by a slow detection."""
    out: list[tuple[tuple[str, ...], str]] = []
    t = policy.trip
    for r in policy.region_names:
        c = characteristic(policy, r)
        if not c.budget_met:
            out.append(
                (
                    ("trip", "false_trips"),
                    f"region {r}: {c.false_trips_per_period:.2g} false trips per "
                    f"{_duration(t.false_trip_days * DAY_S)} expected, over the budget of {t.false_trips:g}: "
                    "widen the gap between healthy_rate and breach_rate or loosen the budget",
                )
            )
        if c.detection_delay_s > MAX_DELAY_S:
            out.append(
                (
                    ("probe", "interval"),
                    f"region {r}: the false-trip budget is met only with a {_duration(c.detection_delay_s)} delay at "
                    f"{t.breach_rate:.2%} over (> {_duration(MAX_DELAY_S)}): probe more often, add series, or loosen "
                    "the budget",
                )
            )
    return out
