"""Route 53 adapter: reconcile the owned records with a traffic matrix, safely.

The subset of the API trafficd uses: ListResourceRecordSets (paginated), ChangeResourceRecordSets (UPSERT
only) and GetChange. Everything is sync boto3; the controller calls `Reconciler.reconcile` with
`asyncio.to_thread`. One reconcile:

1. A change still PENDING holds every new change to the zone: GetChange (at most every `dns.poll_interval`)
   until INSYNC; past `dns.propagation_timeout` → `route53.change_pending_timeout` (an alert) and keep holding.
2. List the zone, detect drift on owned records (someone else changed what we wrote or saw), then
   `records.plan`: desired vs owned, one validated batch of ≤ 100 UPSERTs. No difference → no API call.
3. Send it. Throttling / PriorRequestNotComplete → capped, jittered backoff within `dns.retry_budget`; an
   ambiguous outcome (connection lost, 5xx) → re-read the zone before retrying; AccessDenied and
   InvalidChangeBatch → one error event, and the same batch is not sent again for `FATAL_HOLD_S`.

Errors: transient ones are handled here; the result says what happened (`ReconcileResult.status`), and
nothing raises for a Route 53 failure except `bootstrap` (which the demo and tests need to succeed).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from trafficd.dns import records as rec
from trafficd.dns.route53 import verify as dns_verify
from trafficd.dns.route53.outcome import ReconcileResult, Route53Error, classify, error_code, error_message
from trafficd.model import Record, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy
from trafficd.runtime.logs import get_logger

__all__ = ["ReconcileResult", "Reconciler", "Route53Error", "bootstrap", "route53_client"]

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0
FATAL_HOLD_S = 300.0  # a batch Route 53 refused (or we may not send) is not sent again before this
PAGE_SIZE = 300

log = get_logger("route53")


def route53_client(policy: Policy, *, total_max_attempts: int = 3) -> Route53Client:
    """A boto3 Route 53 client: standard retry mode, and the policy's endpoint_url (moto) when it gives one.

    botocore's standard mode retries throttling and transient errors itself (`total_max_attempts` counts the
    first try), with its own jittered backoff; the reconciler's budgeted backoff is the layer above it.
    """
    retries: Any = {"mode": "standard", "total_max_attempts": total_max_attempts}
    config = Config(retries=retries, connect_timeout=5, read_timeout=20)
    kwargs: dict[str, Any] = {"config": config, "region_name": "us-east-1"}
    if policy.dns.endpoint_url:
        kwargs["endpoint_url"] = policy.dns.endpoint_url
    client: Route53Client = boto3.client("route53", **kwargs)
    return client


@dataclass(slots=True)
class _Pending:
    change_id: str
    submitted_s: float
    last_poll_s: float
    alerted: bool = False


@dataclass(slots=True)
class _Calls:
    n: int = 0


@dataclass(slots=True)
class _Budget:
    deadline_s: float
    attempt: int = 0


@dataclass
class Reconciler:
    """Keeps the owned records of one hosted zone equal to the matrix (see the module docstring)."""

    policy: Policy
    client: Route53Client
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = random.random
    page_size: int = PAGE_SIZE
    verify_nameservers: list[str] | None = None  # host[:port] to verify against; default: the zone's NS
    _pending: _Pending | None = None
    _expected: dict[rec.Key, Record | None] = field(default_factory=dict)
    _respected: set[rec.Key] = field(default_factory=set)
    _held: tuple[str, float, ReconcileResult] | None = None
    _last_zone: list[Record] = field(default_factory=list)

    @property
    def zone_id(self) -> str:
        return self.policy.dns.zone_id

    @property
    def pending_change_id(self) -> str | None:
        return self._pending.change_id if self._pending else None

    # ------------------------------------------------------------ reading

    def list_zone(self, calls: _Calls | None = None) -> list[Record]:
        """Every record set in the zone (paginated; de-duplicated by key; raises ClientError/BotoCoreError)."""
        calls = calls or _Calls()
        out: dict[rec.Key, Record] = {}
        kwargs: dict[str, Any] = {"HostedZoneId": self.zone_id, "MaxItems": str(self.page_size)}
        starts: set[tuple[str, str, str]] = set()
        while True:
            calls.n += 1
            page = self.client.list_resource_record_sets(**kwargs)
            for rrset in page["ResourceRecordSets"]:
                r = rec.record_from_rrset(rrset)
                out.setdefault(r.key, r)
            if not page.get("IsTruncated"):
                break
            start = (page["NextRecordName"], page["NextRecordType"], page.get("NextRecordIdentifier", ""))
            if start in starts:
                raise Route53Error(f"ListResourceRecordSets pagination did not advance past {start}")
            starts.add(start)
            kwargs.update(StartRecordName=start[0], StartRecordType=start[1])
            if start[2]:
                kwargs["StartRecordIdentifier"] = start[2]
            else:
                kwargs.pop("StartRecordIdentifier", None)
        return list(out.values())

    def owned(self, zone: list[Record]) -> dict[rec.Key, Record]:
        keys = rec.owned_keys(self.policy)
        return {r.key: r for r in zone if r.key in keys}

    def current_matrix(self) -> TrafficMatrix:
        """The matrix today's owned records express (rows absent where a pool is missing or all zero)."""
        return rec.matrix_from_records(self.policy, self.owned(self.list_zone()).values())

    def plan(self, matrix: TrafficMatrix) -> rec.Plan:
        """What reconcile would send now for `matrix` (reads the zone, writes nothing, no drift memory)."""
        return rec.plan(self.policy, matrix, self.list_zone())

    # ------------------------------------------------------------ propagation

    def _poll_pending(self, calls: _Calls) -> str:
        """insync, pending or stuck; GetChange at most every poll_interval."""
        p = self._pending
        if p is None:
            return "insync"
        now = self.clock()
        if now - p.last_poll_s >= self.policy.dns.poll_interval:
            p.last_poll_s = now
            try:
                calls.n += 1
                status = self.client.get_change(Id=p.change_id)["ChangeInfo"]["Status"]
            except (ClientError, BotoCoreError) as exc:
                log.warning("route53.get_change_failed", change_id=p.change_id, error=str(exc)[:300])
                status = "PENDING"
            if status == "INSYNC":
                self._pending = None
                log.info("route53.change_insync", change_id=p.change_id, elapsed_s=round(now - p.submitted_s, 3))
                self._verify()
                return "insync"
        elapsed = now - p.submitted_s
        if elapsed >= self.policy.dns.propagation_timeout:
            if not p.alerted:
                p.alerted = True
                log.error(
                    "route53.change_pending_timeout",
                    change_id=p.change_id,
                    elapsed_s=round(elapsed, 3),
                    timeout_s=self.policy.dns.propagation_timeout,
                    action="hold",
                )
            return "stuck"
        return "pending"

    def wait_insync(self, timeout_s: float | None = None) -> bool:
        """Block until the pending change (if any) is INSYNC; False after `timeout_s` (default the policy's)."""
        deadline = self.clock() + (self.policy.dns.propagation_timeout if timeout_s is None else timeout_s)
        while self._pending is not None:
            if self._poll_pending(_Calls()) == "insync":
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(self.policy.dns.poll_interval)
        return True

    def _verify(self) -> None:
        if self.policy.dns.verify:
            try:
                dns_verify.verify(self.policy, self._last_zone, self.verify_nameservers)
            except Exception as exc:  # verification only reports; it never stops the loop
                log.warning("route53.verify_failed", error=str(exc)[:300])

    # ------------------------------------------------------------ drift

    def _drift(self, owned: dict[rec.Key, Record], matrix: TrafficMatrix) -> list[rec.Drift]:
        drift = rec.detect_drift(self._expected, owned)
        desired = {r.key: r for r in rec.desired_records(self.policy, matrix)}
        for d in drift:
            respect = self.policy.dns.drift == "respect"
            log.warning(
                "route53.drift_detected",
                key="/".join(d.key),
                before=rec.record_to_log(d.before),
                after=rec.record_to_log(d.after),
                action="respect" if respect else "correct",
            )
            if respect:
                self._respected.add(d.key)
        for k in list(self._respected):
            if k in desired and owned.get(k) == desired[k]:
                self._respected.discard(k)  # it came back to what we want: ours again
        for k, r in owned.items():
            self._expected[k] = r
        for d in drift:
            self._expected[d.key] = d.after
        return drift

    # ------------------------------------------------------------ reconcile

    def reconcile(self, matrix: TrafficMatrix, *, dry_run: bool) -> ReconcileResult:
        """Hold while a change propagates; list → drift → plan → validate → one UPSERT batch."""
        calls = _Calls()
        state = self._poll_pending(calls)
        if state != "insync":
            return ReconcileResult(state, change_id=self.pending_change_id, api_calls=calls.n)
        budget = _Budget(self.clock() + self.policy.dns.retry_budget)
        drift: list[rec.Drift] = []
        unknown: rec.Plan | None = None  # a batch sent whose outcome we could not see
        while True:
            zone = self._read(calls, budget, drift)
            if isinstance(zone, ReconcileResult):
                return zone
            self._last_zone = zone
            drift += self._drift(self.owned(zone), matrix)
            plan = rec.plan(self.policy, matrix, zone, respected=self._respected)
            dr, deferred = tuple(drift), plan.deferred
            if not plan.changes:
                if unknown is not None:  # the re-read shows the ambiguous batch did land
                    return self._applied(None, unknown, calls, drift)
                log.debug("route53.no_changes", respected=["/".join(k) for k in plan.respected], api_calls=calls.n)
                return ReconcileResult("no_changes", drift=dr, deferred=deferred, api_calls=calls.n)
            changes_log = [c.to_log() for c in plan.changes]
            fingerprint = repr(sorted(repr(c.after) for c in plan.changes))
            if self._held and self._held[0] == fingerprint and self.clock() < self._held[1]:
                return self._held[2]  # refused before: not logged or sent again until FATAL_HOLD_S has passed
            if not plan.ok:
                log.error(
                    "route53.batch_rejected", source="validation", problems=list(plan.problems), changes=changes_log
                )
                refused = ReconcileResult(
                    "rejected", plan.changes, drift=dr, problems=plan.problems, deferred=deferred, api_calls=calls.n
                )
                self._held = (fingerprint, self.clock() + FATAL_HOLD_S, refused)
                return refused
            if dry_run:
                log.info("route53.changes_planned", dry_run=True, changes=changes_log, deferred=deferred)
                return ReconcileResult("dry_run", plan.changes, drift=dr, deferred=deferred, api_calls=calls.n)
            result = self._send(plan, calls, budget, drift)
            if result is None:
                unknown = plan
                continue
            if result.status in ("rejected", "access_denied"):
                self._held = (fingerprint, self.clock() + FATAL_HOLD_S, result)
            return result

    def _read(self, calls: _Calls, budget: _Budget, drift: list[rec.Drift]) -> list[Record] | ReconcileResult:
        """The zone, retrying throttling and transport errors within the budget."""
        call = "ListResourceRecordSets"
        while True:
            try:
                return self.list_zone(calls)
            except (ClientError, BotoCoreError) as exc:
                if result := self._fatal(exc, call, calls, drift, None):
                    return result
                code, kind = error_code(exc), classify(exc)
            except Route53Error as exc:
                log.error("route53.request_failed", call=call, error=str(exc)[:300])
                return ReconcileResult("error", drift=tuple(drift), api_calls=calls.n, error=str(exc)[:300])
            if not self._backoff(budget, call, code, kind):
                return self._exhausted(calls, drift)

    def _send(self, plan: rec.Plan, calls: _Calls, budget: _Budget, drift: list[rec.Drift]) -> ReconcileResult | None:
        """ChangeResourceRecordSets; throttling → retry the same batch; None when the outcome is unknown."""
        call = "ChangeResourceRecordSets"
        while True:
            try:
                calls.n += 1
                info = self.client.change_resource_record_sets(
                    HostedZoneId=self.zone_id,
                    ChangeBatch=rec.change_batch(plan.changes, self.zone_id),  # type: ignore[arg-type]
                )["ChangeInfo"]
                return self._applied(info, plan, calls, drift)
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if result := self._fatal(exc, call, calls, drift, plan):
                    return result
                ambiguous = classify(exc) == "ambiguous"
                if ambiguous:
                    log.warning("route53.outcome_unknown", call=call, code=code, action="re-read before retrying")
            if ambiguous:
                self._forget(plan)
            if not self._backoff(budget, call, code, "ambiguous" if ambiguous else "throttled"):
                return self._exhausted(calls, drift)
            if ambiguous:
                return None

    def _applied(self, info: Any, plan: rec.Plan, calls: _Calls, drift: list[rec.Drift]) -> ReconcileResult:
        """Remember what we wrote; INSYNC now → verify, else hold the zone until GetChange says INSYNC.

        `info` is None when the send's outcome was unknown and the re-read showed the batch applied: there
        is no change id to poll, so nothing is held.
        """
        change_id = str(info["Id"]).split("/")[-1] if info else None
        status = str(info["Status"]) if info else "unknown"
        for c in plan.changes:
            self._expected[c.after.key] = c.after
        written = {c.after.key: c.after for c in plan.changes}
        self._last_zone = [written.pop(r.key, r) for r in self._last_zone] + list(written.values())
        log.info(
            "route53.changes_applied",
            change_id=change_id,
            status=status,
            confirmed_by="re-read" if info is None else "response",
            count=len(plan.changes),
            deferred=plan.deferred,
            changes=[c.to_log() for c in plan.changes],
        )
        now = self.clock()
        if status == "INSYNC":
            log.info("route53.change_insync", change_id=change_id, elapsed_s=0.0)
            self._verify()
        elif change_id is not None:
            self._pending = _Pending(change_id, now, now)
        return ReconcileResult(
            "applied", plan.changes, change_id, tuple(drift), deferred=plan.deferred, api_calls=calls.n
        )

    def _forget(self, plan: rec.Plan) -> None:
        """The batch may or may not have been applied: its records are unknown until re-read."""
        for c in plan.changes:
            self._expected.pop(c.after.key, None)

    def _fatal(
        self, exc: ClientError | BotoCoreError, call: str, calls: _Calls, drift: list[rec.Drift], plan: rec.Plan | None
    ) -> ReconcileResult | None:
        """One error event and a result for rejected / denied / failed; None for throttled and ambiguous."""
        kind, code, message = classify(exc), error_code(exc), error_message(exc)
        changes = plan.changes if plan else ()
        err = f"{code}: {message}"
        if kind in ("throttled", "ambiguous"):
            return None
        if kind == "rejected":
            changes_log = [c.to_log() for c in changes]
            log.error("route53.batch_rejected", source="route53", code=code, message=message, changes=changes_log)
            return ReconcileResult(
                "rejected", changes, drift=tuple(drift), problems=(message,), api_calls=calls.n, error=err
            )
        if kind == "denied":
            log.error("route53.access_denied", call=call, code=code, message=message, zone_id=self.zone_id)
            return ReconcileResult("access_denied", changes, drift=tuple(drift), api_calls=calls.n, error=err)
        log.error("route53.request_failed", call=call, code=code, message=message, zone_id=self.zone_id)
        return ReconcileResult("error", changes, drift=tuple(drift), api_calls=calls.n, error=err)

    def _backoff(self, budget: _Budget, call: str, code: str, kind: str = "throttled") -> bool:
        """Sleep a capped, jittered delay if the budget allows it; False when it does not."""
        budget.attempt += 1
        attempt = budget.attempt
        cap = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        delay = cap * (0.5 + 0.5 * self.rand())
        left = budget.deadline_s - self.clock()
        if delay > left:
            return False
        log.warning(
            "route53.throttled" if kind == "throttled" else "route53.retrying",
            call=call,
            code=code,
            attempt=attempt,
            delay_s=round(delay, 3),
            budget_left_s=round(left, 3),
        )
        self.sleep(delay)
        return True

    def _exhausted(self, calls: _Calls, drift: list[rec.Drift]) -> ReconcileResult:
        log.error("route53.retry_budget_exhausted", budget_s=self.policy.dns.retry_budget, api_calls=calls.n)
        return ReconcileResult("throttled", drift=tuple(drift), api_calls=calls.n, error="retry budget spent")

    # ------------------------------------------------------------ bootstrap

    def bootstrap(self) -> ReconcileResult:
        """Create the owned records that are absent (identity weights); never touch one that exists."""
        zone = self.list_zone()
        owned = self.owned(zone)
        missing = [
            r for r in rec.desired_records(self.policy, identity_matrix(self.policy.region_names)) if r.key not in owned
        ]
        if not missing:
            return ReconcileResult("no_changes")
        changes = tuple(rec.Change(None, r) for r in missing)
        problems = rec.validate(changes, zone)
        if problems:
            raise Route53Error("bootstrap batch is invalid: " + "; ".join(problems))
        info = self.client.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch=rec.change_batch(changes, self.zone_id, "trafficd bootstrap"),  # type: ignore[arg-type]
        )["ChangeInfo"]
        result = self._applied(info, rec.Plan(changes), _Calls(2), [])
        if not self.wait_insync():
            raise Route53Error(f"bootstrap change {result.change_id} not INSYNC in time")
        return result


def bootstrap(policy: Policy, client: Route53Client) -> ReconcileResult:
    """Create the initial owned records (full weight to each region's own endpoint) where absent."""
    return Reconciler(policy, client).bootstrap()


def own_weights(policy: Policy, client: Route53Client) -> dict[str, int | None]:
    """Each region's weight for its own users, read back from Route 53 now (demo, status, tests)."""
    return rec.own_weights(policy, Reconciler(policy, client).list_zone())
