"""How much one agent probes, and saying so when it cannot keep up (pure, except the log and metric calls).

* **Shards.** Several agents may probe one region: `trafficd agent --region R --shard I/N` (or the systemd
  instance `trafficd-agent@R:IofN`, since `--region R:IofN` is read the same way) probes only the series whose
  stable hash (SHA-256 of `worker|model`, not Python's per-process `hash`) falls in shard I of N. Each series is
  probed by exactly one of the N agents, whichever host runs them, so a region of 1,000 series is split without
  double counting; agents with different N would overlap, so run one N per region.
* **Capacity.** A round needs about `series × expected probe duration ÷ interval` probes in flight
  (`needed_concurrency`); with fewer slots, probes wait for a slot until their round's interval ends and are then
  skipped. `SkipWatch` turns skipped probes into one `agent.falling_behind` warning per episode (with the
  concurrency the measured probe durations call for) and `agent.caught_up` when a round skips nothing again;
  `trafficd_probes_skipped_total{region}` counts every skipped probe.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

HEADROOM = 1.25  # slots beyond the average need: durations vary, jitter bunches starts


class ShardError(ValueError):
    """A shard spec that is not I/N (or IofN) with 1 ≤ I ≤ N."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*(?:/|of)\s*(\d+)\s*", text)
        if not m:
            raise ShardError(f"shard {text!r}: expected I/N or IofN, e.g. 1/3")
        index, count = int(m.group(1)), int(m.group(2))
        if not 1 <= index <= count:
            raise ShardError(f"shard {text!r}: I must be between 1 and N (e.g. 1/3, 2/3, 3/3)")
        return cls(index, count)

    def owns(self, worker: str, model: str) -> bool:
        """Whether this shard probes the series (worker, model)."""
        return self.count == 1 or shard_of(worker, model, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(worker: str, model: str, count: int) -> int:
    """The 1-based shard of a series among `count`: stable across processes, hosts and Python versions."""
    digest = hashlib.sha256(f"{worker}|{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def split_region_arg(text: str) -> tuple[str, Shard | None]:
    """`us-east` → (us-east, None); `us-east:2of3` → (us-east, 2/3) (the systemd instance form)."""
    region, sep, spec = text.rpartition(":")
    if not sep or not re.fullmatch(r"\s*\d+\s*(?:/|of)\s*\d+\s*", spec):
        return text, None
    return region, Shard.parse(spec)


def needed_concurrency(series: int, expected_s: float, interval_s: float) -> int:
    """Probes in flight a round needs: series × expected duration ÷ interval, with HEADROOM (at least 1)."""
    if series <= 0 or interval_s <= 0:
        return 1
    return max(1, math.ceil(series * max(expected_s, 0.0) / interval_s * HEADROOM))


@dataclass
class SkipWatch:
    """Skipped probes as episodes: one warning when they start, one line when a round skips none again."""

    region: str
    log: Any
    counter: Any = None  # a prometheus Counter with a `region` label, or None
    behind: bool = False
    skipped_in_episode: int = 0
    skipped_total: int = 0
    durations: list[float] = field(default_factory=list)

    def probe_took(self, seconds: float) -> None:
        """A finished probe's duration (the last 256 are kept to size the concurrency needed)."""
        self.durations.append(seconds)
        if len(self.durations) > 256:
            del self.durations[:128]

    def expected_s(self) -> float:
        return sum(self.durations) / len(self.durations) if self.durations else 0.0

    def round_done(self, *, round_number: int, probes: int, skipped: int, concurrency: int, interval_s: float) -> None:
        if skipped:
            self.skipped_total += skipped
            self.skipped_in_episode += skipped
            if self.counter is not None:
                self.counter.labels(self.region).inc(skipped)
            if not self.behind:
                self.behind = True
                self.log.warning(
                    "agent.falling_behind",
                    region=self.region,
                    round=round_number,
                    probes=probes,
                    skipped=skipped,
                    concurrency=concurrency,
                    needed_concurrency=needed_concurrency(probes, self.expected_s(), interval_s),
                    mean_probe_ms=round(self.expected_s() * 1000.0, 1),
                    interval_s=interval_s,
                    hint="raise probe.concurrency, lengthen probe.interval, or split the region with --shard I/N",
                )
            return
        if self.behind:
            self.log.info("agent.caught_up", region=self.region, round=round_number, skipped=self.skipped_in_episode)
            self.behind = False
            self.skipped_in_episode = 0
