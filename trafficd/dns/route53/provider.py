"""Route 53 as a `DnsProvider`: reconcile the owned records with a traffic matrix, fenced, within a deadline.

The subset of the API used: ListResourceRecordSets (paginated), ChangeResourceRecordSets (DELETE + CREATE,
never UPSERT) and GetChange. Sync boto3; the controller calls it with `asyncio.to_thread`. One reconcile:

1. A change still PENDING holds every new change to the zone: GetChange (at most every `dns.poll_interval`)
   until INSYNC; past `dns.propagation_timeout` → `route53.change_pending_timeout` (an alert), status stuck.
2. List the zone; drift on owned records (changed since this process wrote or saw them, from the zone it took
   the epoch on) is logged (`route53.drift_detected`: correct, respect or frozen).
3. The fence: the epoch TXT record must hold the caller's epoch (`context.epoch`), else `fenced` at once.
4. `records.plan`: desired vs owned → batches (≤ 100 changes, ≤ 1,000 values, ≤ 32,000 value characters), each
   DELETEing the exact records read, CREATEing their replacements and asserting the epoch (DELETE + CREATE of
   the same value). No difference → no API call. Frozen → nothing is sent.
5. Send the batches in order, waiting for INSYNC before one that must follow the previous (an alias to a pool
   created just before). Throttling → capped, jittered backoff within the budget; an ambiguous outcome → re-read
   before deciding; a stale read (InvalidChangeBatch: not found / values do not match / already exists) →
   `fenced`, never resent; AccessDenied → `denied`, one event per episode, retried from 15 s to 5 min.

No call outlives `context.deadline_s`: no send starts and no sleep ends after it (one API call in flight is
bounded by the client's timeouts). Every `route53.*` event carries the context's evaluation id, policy hash
and cause, and the regions the batch touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from trafficd.dns import fence
from trafficd.dns import records as rec
from trafficd.dns.provider import ReconcileContext, ReconcileResult, Status
from trafficd.dns.route53.base import Route53Api
from trafficd.dns.route53.client import list_zone, route53_client
from trafficd.dns.route53.drift import regions_touched
from trafficd.dns.route53.outcome import Route53Error, classify, error_code
from trafficd.dns.route53.sending import Budget, Propagation
from trafficd.dns.route53.wire import LIMITS, change_batch
from trafficd.model import Record, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy
from trafficd.runtime.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

FATAL_HOLD_S = 300.0  # a batch Route 53 refused (or we may not send) is not sent again before this

_log = get_logger("route53")


class Route53Provider(Route53Api):
    """Keeps the owned records of one hosted zone equal to the matrix (see the module docstring)."""

    @classmethod
    def from_policy(cls, policy: Policy, *, writer: str = "") -> Route53Provider:
        return cls(policy, route53_client(policy, writer=writer))

    # ------------------------------------------------------------ reading (the port's read side)

    def list_zone(self) -> list[Record]:
        """Every record set in the zone (raises ClientError/BotoCoreError/Route53Error)."""
        return list_zone(self.client, self.zone_id, self.page_size)[0]

    def owned_records(self) -> list[Record]:
        return list(rec.owned(self.policy, self.read_owned()[0]).values())

    def current_matrix(self) -> TrafficMatrix | None:
        return rec.complete_matrix(self.policy, self.read_owned()[0])

    def read_epoch(self) -> int | None:
        return fence.epoch_from(self.policy, self.read_owned()[0])[1]

    def plan(self, matrix: TrafficMatrix) -> rec.Plan:
        """What reconcile would send now for `matrix` (reads the owned names, writes nothing, no drift memory)."""
        return rec.plan(self.policy, matrix, self.read_owned()[0], LIMITS)

    # ------------------------------------------------------------ reconcile

    def reconcile(self, matrix: TrafficMatrix, *, context: ReconcileContext) -> ReconcileResult:
        """Hold while a change propagates; list → drift → fence → plan → validate → batches in order."""
        log = _log.bind(**context.to_log(), regions=[])
        budget = self._budget(context)
        if (held := self._denied_hold()) is not None:
            return held
        if budget.left() <= 0:  # the caller's lease is (nearly) gone: not even a read
            return ReconcileResult(Status.PENDING, error="deadline passed before the reconcile started")
        state = self._poll_pending(log, budget)
        if state is not None:
            return ReconcileResult(state, change_id=self.pending_change_id, api_calls=budget.calls)
        drift: list[rec.Drift] = []
        sent: list[rec.Change] = []
        unknown = False  # a batch was sent whose outcome we could not see
        while True:
            zone = self._read(log, budget, drift)
            if isinstance(zone, ReconcileResult):
                return zone
            drift += self._memory.observe(self.policy, zone, matrix, context, log)
            assertion = self._fence(zone, context, log, budget, drift)
            if isinstance(assertion, ReconcileResult):
                return assertion
            plan = rec.plan(self.policy, matrix, zone, LIMITS, respected=self._memory.respected, fence=assertion)
            if not plan.changes:
                return self._nothing_to_do(log, budget, drift, sent, unknown, plan)
            if (refused := self._refuse(plan, context, log, budget, drift)) is not None:
                return refused
            drifted = {d.key for d in drift}
            if context.cause == "plan" and all(c.after.key in drifted for c in plan.changes):
                log = log.bind(cause="drift")  # the batch only puts back what someone changed by hand
            result = self._send_plan(plan, context, log, budget, drift, sent)
            if result is not None:
                return result
            unknown = True  # ambiguous: re-read, then decide

    def _nothing_to_do(
        self,
        log: Any,
        budget: Budget,
        drift: list[rec.Drift],
        sent: list[rec.Change],
        unknown: bool,
        plan: rec.Plan,
    ) -> ReconcileResult:
        if unknown:  # the re-read shows the ambiguous batch did land
            log.info("route53.changes_applied", change_id=None, status="unknown", confirmed_by="re-read")
            return self._result(Status.APPLIED, budget, drift, changes=tuple(sent))
        log.debug("route53.no_changes", respected=["/".join(k) for k in plan.respected], api_calls=budget.calls)
        return self._result(Status.APPLIED if sent else Status.UNCHANGED, budget, drift, changes=tuple(sent))

    def _fence(
        self, zone: list[Record], context: ReconcileContext, log: Any, budget: Budget, drift: list[rec.Drift]
    ) -> rec.Change | ReconcileResult | None:
        """The epoch assertion for every batch, or `fenced` when the zone's epoch is not the caller's."""
        ok, assertion, seen = fence.fence_for(self.policy, zone, context.epoch)
        if not ok:
            log.warning("route53.fenced", reason="epoch", epoch_held=context.epoch, epoch_seen=seen, sent=False)
            return self._result(Status.FENCED, budget, drift, epoch=seen, error="writer epoch moved")
        return assertion

    def _refuse(
        self, plan: rec.Plan, context: ReconcileContext, log: Any, budget: Budget, drift: list[rec.Drift]
    ) -> ReconcileResult | None:
        """Frozen, or an invalid plan (held for FATAL_HOLD_S), or a plan refused before: nothing is sent."""
        changes_log = [c.to_log() for c in plan.changes]
        regions = regions_touched(self.policy, plan.changes)
        if context.frozen:
            log.info("route53.write_skipped", reason="frozen", regions=regions, changes=changes_log)
            return self._result(Status.FROZEN, budget, drift, changes=plan.changes)
        fingerprint = repr(sorted(repr(c.after) for c in plan.changes))
        if self._held and self._held[0] == fingerprint and self.clock() < self._held[1]:
            return self._held[2]  # refused before: not logged or sent again until FATAL_HOLD_S has passed
        if plan.ok:
            return None
        log.error(
            "route53.batch_rejected",
            source="validation",
            problems=list(plan.problems),
            changes=changes_log,
            regions=regions,
        )
        refused = self._result(Status.REFUSED, budget, drift, changes=plan.changes, problems=plan.problems)
        self._held = (fingerprint, self.clock() + FATAL_HOLD_S, refused)
        return refused

    # ------------------------------------------------------------ sending

    def _send_plan(
        self,
        plan: rec.Plan,
        context: ReconcileContext,
        log: Any,
        budget: Budget,
        drift: list[rec.Drift],
        sent: list[rec.Change],
    ) -> ReconcileResult | None:
        """Each batch in order; None when an outcome is unknown (the caller re-reads and re-plans)."""
        change_id: str | None = None
        for i, batch in enumerate(plan.batches):
            left = sum(len([c for c in b.changes if c is not plan.fence]) for b in plan.batches[i:])
            if batch.after_insync and not self._wait_insync(budget, log):
                return self._result(Status.PENDING, budget, drift, changes=tuple(sent), deferred=left, batches=i)
            if budget.left() <= 0:
                return self._result(Status.PENDING, budget, drift, changes=tuple(sent), deferred=left, batches=i)
            changes = [c for c in batch.changes if c is not plan.fence]
            blog = log.bind(regions=regions_touched(self.policy, changes))
            outcome = self._send(batch.changes, changes, context, blog, budget, drift, sent)
            if outcome is None or isinstance(outcome, ReconcileResult):
                return outcome
            change_id = outcome
            sent.extend(changes)
        return self._result(
            Status.APPLIED, budget, drift, changes=tuple(sent), change_id=change_id, batches=len(plan.batches)
        )

    def _send(
        self,
        batch: Sequence[rec.Change],
        changes: list[rec.Change],
        context: ReconcileContext,
        log: Any,
        budget: Budget,
        drift: list[rec.Drift],
        sent: list[rec.Change],
    ) -> str | ReconcileResult | None:
        """One ChangeResourceRecordSets; the change id, a final result, or None when the outcome is unknown."""
        call = "ChangeResourceRecordSets"
        comment = f"trafficd {context.cause} eval={context.evaluation_id} epoch={context.epoch} writer={context.writer}"
        while True:
            try:
                budget.calls += 1
                info = self.client.change_resource_record_sets(
                    HostedZoneId=self.zone_id,
                    ChangeBatch=change_batch(batch, self.zone_id, comment),  # type: ignore[arg-type]
                )["ChangeInfo"]
                return self._applied(info, changes, log, budget)
            except (ClientError, BotoCoreError) as exc:
                kind, code = classify(exc), error_code(exc)
                if kind not in ("throttled", "ambiguous"):
                    return self._failed(exc, call, log, budget, drift, changes, sent)
                if kind == "ambiguous":
                    log.warning("route53.outcome_unknown", call=call, code=code, action="re-read before retrying")
                    self._memory.forget(changes)
            if not budget.backoff(log, call, code, kind):
                return self._exhausted(log, budget, drift, sent)
            if kind == "ambiguous":
                return None

    def _applied(self, info: Any, changes: list[rec.Change], log: Any, budget: Budget) -> str:
        """Remember what we wrote; INSYNC now → verify, else hold the zone until GetChange says INSYNC."""
        change_id, status = str(info["Id"]).split("/")[-1], str(info["Status"])
        self._memory.wrote(changes)
        written = {c.after.key: c.after for c in changes}
        self._last_zone = [written.pop(r.key, r) for r in self._last_zone] + list(written.values())
        log.info(
            "route53.changes_applied",
            change_id=change_id,
            status=status,
            confirmed_by="response",
            count=len(changes),
            changes=[c.to_log() for c in changes],
        )
        self._end_denied(log)
        now = self.clock()
        if status == "INSYNC":
            log.info("route53.change_insync", change_id=change_id, elapsed_s=0.0)
            self._verify(log, budget)
        else:
            self._pending = Propagation(change_id, now, now)
        return change_id

    # ------------------------------------------------------------ takeover and bootstrap

    def take_over(self, *, context: ReconcileContext) -> ReconcileResult:
        """Bump the writer epoch: DELETE the epoch record as read + CREATE epoch + 1 (CREATE 1 when absent)."""
        log = _log.bind(**{**context.to_log(), "cause": "takeover"}, regions=[])
        budget = self._budget(context)
        if context.frozen:
            log.info("route53.write_skipped", reason="frozen", changes=[])
            return ReconcileResult(Status.FROZEN)
        zone = self._read(log, budget, [])
        if isinstance(zone, ReconcileResult):
            return zone
        record, epoch = fence.epoch_from(self.policy, zone)
        if record is not None and epoch is None:
            problem = f"{fence.epoch_name(self.policy)} TXT holds {record.values!r}, not a trafficd epoch"
            log.error("route53.batch_rejected", source="validation", problems=[problem], changes=[])
            return self._result(Status.REFUSED, budget, [], problems=(problem,))
        new = (epoch or 0) + 1
        change = rec.Change(record, fence.epoch_record(self.policy, new))
        bumped = replace(context, cause="takeover", epoch=new)
        pending = self._pending
        outcome = self._send([change], [change], bumped, log, budget, [], [])
        self._pending = pending  # the epoch record's propagation holds no traffic change; a traffic change still does
        if isinstance(outcome, str):
            self._memory.baseline(self.policy, zone)  # a hand edit from now until the first reconcile is drift
            log.info("route53.epoch_taken", epoch=new, previous=epoch, writer=context.writer)
            return self._result(Status.APPLIED, budget, [], changes=(change,), change_id=outcome, epoch=new, batches=1)
        if outcome is None:  # outcome unknown: the caller re-reads the epoch
            return self._result(Status.PENDING, budget, [], epoch=epoch, error="takeover outcome unknown")
        return outcome

    def bootstrap(self, *, context: ReconcileContext) -> ReconcileResult:
        """Create the owned records that are absent (identity weights), in valid ordered batches; never change one."""
        log = _log.bind(**{**context.to_log(), "cause": "bootstrap"}, regions=[])
        budget = self._budget(context)
        zone = self._read(log, budget, [])
        if isinstance(zone, ReconcileResult):
            return zone
        owned = rec.owned(self.policy, zone)
        desired = rec.desired_records(
            self.policy, identity_matrix(self.policy.region_names), max_weight=LIMITS.max_weight
        )
        missing = [rec.Change(None, r) for r in desired if r.key not in owned]
        if not missing:
            return self._result(Status.UNCHANGED, budget, [])
        plan = rec.plan_changes(missing, zone, LIMITS)
        if not plan.ok:
            log.error("route53.batch_rejected", source="validation", problems=list(plan.problems), changes=[])
            return self._result(Status.REFUSED, budget, [], changes=plan.changes, problems=plan.problems)
        result = self._send_plan(plan, context, log, budget, [], [])
        if result is None:
            return self._result(Status.PENDING, budget, [], error="bootstrap outcome unknown: run it again")
        if result.status is Status.APPLIED and not self._wait_insync(budget, log):
            return self._result(Status.PENDING, budget, [], changes=result.changes, change_id=result.change_id)
        return result


def bootstrap(policy: Policy, client: Route53Client, timeout_s: float = 300.0) -> ReconcileResult:
    """Create the initial owned records (full weight to each region's own endpoint) where absent; raise if not."""
    result = Route53Provider(policy, client).bootstrap(
        context=ReconcileContext.for_cli("bootstrap", timeout_s=timeout_s)
    )
    if not result.complete:
        raise Route53Error(f"bootstrap {result.status}: " + "; ".join(result.problems or (result.error or "",)))
    return result


def own_weights(policy: Policy, client: Route53Client) -> dict[str, int | None]:
    """Each region's weight for its own users, read back from Route 53 now (demo, status, tests)."""
    return rec.own_weights(policy, list_zone(client, policy.dns.zone_id)[0])
