"""Probe-level replay (pure): samples → slices → the controller's window code → `RegionEvidence`, as Redis would.

`SampleReplay` plays the part of the agents' writer and of the controller's view at once, with the same code:
each probe becomes the records the agent writes (`records.records_of`: an early record at each SLO threshold it
runs past, then its final record), each filed in the slice of the moment it is written (like `stats.sink`), its
counts are `Sketch.from_samples` (the increments the agent writes), and every evaluation runs
`RegionWindow.plan` / `commit` on the slice index exactly as `StatsView` does with what it reads from Redis, then
`region_evidence`. Agents are assumed alive (heartbeats fresh): a region goes stale only when its newest record is
older than `stale_after`.
Records are delivered when they are written (no flush delay).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from trafficd.model import RegionEvidence, Sample
from trafficd.policy.schema import Policy
from trafficd.stats.records import records_of, stamp
from trafficd.stats.sketch import Sketch
from trafficd.stats.window import RegionWindow, WindowSpec, region_evidence, slice_of


@dataclass
class _Region:
    win: RegionWindow
    index: dict[int, int] = field(default_factory=dict)  # slice id → samples written (the store's index)
    pending: dict[int, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    slices: dict[int, Sketch] = field(default_factory=dict)  # what Redis would hold (region totals)
    newest: float | None = None


class SampleReplay:
    """Feed samples in completion order with `add`, ask for evidence with `evidence(now)`."""

    def __init__(self, policy: Policy) -> None:
        w = policy.windows
        self.policy = policy
        self.spec = WindowSpec(slice_s=w.slice, trip_s=w.trip, long_s=w.long, skew_s=w.max_clock_skew)
        self.regions = {r: _Region(RegionWindow(r, self.spec)) for r in policy.region_names}

    def add(self, sample: Sample) -> None:
        """One record (`records.records_of`), filed in the slice of its stamp."""
        reg = self.regions[sample.region]
        done = stamp(sample)
        reg.pending[slice_of(done, self.spec.slice_s)].append(sample)
        reg.newest = done if reg.newest is None else max(reg.newest, done)

    def _write(self, reg: _Region) -> None:
        """What the agent's flush does: add the pending samples' counts to their slices and the index."""
        total_ms, ttft_ms = self.policy.slo_threshold_ms, self.policy.ttft_threshold_ms
        for sid, samples in reg.pending.items():
            sk = Sketch.from_samples(samples, total_ms, ttft_ms)
            reg.slices[sid] = reg.slices[sid] + sk if sid in reg.slices else sk
            reg.index[sid] = reg.index.get(sid, 0) + len(samples)
        reg.pending.clear()

    def evidence(self, now: float) -> dict[str, RegionEvidence]:
        """Every region's evidence at `now`, read through the controller's window code."""
        out: dict[str, RegionEvidence] = {}
        keep = self.spec.keep_ids(now)
        for name, reg in self.regions.items():
            self._write(reg)
            plan = reg.win.plan({s: c for s, c in reg.index.items() if s >= keep.start - 1}, now)
            reg.win.commit(plan, {sid: reg.slices[sid] for sid in plan.fetch}, now)
            for sid in [s for s in reg.slices if s < keep.start - 1]:
                del reg.slices[sid]
                reg.index.pop(sid, None)
            age = None if reg.newest is None else max(0.0, now - reg.newest)
            out[name] = region_evidence(self.policy, reg.win, now, age, 0.0 if age is not None else None)
        return out


def evaluation_times(policy: Policy, first_t: float, last_t: float) -> Iterator[float]:
    """Evaluations every `windows.evaluate_every` from the first sample until the last has completed."""
    step = policy.windows.evaluate_every
    k = 1
    while first_t + k * step <= last_t + step:
        yield first_t + k * step
        k += 1


def replay_samples(policy: Policy, samples: Sequence[Sample]) -> Iterator[tuple[float, dict[str, RegionEvidence]]]:
    """Evidence at every evaluation for finished probes (any order): each becomes its records, written in time."""
    if not samples:
        return
    rp = SampleReplay(policy)
    total_ms, ttft_ms = policy.slo_threshold_ms, policy.ttft_threshold_ms
    ordered = sorted((r for s in samples for r in records_of(s, total_ms, ttft_ms)), key=stamp)
    it: Iterator[Sample] = iter(ordered)
    nxt = next(it, None)
    first = min(s.t for s in samples)
    last = stamp(ordered[-1])
    for now in evaluation_times(policy, first, last):
        while nxt is not None and stamp(nxt) <= now:
            rp.add(nxt)
            nxt = next(it, None)
        yield now, rp.evidence(now)
