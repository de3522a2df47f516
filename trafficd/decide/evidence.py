"""Accumulating evidence (pure): consume each slice once, update per-signal CUSUM statistics, read a verdict.

Per region and signal (latency over the SLO, errors, TTFT over its SLO) two statistics are kept in the region's
state, both sums of the Bernoulli log-likelihood ratio of the breach rate against the healthy rate
(characteristic.py), reflected at 0 and capped at twice the threshold so that they forget within a bounded time:

    trip_llr    = min(2h, max(0, trip_llr + llr(slice)))      evidence that the rate is at the breach rate
    recover_llr = min(2h, max(0, recover_llr - llr(slice)))   evidence that the rate is back at the healthy rate

A region breaches when any signal's trip_llr reaches its h, and has recovered when every signal's recover_llr
has. Each slice is consumed once: the cursor remembers the newest slice seen and how many of its probes were
already counted, so a slice still filling up is counted in parts and overlapping windows count nothing twice.
A probe that ran past an SLO threshold is counted in n when it passed it and its error when it ended, possibly in
a later slice (docs/stats.md "Early records"): a part's counts may exceed its n, and the sum stays exact because
each part adds k·over + (n − k)·within, linear in the counts.
Unknown evidence (stale, unreadable) consumes nothing and keeps both statistics: the slices it skipped are
consumed when evidence is fresh again (as long as they are still in the long window).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from trafficd.decide.characteristic import judging
from trafficd.decide.state import RegionState
from trafficd.model import RegionEvidence, SliceCounts
from trafficd.policy.schema import Policy

LEAN_SHARE = 0.5  # a region leans towards a breach (fail open counts it) once trip_llr reaches this share of h


@dataclass(frozen=True, slots=True)
class Counts:
    n: int = 0
    over: int = 0
    errors: int = 0
    ttft_over: int = 0

    def of(self, signal: str) -> int:
        return {"latency": self.over, "errors": self.errors, "ttft": self.ttft_over}[signal]


@dataclass(frozen=True, slots=True)
class Update:
    """What one evaluation's evidence did to a region's statistics."""

    state: RegionState
    consumed: Counts  # the probes counted now (summed over the new slices)
    slices: int  # how many slice parts were consumed
    breaching: tuple[str, ...]  # signals whose trip_llr reached h
    recovered: bool  # every signal's recover_llr reached h
    leaning: bool  # some signal's trip_llr reached LEAN_SHARE × h


def _delta(cursor: int | None, done: tuple[int, int, int, int], s: SliceCounts) -> Counts | None:
    if cursor is not None and s.slice_id < cursor:
        return None  # consumed already (or arrived too late to count)
    if cursor is not None and s.slice_id == cursor:
        return Counts(
            max(0, s.n - done[0]), max(0, s.over - done[1]), max(0, s.errors - done[2]), max(0, s.ttft_over - done[3])
        )
    return Counts(s.n, s.over, s.errors, s.ttft_over)


def new_parts(state: RegionState, slices: Iterable[SliceCounts]) -> tuple[list[Counts], int | None, tuple[int, ...]]:
    """The counts not consumed yet, slice by slice, and the cursor after consuming them."""
    cursor, done = state.cursor, state.cursor_counts
    parts: list[Counts] = []
    newest: SliceCounts | None = None
    for s in sorted(slices, key=lambda s: s.slice_id):
        d = _delta(state.cursor, done, s)
        if d is None:
            continue
        if d.n or d.over or d.errors or d.ttft_over:  # a part may hold only counts of probes counted in n earlier
            parts.append(d)
        newest = s
    if newest is None:
        return parts, cursor, done
    return parts, newest.slice_id, (newest.n, newest.over, newest.errors, newest.ttft_over)


def thresholds(policy: Policy, region: str) -> dict[str, float]:
    j = judging(policy, region)
    return dict(zip(j.names, j.h, strict=True))


_COLUMN = {"latency": 1, "errors": 2, "ttft": 3}  # where a signal's count is in (n, over, errors, ttft_over)


def update(policy: Policy, region: str, prev: RegionState, ev: RegionEvidence) -> Update:
    """Consume the new slices of `ev` into the region's statistics (the judge's hot path: plain arithmetic)."""
    parts, cursor, done = new_parts(prev, ev.slices)
    j = judging(policy, region)
    cols = [_COLUMN[name] for name in j.names]
    trip = [prev.trip_llr.get(name, 0.0) for name in j.names]
    rec = [prev.recover_llr.get(name, 0.0) for name in j.names]
    total = [0, 0, 0, 0]
    for part in parts:
        row = (part.n, part.over, part.errors, part.ttft_over)
        for c in range(4):
            total[c] += row[c]
        for i, col in enumerate(cols):
            # Linear in the counts, so a probe counted in n in one part and over its threshold in a later one
            # (an error known at its deadline) adds exactly its one term: within first, then over − within.
            k = row[col]
            inc = k * j.over[i] + (row[0] - k) * j.within[i]
            cap = 2.0 * j.h[i]
            trip[i] = min(cap, max(0.0, trip[i] + inc))
            rec[i] = min(cap, max(0.0, rec[i] - inc))
    state = replace(
        prev,
        trip_llr={name: round(v, 6) for name, v in zip(j.names, trip, strict=True)},
        recover_llr={name: round(v, 6) for name, v in zip(j.names, rec, strict=True)},
        cursor=cursor,
        cursor_counts=(done[0], done[1], done[2], done[3]) if len(done) == 4 else prev.cursor_counts,
    )
    hs = j.h
    return Update(
        state=state,
        consumed=Counts(total[0], total[1], total[2], total[3]),
        slices=len(parts),
        breaching=tuple(name for i, name in enumerate(j.names) if trip[i] >= hs[i]),
        recovered=all(rec[i] >= hs[i] for i in range(len(hs))),
        leaning=any(trip[i] >= LEAN_SHARE * hs[i] for i in range(len(hs))),
    )


def describe(policy: Policy, region: str, state: RegionState) -> dict[str, dict[str, float]]:
    """The statistics against their thresholds, for logs: {signal: {trip, recover, threshold}}."""
    hs = thresholds(policy, region)
    return {
        k: {
            "trip": round(state.trip_llr.get(k, 0.0), 3),
            "recover": round(state.recover_llr.get(k, 0.0), 3),
            "threshold": h,
        }
        for k, h in hs.items()
    }


def window_as_slice(ev: RegionEvidence, slice_id: int, share: float) -> RegionEvidence:
    """Window statistics (no slices) as one new slice holding `share` of the window's probes, in the same
    proportions: how hand-written window-level timelines (`trafficd simulate`) feed the slice-consuming judge."""
    if ev.slices or ev.n <= 0:
        return ev
    n = max(1, round(ev.n * share))
    counts = SliceCounts(
        slice_id,
        n,
        round(ev.over_slo_fraction * n),
        round(ev.error_rate * n),
        round(ev.ttft_over_slo_fraction * n),
    )
    return replace(ev, slices=(counts,))
