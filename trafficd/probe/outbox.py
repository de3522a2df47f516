"""The agent's way out to the store: samples queued as probes finish, written every FLUSH_EVERY_S, heartbeats.

The sink (`store.SampleSink`) buffers and retries while Redis is unreachable; a sink that raises anyway keeps
the batch here for the next flush (at most MAX_PENDING samples, the oldest dropped first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from trafficd.model import Sample
from trafficd.runtime.logs import get_logger

log = get_logger("agent")

FLUSH_EVERY_S = 0.25
MAX_PENDING = 100_000  # samples kept for the sink while its write keeps failing


class SampleSinkLike(Protocol):
    async def write(self, samples: Sequence[Sample]) -> None: ...

    async def heartbeat(self, agent_id: str, region: str) -> None: ...


class Outbox:
    """Samples waiting for the next flush to the sink, and the agent's heartbeats."""

    def __init__(self, sink: SampleSinkLike, region: str, agent_id: str) -> None:
        self.sink = sink
        self.region = region
        self.agent_id = agent_id
        self.pending: list[Sample] = []

    def add(self, sample: Sample) -> None:
        self.pending.append(sample)

    async def heartbeat(self) -> None:
        try:
            await self.sink.heartbeat(self.agent_id, self.region)
        except Exception as exc:  # the sink's own errors; the loop must go on
            log.warning("agent.heartbeat_failed", region=self.region, error=f"{type(exc).__name__}: {exc}")

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            await self.sink.write(batch)
        except Exception as exc:  # keep them for the next flush (bounded)
            self.pending = (batch + self.pending)[-MAX_PENDING:]
            log.warning(
                "agent.write_failed",
                region=self.region,
                samples=len(batch),
                error=f"{type(exc).__name__}: {exc}",
            )

    async def flush_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY_S)
            await self.flush()
