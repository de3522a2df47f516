"""The DNS provider port: what the controller asks of DNS, in terms of the traffic matrix.

The controller (and `trafficd dns`, `status`) talk to DNS only through `DnsProvider`. Route 53
(`trafficd.dns.route53.provider.Route53Provider`) is the first implementation; `trafficd.dns.memory.MemoryProvider`
keeps the records in memory with the same semantics (fence included) for controller tests. `provider_for(policy)`
(`trafficd.dns.select`) picks one from the policy. Nothing here imports boto3: a second provider (Cloudflare,
RFC 2136, see docs/route53.md) implements this protocol without touching `decide/` or `control/`.

    current_matrix() -> TrafficMatrix | None      what the owned records express now; None unless every owned
                                                  record is present (a start must not guess)
    plan(matrix) -> Plan                          the batches reconcile would send now; writes nothing
    reconcile(matrix, *, context) -> ReconcileResult
                                                  make the owned records express `matrix`; never raises for a
                                                  provider failure, never outlives `context.deadline_s`
    read_epoch() -> int | None                    the writer epoch the DNS fence holds now (None: no fence yet)
    take_over(*, context) -> ReconcileResult      bump the writer epoch (a new leader, before its first write):
                                                  `.epoch` is the new epoch; `fenced` if another writer bumped it
                                                  first (re-read and retry, or stand down)
    bootstrap(*, context) -> ReconcileResult      create the absent owned records (identity weights) and the
                                                  epoch record; never changes an existing record
    owned_records() -> list[Record]               the owned records as they are now (for `status`, `dns show`)

**The fence.** Every write asserts the writer epoch `context.epoch` and deletes the exact records it read, in
one all-or-nothing batch. A batch built on a stale read (someone else wrote since, including a new leader
bumping the epoch) is refused whole: status `fenced`. On `fenced` never resend the same batch: re-read
(`current_matrix`, `read_epoch`) and re-judge. A write without an epoch (`context.epoch is None`) is refused
with `fenced` as soon as an epoch record exists. With `context.frozen` nothing is written at all: drift is
logged (`route53.drift_detected`, action `frozen`) and the status is `frozen` when a change was wanted.

**Statuses** (`Status`): applied (every batch taken) · unchanged (nothing to do) · pending (a change is still
propagating, or the deadline came before the next batch could be sent: held) · stuck (pending past the
propagation timeout: alert, held) · throttled (the API rate limit outlasted the budget or the deadline) ·
refused (the batch is invalid: our validation or the provider said so; not retried until the plan changes) ·
denied (no permission: retry with backoff, `retry_after_s` says when the provider will try again) ·
fenced (stale read or deposed writer: re-read and re-judge) · frozen (a change was wanted but the context says
frozen) · error (anything else); `dry_run` is for callers that only planned. Only `applied` and
`unchanged` (with `deferred == 0`, see `complete`) mean DNS now shows the matrix.

**Context** (`ReconcileContext`): the evaluation id, policy hash and cause (`plan`, `drift`, `bootstrap`,
`takeover`) are carried into every provider log event (with the regions the batch touches), the deadline
bounds the whole call (the controller passes its lease expiry minus a margin, on the `time.monotonic()`
clock), the epoch is the fence, `writer` names the process (sent to the API as a User-Agent suffix).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from trafficd.dns.records import Change, Drift, Plan
from trafficd.model import Record, TrafficMatrix

__all__ = [
    "COMMITTED",
    "Cause",
    "Change",
    "DnsProvider",
    "Drift",
    "Plan",
    "ReconcileContext",
    "ReconcileResult",
    "Status",
]

Cause = Literal["plan", "drift", "bootstrap", "takeover"]


class Status(enum.StrEnum):
    """What one provider call did (see the module docstring)."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    PENDING = "pending"
    STUCK = "stuck"
    THROTTLED = "throttled"
    REFUSED = "refused"
    DENIED = "denied"
    FENCED = "fenced"
    FROZEN = "frozen"
    ERROR = "error"
    DRY_RUN = "dry_run"  # never returned by a provider: how a caller reports a plan it only logged


# statuses after which DNS shows what was asked (when nothing is deferred)
COMMITTED = frozenset({Status.APPLIED, Status.UNCHANGED})


@dataclass(frozen=True, slots=True)
class ReconcileContext:
    """Who writes, why, and until when (see the module docstring)."""

    evaluation_id: str
    policy_hash: str
    deadline_s: float  # time.monotonic() value the call must return by
    cause: Cause = "plan"
    epoch: int | None = None  # the writer epoch this writer holds (the fence); None: none taken yet
    frozen: bool = False  # write nothing of any kind
    writer: str = ""  # process identity, e.g. host:pid

    @classmethod
    def for_cli(cls, cause: Cause = "bootstrap", *, timeout_s: float = 300.0, writer: str = "cli") -> ReconcileContext:
        """A context for one-shot commands (`trafficd dns bootstrap`, the demo, tests)."""
        return cls(f"{cause}-{int(time.time())}", "", time.monotonic() + timeout_s, cause, writer=writer)

    def to_log(self) -> dict[str, Any]:
        return {"evaluation_id": self.evaluation_id, "policy_hash": self.policy_hash, "cause": self.cause}


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What one provider call did: status, the changes sent (or wanted), drift seen, and the fence epoch."""

    status: Status
    changes: tuple[Change, ...] = ()
    change_id: str | None = None
    drift: tuple[Drift, ...] = ()
    problems: tuple[str, ...] = ()
    deferred: int = 0  # changes planned but not sent by this call (a later batch; the deadline came first)
    api_calls: int = 0
    error: str | None = None
    epoch: int | None = None  # the epoch the provider saw (take_over: the new one)
    batches: int = 0  # batches taken
    retry_after_s: float | None = None  # denied: when the provider will call the API again

    @property
    def complete(self) -> bool:
        """DNS now shows what was asked: applied or unchanged, nothing deferred."""
        return self.status in COMMITTED and self.deferred == 0

    def to_log(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "changes": [c.to_log() for c in self.changes],
            "change_id": self.change_id,
            "drift": [d.to_log() for d in self.drift],
            "problems": list(self.problems),
            "deferred": self.deferred,
            "api_calls": self.api_calls,
            "error": self.error,
            "epoch": self.epoch,
            "batches": self.batches,
        }


class DnsProvider(Protocol):
    """The port (module docstring). Implementations are synchronous; the controller runs them in a thread."""

    def current_matrix(self) -> TrafficMatrix | None: ...

    def plan(self, matrix: TrafficMatrix) -> Plan: ...

    def reconcile(self, matrix: TrafficMatrix, *, context: ReconcileContext) -> ReconcileResult: ...

    def read_epoch(self) -> int | None: ...

    def take_over(self, *, context: ReconcileContext) -> ReconcileResult: ...

    def bootstrap(self, *, context: ReconcileContext) -> ReconcileResult: ...

    def owned_records(self) -> list[Record]: ...
