"""The stats-reader port: what the controller needs from the statistics store, and an in-memory implementation.

    StatsReader.evidence(now)        one `RegionEvidence` per policy region (all `unreadable` when the store fails)
    StatsReader.heartbeats(region)   agent id → last heartbeat (unix s) of one region, to name silent agents

`RedisStatsReader` is the production reader (the incremental `StatsView` plus the heartbeat hash);
`MemoryStatsReader` holds evidence a test sets, so controller tests about control logic need no store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from trafficd import keys
from trafficd.model import RegionEvidence
from trafficd.policy.schema import Policy
from trafficd.stats import capacity_store
from trafficd.stats.capacity import RegionCapacity
from trafficd.stats.client import TRANSIENT
from trafficd.stats.view import StatsView

__all__ = ["MemoryStatsReader", "RedisStatsReader", "StatsReader"]


class StatsReader(Protocol):
    async def evidence(self, now: float) -> dict[str, RegionEvidence]:
        """One `RegionEvidence` per policy region at `now`; never raises for a store failure (unreadable)."""
        ...

    async def heartbeats(self, region: str) -> dict[str, float]:
        """Agent id → last heartbeat (unix s) for `region`; empty when none or unreadable."""
        ...


class RedisStatsReader:
    """The Redis store as a `StatsReader`: `StatsView` for the windows, one HGETALL for a region's heartbeats."""

    def __init__(self, client: Any, policy: Policy) -> None:
        self.client, self.policy = client, policy
        self.view = StatsView(client, policy)

    async def evidence(self, now: float) -> dict[str, RegionEvidence]:
        """The view's evidence with each region's live capacity (load and headroom in req/s) filled in."""
        evidence = await self.view.evidence(now)
        return await with_capacity(self.client, self.policy, evidence, now)

    async def heartbeats(self, region: str) -> dict[str, float]:
        try:
            raw = await self.client.hgetall(
                keys.heartbeat_key(self.policy.redis.key_prefix, self.policy.service, region)
            )
        except TRANSIENT:
            return {}
        return {_text(k): float(v) for k, v in raw.items()}


@dataclass
class MemoryStatsReader:
    """Evidence and heartbeats set by a test; a region without evidence has none (n = 0)."""

    by_region: dict[str, RegionEvidence] = field(default_factory=dict)
    agents: dict[str, dict[str, float]] = field(default_factory=dict)
    regions: tuple[str, ...] = ()

    def set(self, evidence: Mapping[str, RegionEvidence]) -> None:
        self.by_region.update(evidence)

    async def evidence(self, now: float) -> dict[str, RegionEvidence]:
        names = self.regions or tuple(self.by_region)
        return {r: self.by_region.get(r, RegionEvidence(region=r, n=0)) for r in names}

    async def heartbeats(self, region: str) -> dict[str, float]:
        return dict(self.agents.get(region, {}))


async def with_capacity(
    client: Any, policy: Policy, evidence: dict[str, RegionEvidence], now: float
) -> dict[str, RegionEvidence]:
    """Fill load_rps / headroom_rps / capacity_source from the agents' figures (stats/capacity_store.py); a region
    whose figures cannot be read is `stale` (the planner then falls back to the declared headroom)."""
    try:
        live = await capacity_store.read(client, policy, now)
    except TRANSIENT:
        live = {r: RegionCapacity("stale") for r in policy.region_names if policy.capacity_for(r) is not None}
    out = dict(evidence)
    for r, cap in live.items():
        if r in out:
            out[r] = replace(
                out[r],
                load_rps=cap.load_rps,
                headroom_rps=cap.headroom_rps,
                capacity_source=cap.source,
                capacity_age_s=cap.age_s,
                kv_usage=cap.kv_usage,
            )
    return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
