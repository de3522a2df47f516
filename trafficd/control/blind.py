"""Blind regions: one warning per episode when a region's evidence goes missing, naming the silent agents.

A region is *blind* while the judge finds no usable evidence for it (stale heartbeat or newest sample, the store
unreadable, no evidence at all). Unknown holds: its own serving fraction and the spill-over shares it receives
are kept as they are (the judge and planner do that); this module only says so, once when the episode starts
(`controller.region_blind`, warning) and once when it ends (`controller.region_sighted`), and keeps the
`trafficd_region_blind` gauge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trafficd.decide.judge import Decision
from trafficd.runtime import metrics
from trafficd.stats.reader import StatsReader

BLIND_RULES = frozenset({"stale", "unreadable", "no_evidence"})


def silent_agents(heartbeats: dict[str, float], now: float, stale_after_s: float) -> list[str]:
    """Agents silent for half the stale window or more. An agent heartbeats every probe round (well under a second
    by default), so one silent that long is not merely between rounds; half, not all of it, because a region goes
    blind when its newest *sample* passes `stale_after_s`, and the agent's last heartbeat can be a little younger
    than its last sample (the fault suite saw the whole-window rule name nobody)."""
    return sorted(a for a, at in heartbeats.items() if now - at > stale_after_s / 2)


@dataclass
class BlindWatch:
    log: Any
    blind: dict[str, float] = field(default_factory=dict)  # region → since

    async def update(self, decisions: Sequence[Decision], stats: StatsReader, stale_after_s: float, now: float) -> None:
        for d in decisions:
            is_blind = d.verdict.kind == "unknown" and bool(BLIND_RULES & set(d.verdict.rules))
            metrics.REGION_BLIND.labels(d.region).set(1.0 if is_blind else 0.0)
            if is_blind and d.region not in self.blind:
                self.blind[d.region] = now
                beats = await stats.heartbeats(d.region)
                held = {dst: share for dst, share in d.weights_after.items() if share > 0}
                self.log.warning(
                    "controller.region_blind",
                    region=d.region,
                    why=list(d.verdict.rules),
                    silent_agents=silent_agents(beats, now, stale_after_s),
                    agents_seen=sorted(beats),
                    serving_fraction_held=d.fraction_after,
                    users_to_held=held,
                )
            elif not is_blind and d.region in self.blind:
                since = self.blind.pop(d.region)
                self.log.info("controller.region_sighted", region=d.region, blind_s=round(now - since, 3))
