"""Sending to Route 53 within a deadline: budgeted backoff, the AccessDenied episode, propagation (INSYNC).

Helpers of `Route53Provider` (the API calls it makes besides listing): `Budget` bounds one provider call
(the smaller of `dns.retry_budget` and the context's deadline), `DeniedEpisode` turns repeated AccessDenied
into one error event and a backoff from 15 s to 5 min, `Propagation` remembers a PENDING change and polls
GetChange until INSYNC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from trafficd import backoff

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0
DENIED_FIRST_S = 15.0
DENIED_CAP_S = 300.0


@dataclass(slots=True)
class Budget:
    """Time and attempts one provider call may spend on retries; never past `deadline_s`."""

    deadline_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    rand: Callable[[], float]
    attempt: int = 0
    calls: int = 0

    def left(self) -> float:
        return self.deadline_s - self.clock()

    def backoff(self, log: Any, call: str, code: str, kind: str) -> bool:
        """Sleep a capped, jittered delay if it ends before the deadline; False when it would not."""
        self.attempt += 1
        delay = backoff.delay(self.attempt, BACKOFF_BASE_S, BACKOFF_CAP_S, self.rand)
        left = self.left()
        if delay > left:
            return False
        log.warning(
            "route53.throttled" if kind == "throttled" else "route53.retrying",
            call=call,
            code=code,
            attempt=self.attempt,
            delay_s=round(delay, 3),
            budget_left_s=round(left, 3),
        )
        self.sleep(delay)
        return True


@dataclass(slots=True)
class DeniedEpisode:
    """AccessDenied from its first answer until the next call that works: one error event, growing retries."""

    since_s: float
    retry_at_s: float
    attempts: int = 1

    @classmethod
    def start(cls, now: float) -> DeniedEpisode:
        return cls(now, now + DENIED_FIRST_S)

    def again(self, now: float) -> None:
        self.attempts += 1
        self.retry_at_s = now + backoff.step(self.attempts, DENIED_FIRST_S, DENIED_CAP_S)


@dataclass(slots=True)
class Propagation:
    """A change Route 53 answered PENDING: polled with GetChange (at most every `poll_s`) until INSYNC."""

    change_id: str
    submitted_s: float
    last_poll_s: float
    alerted: bool = False

    def poll(self, client: Route53Client, now: float, poll_s: float, log: Any) -> bool | None:
        """True when INSYNC, False when still PENDING, None when it was too soon to ask."""
        if now - self.last_poll_s < poll_s:
            return None
        self.last_poll_s = now
        try:
            status = client.get_change(Id=self.change_id)["ChangeInfo"]["Status"]
        except (ClientError, BotoCoreError) as exc:
            log.warning("route53.get_change_failed", change_id=self.change_id, error=str(exc)[:300])
            return False
        return status == "INSYNC"

    def timed_out(self, now: float, timeout_s: float, log: Any) -> bool:
        """Past the propagation timeout: one `route53.change_pending_timeout` alert, then True every time."""
        elapsed = now - self.submitted_s
        if elapsed < timeout_s:
            return False
        if not self.alerted:
            self.alerted = True
            log.error(
                "route53.change_pending_timeout",
                change_id=self.change_id,
                elapsed_s=round(elapsed, 3),
                timeout_s=timeout_s,
                action="hold",
            )
        return True
