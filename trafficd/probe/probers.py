"""The agent's prober and its probe slots: one per `probe` section, replaced when a reload changes the section.

A reload that changes `probe` builds a new `Prober` (its own connection pool, API key, TLS settings and concurrency
slots) for the next round; the old one is retired and closed once nothing uses it any more (the probes of rounds
already running, a model-list check). Settings that cannot be used (an unreadable API key or CA file) stop an agent
that has no prober yet (`AgentConfigError`, exit 78); later, they are logged and the previous prober is kept.

Events: `agent.config_failed`, `agent.prober_replaced`.
"""

from __future__ import annotations

from dataclasses import dataclass

from trafficd.errors import ConfigError
from trafficd.policy.schema import Probe as ProbeConfig
from trafficd.probe.credentials import SecretError, load_api_key
from trafficd.probe.prober import ProbeConfigError, Prober
from trafficd.probe.schedule import Slots
from trafficd.runtime.logs import get_logger

log = get_logger("agent")


class AgentConfigError(ConfigError):
    """The agent cannot probe as configured (API key unreadable, CA file unreadable): exit 78."""


@dataclass
class ProberSlot:
    """A prober, the probe settings it was built from, and how many users it has (closed when retired and idle)."""

    prober: Prober
    cfg: ProbeConfig
    sem: Slots  # probes in flight: cfg.concurrency, or what `auto` sizes (schedule.ConcurrencyControl)
    users: int = 0  # rounds and model-list checks using the prober: it is not closed under them
    retired: bool = False

    async def release(self) -> None:
        """One user is done with the prober; the last one closes a retired prober."""
        self.users -= 1
        if self.retired and self.users == 0:
            await self.prober.close()


class Probers:
    """The prober for the current `probe` settings of one region's agent."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.current: ProberSlot | None = None

    async def for_settings(self, cfg: ProbeConfig) -> ProberSlot:
        """The prober for these settings; a changed `probe` section (reload) builds a new one."""
        if self.current is not None and self.current.cfg == cfg:
            return self.current
        try:
            secret = load_api_key(cfg.auth)
            prober = await Prober(cfg, secret=secret).__aenter__()
        except (SecretError, ProbeConfigError) as exc:
            if self.current is None:
                log.error("agent.config_failed", region=self.region, error=str(exc))
                raise AgentConfigError(str(exc)) from None
            log.error("agent.config_failed", region=self.region, error=str(exc), kept="previous probe settings")
            self.current.cfg = cfg  # don't retry every round; a later reload can fix it
            return self.current
        old, self.current = self.current, ProberSlot(prober, cfg, Slots(cfg.max_in_flight))
        if old is not None:
            log.info("agent.prober_replaced", region=self.region)
            old.retired = True
            if old.users == 0:
                await old.prober.close()
        return self.current

    async def close(self) -> None:
        """The agent stops: close the current prober (retired ones closed with their last user)."""
        if self.current is not None:
            await self.current.prober.close()
