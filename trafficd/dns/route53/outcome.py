"""What a Route 53 call's failure means for the provider: the error tree.

The error tree (codes from the Route 53 API reference; botocore raises them as `ClientError`):

    throttled   Throttling, PriorRequestNotComplete (and the generic throttling codes): the request was not
                applied → capped, jittered backoff within the per-cycle budget, then the same request again.
    ambiguous   HTTP 5xx, or a transport error (connection refused or closed, read timeout): a change may
                or may not have been applied → re-read the zone before deciding to send again.
    fenced      InvalidChangeBatch saying a DELETE did not match or a CREATE found a record: the batch was built
                on a stale read (another writer, a hand edit) → never resent; re-read and re-judge.
    rejected    InvalidChangeBatch (other reasons), InvalidInput: Route 53 refused the batch → one error event,
                no retry.
    denied      AccessDenied (or HTTP 403): IAM does not allow it → one error event, no retry.
    failed      anything else (NoSuchHostedZone, no credentials, …) → one error event, no retry.
"""

from __future__ import annotations

from typing import Literal

from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from trafficd.errors import RefusedError

THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"})
REJECT_CODES = frozenset({"InvalidChangeBatch", "InvalidInput"})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
SERVER_CODES = frozenset({"ServiceUnavailable", "InternalFailure", "InternalError"})

Kind = Literal["throttled", "ambiguous", "fenced", "rejected", "denied", "failed"]


class Route53Error(RefusedError):
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
        return "fenced" if is_stale(exc) else "rejected"
    if code in DENIED_CODES or status == 403:
        return "denied"
    if status >= 500 or code in SERVER_CODES:
        return "ambiguous"
    return "failed"


# Route 53's InvalidChangeBatch messages that mean "the batch was built on a stale read": a DELETE that does
# not match the record as it is now, or a CREATE of a record someone else created since.
STALE_MARKERS = ("but it was not found", "but the values provided do not match", "but it already exists")


def is_stale(exc: BaseException) -> bool:
    """An InvalidChangeBatch caused by the fence (the records or the epoch changed since they were read)."""
    return error_code(exc) == "InvalidChangeBatch" and any(m in error_message(exc) for m in STALE_MARKERS)
