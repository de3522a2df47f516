"""Drift: owned records someone else changed since this process last wrote or saw them (per process memory).

`DriftMemory.observe` compares the owned records listed now with what was last written or seen, logs each
difference once (`route53.drift_detected` with before/after and the action: `correct`, `respect`, or `frozen`
when the context says frozen: logged, not corrected, nothing written), and keeps the keys `dns.drift: respect`
leaves alone until they equal what we want again. `DriftMemory.baseline` starts the memory over from the zone a
writer read when it took the epoch, so an edit between the takeover and the first reconcile is drift too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trafficd.dns import records as rec
from trafficd.dns.provider import ReconcileContext
from trafficd.dns.records import regions_touched
from trafficd.dns.route53.wire import MAX_WEIGHT
from trafficd.model import Record, TrafficMatrix
from trafficd.policy.schema import Policy

__all__ = ["DriftMemory", "regions_touched"]


@dataclass
class DriftMemory:
    expected: dict[rec.Key, Record | None] = field(default_factory=dict)
    respected_keys: set[rec.Key] = field(default_factory=set)

    @property
    def respected(self) -> tuple[rec.Key, ...]:
        return tuple(sorted(self.respected_keys))

    def observe(
        self, policy: Policy, zone: Iterable[Record], matrix: TrafficMatrix, context: ReconcileContext, log: Any
    ) -> list[rec.Drift]:
        owned = rec.owned(policy, zone)
        keys = rec.owned_keys(policy)  # a policy reload may have dropped keys; the epoch record is not drift
        drift = rec.detect_drift({k: v for k, v in self.expected.items() if k in keys}, owned)
        respect = policy.dns.drift == "respect"
        action = "frozen" if context.frozen else "respect" if respect else "correct"
        for d in drift:
            log.warning(
                "route53.drift_detected",
                key="/".join(d.key),
                before=rec.record_to_log(d.before),
                after=rec.record_to_log(d.after),
                action=action,
                regions=regions_touched(policy, [rec.Change(None, r) for r in (d.after or d.before,) if r]),
            )
            if respect:
                self.respected_keys.add(d.key)
        desired = {r.key: r for r in rec.desired_records(policy, matrix, max_weight=MAX_WEIGHT, existing=owned)}
        for k in list(self.respected_keys):
            if k in desired and owned.get(k) == desired[k]:
                self.respected_keys.discard(k)  # it came back to what we want: ours again
        self.expected.update(owned)
        for d in drift:
            self.expected[d.key] = d.after
        return drift

    def baseline(self, policy: Policy, zone: Iterable[Record]) -> None:
        """The owned records as read when this writer took the epoch: what a later change by hand is drift from.

        What an earlier tenure remembered is dropped (another writer may have written since); respected keys stay.
        """
        self.expected = dict(rec.owned(policy, zone))

    def wrote(self, changes: Iterable[rec.Change]) -> None:
        for c in changes:
            self.expected[c.after.key] = c.after

    def forget(self, changes: Iterable[rec.Change]) -> None:
        """A batch that may or may not have landed: its records are unknown until re-read."""
        for c in changes:
            self.expected.pop(c.after.key, None)
