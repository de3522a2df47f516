"""The agent's log budget: one `agent.summary` every `SUMMARY_EVERY_S` instead of an INFO line per round.

At the default probe interval (500 ms) an agent runs 7,200 rounds an hour; each `agent.round_completed` is DEBUG.
Changes (a series failing or recovering, discovery, reloads, Redis outages) keep their own INFO/WARNING events;
the summary says how many rounds and probes ran, their outcomes and the slowest round since the last one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

SUMMARY_EVERY_S = 300.0


class AgentReport:
    """Accumulates rounds; logs `agent.summary` at the first round and then every `summary_every_s`."""

    def __init__(
        self,
        log: Any,
        region: str,
        *,
        summary_every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.region = region
        self.summary_every_s = summary_every_s
        self.clock = clock
        self._started: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.rounds = 0
        self.probes = 0
        self.outcomes: Counter[str] = Counter()
        self.slowest_round_ms = 0.0
        self.policy_hash: str | None = None

    def round_completed(self, outcomes: Mapping[str, int], probes: int, duration_ms: float, policy_hash: str) -> None:
        """Count one round; log the summary when it is due."""
        self.rounds += 1
        self.probes += probes
        self.outcomes.update(outcomes)
        self.slowest_round_ms = max(self.slowest_round_ms, duration_ms)
        self.policy_hash = policy_hash
        now = self.clock()
        if self._started is not None and now - self._started < self.summary_every_s:
            return
        ok = self.outcomes.get("ok", 0)
        self.log.info(
            "agent.summary",
            region=self.region,
            period_s=0.0 if self._started is None else round(now - self._started, 1),
            rounds=self.rounds,
            probes=self.probes,
            ok=ok,
            ok_ratio=round(ok / self.probes, 4) if self.probes else None,
            outcomes=dict(sorted(self.outcomes.items())),
            slowest_round_ms=round(self.slowest_round_ms, 1),
            policy_hash=self.policy_hash,
        )
        self._started = now
        self._reset()
