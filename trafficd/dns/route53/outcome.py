"""What a Route 53 call's failure means for the reconciler, and what one reconcile did (`ReconcileResult`).

The error tree (codes from the Route 53 API reference; botocore raises them as `ClientError`):

    throttled   Throttling, PriorRequestNotComplete (and the generic throttling codes): the request was not
                applied → capped, jittered backoff within the per-cycle budget, then the same request again.
    ambiguous   HTTP 5xx, or a transport error (connection refused or closed, read timeout): a change may
                or may not have been applied → re-read the zone before deciding to send again.
    rejected    InvalidChangeBatch, InvalidInput: Route 53 refused the batch → one error event, no retry.
    denied      AccessDenied (or HTTP 403): IAM does not allow it → one error event, no retry.
    failed      anything else (NoSuchHostedZone, no credentials, …) → one error event, no retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from trafficd.dns import records as rec

THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"})
REJECT_CODES = frozenset({"InvalidChangeBatch", "InvalidInput"})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
SERVER_CODES = frozenset({"ServiceUnavailable", "InternalFailure", "InternalError"})

Kind = Literal["throttled", "ambiguous", "rejected", "denied", "failed"]


class Route53Error(Exception):
    """A Route 53 call that failed for good (the message names the call and the reason)."""


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))[:500]
    return str(exc)[:500]


def classify(exc: BaseException) -> Kind:
    """Which branch of the error tree (module docstring) an exception from a boto3 call belongs to."""
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return "ambiguous"
    if not isinstance(exc, ClientError):
        return "failed"
    code = error_code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in THROTTLE_CODES:
        return "throttled"
    if code in REJECT_CODES:
        return "rejected"
    if code in DENIED_CODES or status == 403:
        return "denied"
    if status >= 500 or code in SERVER_CODES:
        return "ambiguous"
    return "failed"


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What one reconcile did.

    status: no_changes · applied · dry_run · pending (a change is propagating: held) · stuck (PENDING past
    the propagation timeout: held) · rejected (our validation or Route 53 refused the batch) ·
    access_denied · throttled (retry budget spent) · error.
    """

    status: str
    changes: tuple[rec.Change, ...] = ()
    change_id: str | None = None
    drift: tuple[rec.Drift, ...] = ()
    problems: tuple[str, ...] = ()
    deferred: int = 0
    api_calls: int = 0
    error: str | None = None

    @property
    def wrote(self) -> bool:
        return self.status == "applied"

    def to_log(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "changes": [c.to_log() for c in self.changes],
            "change_id": self.change_id,
            "drift": [d.to_log() for d in self.drift],
            "problems": list(self.problems),
            "deferred": self.deferred,
            "api_calls": self.api_calls,
            "error": self.error,
        }
