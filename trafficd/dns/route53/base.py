"""The Route 53 API side of `Route53Provider`: reading the zone, errors (the tree in outcome.py), the
AccessDenied episode, propagation (GetChange until INSYNC) and verification — everything but writing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from trafficd.dns import fence
from trafficd.dns import records as rec
from trafficd.dns.provider import ReconcileContext, ReconcileResult, Status
from trafficd.dns.route53 import verify as dns_verify
from trafficd.dns.route53.client import PAGE_SIZE, apex_ns, list_names
from trafficd.dns.route53.drift import DriftMemory
from trafficd.dns.route53.outcome import Route53Error, classify, error_code, error_message
from trafficd.dns.route53.sending import Budget, DeniedEpisode, Propagation
from trafficd.model import Record
from trafficd.policy.schema import Policy
from trafficd.runtime.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

log_base = get_logger("route53")


@dataclass
class Route53Api:
    """One hosted zone's API state: the client, the fake-able clock, the pending change, the drift memory."""

    policy: Policy
    client: Route53Client
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = random.random
    page_size: int = PAGE_SIZE
    verify_nameservers: list[str] | None = None  # host[:port] to verify against; default: the zone's NS
    _pending: Propagation | None = None
    _memory: DriftMemory = field(default_factory=DriftMemory)
    _held: tuple[str, float, ReconcileResult] | None = None
    _denied: DeniedEpisode | None = None
    _last_zone: list[Record] = field(default_factory=list)
    _apex_ns: list[Record] | None = None  # the zone's NS, read once when verification needs it

    def read_owned(self) -> tuple[list[Record], int]:
        """The owned names' records (and anything listed between them), and the API calls it took."""
        names = [*rec.owned_names(self.policy), fence.epoch_name(self.policy)]
        return list_names(self.client, self.zone_id, names, self.page_size)

    @property
    def zone_id(self) -> str:
        return self.policy.dns.zone_id

    @property
    def pending_change_id(self) -> str | None:
        return self._pending.change_id if self._pending else None

    def _budget(self, context: ReconcileContext) -> Budget:
        deadline = min(self.clock() + self.policy.dns.retry_budget, context.deadline_s)
        return Budget(deadline, self.clock, self.sleep, self.rand)

    def _result(self, status: Status, budget: Budget, drift: Sequence[rec.Drift], **kw: Any) -> ReconcileResult:
        return ReconcileResult(status, drift=tuple(drift), api_calls=budget.calls, **kw)

    def _failed(
        self,
        exc: ClientError | BotoCoreError,
        call: str,
        log: Any,
        budget: Budget,
        drift: list[rec.Drift],
        changes: Sequence[rec.Change],
        sent: list[rec.Change],
    ) -> ReconcileResult:
        """One event and a result for fenced / rejected / denied / failed."""
        kind, code, message = classify(exc), error_code(exc), error_message(exc)
        err = f"{code}: {message}"
        changes_log = [c.to_log() for c in changes]
        done = {"changes": tuple(sent), "error": err}
        if kind == "fenced":
            self._memory.forget(changes)
            log.warning(
                "route53.fenced", reason="stale_read", code=code, message=message, changes=changes_log, sent=True
            )
            return self._result(Status.FENCED, budget, drift, problems=(message,), **done)
        if kind == "rejected":
            log.error("route53.batch_rejected", source="route53", code=code, message=message, changes=changes_log)
            return self._result(Status.REFUSED, budget, drift, problems=(message,), **done)
        if kind == "denied":
            return self._deny(log, call, code, message, budget, drift, done)
        log.error("route53.request_failed", call=call, code=code, message=message, zone_id=self.zone_id)
        return self._result(Status.ERROR, budget, drift, **done)

    def _deny(
        self, log: Any, call: str, code: str, message: str, budget: Budget, drift: list[rec.Drift], done: dict[str, Any]
    ) -> ReconcileResult:
        now = self.clock()
        if self._denied is None:
            self._denied = DeniedEpisode.start(now)
            log.error("route53.access_denied", call=call, code=code, message=message, zone_id=self.zone_id)
        else:
            self._denied.again(now)
        retry = round(self._denied.retry_at_s - now, 3)
        return self._result(Status.DENIED, budget, drift, retry_after_s=retry, **done)

    def _denied_hold(self) -> ReconcileResult | None:
        """While an AccessDenied episode waits for its next retry, answer `denied` without calling the API."""
        if self._denied is None or self.clock() >= self._denied.retry_at_s:
            return None
        return ReconcileResult(Status.DENIED, retry_after_s=round(self._denied.retry_at_s - self.clock(), 3))

    def _end_denied(self, log: Any) -> None:
        if self._denied is not None:
            log.info("route53.access_restored", denied_for_s=round(self.clock() - self._denied.since_s, 3))
            self._denied = None

    def _exhausted(self, log: Any, budget: Budget, drift: list[rec.Drift], sent: list[rec.Change]) -> ReconcileResult:
        log.error("route53.retry_budget_exhausted", budget_s=self.policy.dns.retry_budget, api_calls=budget.calls)
        return self._result(
            Status.THROTTLED, budget, drift, changes=tuple(sent), error="retry budget or deadline spent"
        )

    def _read(self, log: Any, budget: Budget, drift: list[rec.Drift]) -> list[Record] | ReconcileResult:
        """The zone, retrying throttling and transport errors within the budget."""
        call = "ListResourceRecordSets"
        while True:
            try:
                zone, calls = self.read_owned()
                budget.calls += calls
                self._last_zone = zone
                return zone
            except (ClientError, BotoCoreError) as exc:
                budget.calls += 1
                kind, code = classify(exc), error_code(exc)
                if kind not in ("throttled", "ambiguous"):
                    return self._failed(exc, call, log, budget, drift, (), [])
            except Route53Error as exc:
                log.error("route53.request_failed", call=call, error=str(exc)[:300])
                return self._result(Status.ERROR, budget, drift, error=str(exc)[:300])
            if not budget.backoff(log, call, code, kind):
                return self._exhausted(log, budget, drift, [])

    # ------------------------------------------------------------ propagation

    def _poll_pending(self, log: Any, budget: Budget) -> Status | None:
        """None when no change is propagating (go on); pending or stuck (hold) otherwise."""
        p = self._pending
        if p is None:
            return None
        now = self.clock()
        polled = p.poll(self.client, now, self.policy.dns.poll_interval, log)
        if polled is not None:
            budget.calls += 1
        if polled:
            self._pending = None
            log.info("route53.change_insync", change_id=p.change_id, elapsed_s=round(now - p.submitted_s, 3))
            self._verify(log, budget)
            return None
        return Status.STUCK if p.timed_out(now, self.policy.dns.propagation_timeout, log) else Status.PENDING

    def _wait_insync(self, budget: Budget, log: Any) -> bool:
        """Block until the pending change (if any) is INSYNC; False when the budget's deadline comes first."""
        while self._pending is not None:
            if self._poll_pending(log, budget) is None:
                return True
            if budget.left() < self.policy.dns.poll_interval:
                return False
            self.sleep(self.policy.dns.poll_interval)
        return True

    def _verify(self, log: Any, budget: Budget) -> None:
        if self.policy.dns.verify:
            try:
                if self.verify_nameservers is None and self._apex_ns is None:
                    self._apex_ns, calls = apex_ns(self.client, self.zone_id)
                    budget.calls += calls
                zone = self._last_zone + (self._apex_ns or [])
                dns_verify.verify(self.policy, zone, self.verify_nameservers, log=log, time_left=budget.left)
            except Exception as exc:  # verification only reports; it never stops the loop
                log.warning("route53.verify_failed", error=str(exc)[:300])
