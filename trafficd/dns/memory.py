"""An in-memory `DnsProvider` with Route 53's semantics, for controller tests (no moto, no network).

The zone is a dict of `Record`s (foreign records may be added with `put`). It behaves like Route 53 where the
controller can tell: batches are all or nothing, a change whose `before` is not the record as it is now (or a
CREATE of a record that exists) refuses the whole batch as `fenced`, every batch asserts the writer epoch (the
same TXT record, `records.epoch_record`), `take_over` bumps it, frozen writes nothing, limits are Route 53's
(`wire.LIMITS`) unless given. Drift is not remembered (the controller cannot see the difference).

Test hooks: `script` (statuses the next reconciles answer without writing, e.g. `[Status.DENIED]`),
`before_write` (called between the read and the write, e.g. to let another writer in), `history` (every
accepted batch with its writer and epoch), `put`/`delete` (hand edits).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Self

from trafficd.dns import fence
from trafficd.dns import records as rec
from trafficd.dns.provider import ReconcileContext, ReconcileResult, Status
from trafficd.dns.route53.wire import LIMITS
from trafficd.model import Record, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy


@dataclass(frozen=True, slots=True)
class Written:
    """One batch the memory provider took."""

    writer: str
    epoch: int | None
    cause: str
    changes: tuple[rec.Change, ...]


@dataclass
class MemoryProvider:
    policy: Policy
    limits: rec.Limits = LIMITS
    zone: dict[rec.Key, Record] = field(default_factory=dict)
    script: list[Status] = field(default_factory=list)
    before_write: Callable[[], None] | None = None
    history: list[Written] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def bootstrapped(cls, policy: Policy, **kw: object) -> Self:
        """A provider whose zone already holds the owned records with identity weights."""
        provider = cls(policy, **kw)  # type: ignore[arg-type]
        provider.bootstrap(context=ReconcileContext.for_cli("bootstrap"))
        return provider

    # ---- hand edits (tests)

    def put(self, record: Record) -> None:
        with self._lock:
            self.zone[record.key] = record

    def delete(self, key: rec.Key) -> None:
        with self._lock:
            self.zone.pop(key, None)

    # ---- reading

    def _snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.zone.values())

    def owned_records(self) -> list[Record]:
        return list(rec.owned(self.policy, self._snapshot()).values())

    def current_matrix(self) -> TrafficMatrix | None:
        return rec.complete_matrix(self.policy, self._snapshot())

    def read_epoch(self) -> int | None:
        return fence.epoch_from(self.policy, self._snapshot())[1]

    def plan(self, matrix: TrafficMatrix) -> rec.Plan:
        return rec.plan(self.policy, matrix, self._snapshot(), self.limits)

    # ---- writing

    def _apply(self, batch: tuple[rec.Change, ...], context: ReconcileContext) -> bool:
        """All or nothing: False (nothing applied) when the batch was built on a stale read."""
        with self._lock:
            if fence.stale_problems(self.zone, batch):
                return False
            for c in batch:
                if c.before is not None:
                    del self.zone[c.before.key]
                self.zone[c.after.key] = c.after
            epoch = fence.epoch_from(self.policy, [c.after for c in batch])[1]
            self.history.append(Written(context.writer, epoch, context.cause, batch))
            return True

    def _write(self, plan: rec.Plan, context: ReconcileContext) -> ReconcileResult:
        if self.before_write is not None:
            self.before_write()
        for i, batch in enumerate(plan.batches):
            if not self._apply(batch.changes, context):
                sent = tuple(c for b in plan.batches[:i] for c in b.changes if c is not plan.fence)
                return ReconcileResult(Status.FENCED, sent, batches=i, error="stale read")
        return ReconcileResult(Status.APPLIED, plan.changes, batches=len(plan.batches))

    def reconcile(self, matrix: TrafficMatrix, *, context: ReconcileContext) -> ReconcileResult:
        if self.script:
            return ReconcileResult(self.script.pop(0))
        zone = self._snapshot()
        ok, assertion, seen = fence.fence_for(self.policy, zone, context.epoch)
        if not ok:
            return ReconcileResult(Status.FENCED, epoch=seen, error="writer epoch moved")
        plan = rec.plan(self.policy, matrix, zone, self.limits, fence=assertion)
        if not plan.changes:
            return ReconcileResult(Status.UNCHANGED, epoch=seen)
        if context.frozen:
            return ReconcileResult(Status.FROZEN, plan.changes, epoch=seen)
        if not plan.ok:
            return ReconcileResult(Status.REFUSED, plan.changes, problems=plan.problems, epoch=seen)
        result = self._write(plan, context)
        return ReconcileResult(result.status, result.changes, epoch=seen, batches=result.batches, error=result.error)

    def take_over(self, *, context: ReconcileContext) -> ReconcileResult:
        if context.frozen:
            return ReconcileResult(Status.FROZEN)
        record, epoch = fence.epoch_from(self.policy, self._snapshot())
        if record is not None and epoch is None:
            return ReconcileResult(Status.REFUSED, problems=("the epoch record is not trafficd's",))
        change = rec.Change(record, fence.epoch_record(self.policy, (epoch or 0) + 1))
        takeover = replace(context, cause="takeover")
        if not self._apply((change,), takeover):
            return ReconcileResult(Status.FENCED, epoch=epoch, error="another writer took over first")
        return ReconcileResult(Status.APPLIED, (change,), epoch=(epoch or 0) + 1, batches=1)

    def bootstrap(self, *, context: ReconcileContext) -> ReconcileResult:
        zone = self._snapshot()
        owned = rec.owned(self.policy, zone)
        identity = identity_matrix(self.policy.region_names)
        desired = rec.desired_records(self.policy, identity, max_weight=self.limits.max_weight)
        missing = [rec.Change(None, r) for r in desired if r.key not in owned]
        if not missing:
            return ReconcileResult(Status.UNCHANGED)
        plan = rec.plan_changes(missing, zone, self.limits)
        if not plan.ok:
            return ReconcileResult(Status.REFUSED, plan.changes, problems=plan.problems)
        return self._write(plan, context)
