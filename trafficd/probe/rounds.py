"""What the agent says about its rounds and series: one round's counts (`Round`), the end-of-round log lines,
and which series are failing (`SeriesHealth`: `agent.series_failed` / `agent.series_recovered`, once per change)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from trafficd.model import REASONS, Sample
from trafficd.probe.stall import Stall
from trafficd.probe.target import ProbeResult
from trafficd.runtime.logs import get_logger

log = get_logger("agent")


@dataclass
class Round:
    number: int
    started: float
    policy_hash: str
    workers: int
    models: int
    outcomes: Counter[str] = field(default_factory=Counter)
    stalled: list[tuple[str, float, str]] = field(default_factory=list)  # (series, stall_s, kind) discarded
    slo_ms: tuple[float, float | None] = (float("inf"), None)  # the total and TTFT SLO thresholds (early records)

    def discard(self, s: Sample, stall: Stall) -> None:
        """A probe that overlapped a local stall measured the agent: counted as discarded, not written."""
        self.outcomes["discarded_stall"] += 1
        self.stalled.append((f"{s.worker}|{s.model}", stall.duration_s, stall.kind))


def log_discarded(region: str, rnd: Round, discarded_total: int) -> None:
    """`agent.samples_discarded_stall` for a round whose probes overlapped a local stall (nothing when none did)."""
    if not rnd.stalled:
        return
    log.warning(
        "agent.samples_discarded_stall",
        region=region,
        round=rnd.number,
        discarded=len(rnd.stalled),
        series=sorted({series for series, _, _ in rnd.stalled}),
        stall_ms=round(max(d for _, d, _ in rnd.stalled) * 1000.0, 1),
        kind=rnd.stalled[0][2],
        discarded_total=discarded_total,
    )


def log_completed(region: str, rnd: Round, probes: int, duration_ms: float) -> None:
    """`agent.round_completed` (debug): the round's counts by outcome."""
    log.debug(
        "agent.round_completed",
        region=region,
        round=rnd.number,
        policy_hash=rnd.policy_hash,
        workers=rnd.workers,
        models=rnd.models,
        probes=probes,
        ok=rnd.outcomes.get("ok", 0),
        failed=sum(n for outcome, n in rnd.outcomes.items() if outcome in REASONS),
        skipped=rnd.outcomes.get("skipped", 0),
        outcomes=dict(sorted(rnd.outcomes.items())),
        duration_ms=round(duration_ms, 1),
    )


class SeriesHealth:
    """Which series are failing, and why: a log line when a series changes between ok and failing."""

    def __init__(self) -> None:
        self.failing: dict[tuple[str, str], str] = {}

    def saw(self, result: ProbeResult) -> None:
        s = result.sample
        key = (s.worker, s.model)
        before = self.failing.get(key)
        if s.ok and before is not None:
            del self.failing[key]
            log.info("agent.series_recovered", region=s.region, worker=s.worker, model=s.model, was=before)
        elif not s.ok and before != s.reason:
            self.failing[key] = str(s.reason)
            log.warning(
                "agent.series_failed",
                region=s.region,
                worker=s.worker,
                model=s.model,
                reason=s.reason,
                status=s.status,
                total_ms=round(s.total_ms, 1),
                url=result.url,
                server_message=result.server_message,
                detail=result.detail,
            )
