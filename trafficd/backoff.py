"""One backoff formula for every retry loop: capped exponential, jittered over the upper half.

    step  = min(cap, base × 2^(attempt-1))                     attempt = 1, 2, 3, ...
    delay = step × U(0.5, 1)

Half-jitter keeps retries from aligning across processes while never retrying sooner than half the step.
Used by the Redis sink (`Backoff`, by monotonic deadline), the Route 53 provider's budgeted retries (`delay`) and
its AccessDenied episode (`step`: one error event, then retries every 15 s doubling to 5 min).
"""

from __future__ import annotations

import random
from collections.abc import Callable


def step(attempt: int, base_s: float, cap_s: float) -> float:
    """The un-jittered wait before retry number `attempt` (1 = the first retry): base doubling up to cap."""
    return float(min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 30)))


def delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """`step()` jittered over its upper half: what retry loops sleep."""
    return step(attempt, base_s, cap_s) * (0.5 + 0.5 * rand())


class Backoff:
    """`delay()` with its state: failures so far and the monotonic time before which not to retry."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s, self.cap_s, self.failures = base_s, cap_s, 0
        self.retry_at = 0.0

    def ready(self, mono: float) -> bool:
        return mono >= self.retry_at

    def failed(self, mono: float) -> float:
        self.failures += 1
        wait = delay(self.failures, self.base_s, self.cap_s)
        self.retry_at = mono + wait
        return wait

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0
