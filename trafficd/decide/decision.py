"""What one evaluation decided (pure values): per region a `Decision`, for the whole fleet an `Evaluation`.

Both explain themselves as log fields (`to_log`): the controller logs one event per region per evaluation and one
summary event, `trafficd simulate` prints the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trafficd.decide import guards
from trafficd.decide.planner import EPS
from trafficd.decide.state import ControllerState
from trafficd.model import RegionEvidence, RegionStateName, TrafficMatrix


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # guards.BREACH / RECOVERED / OK / UNKNOWN
    rules: tuple[str, ...]  # signals whose evidence reached the threshold (latency, errors, ttft) or why unknown
    reasons: tuple[str, ...]
    severity: float = 0.0  # worst share of the trip window over its SLO (ranks regions for max_drained)


@dataclass(frozen=True, slots=True)
class Decision:
    """One region's decision at one evaluation, with everything needed to explain it."""

    region: str
    evidence: RegionEvidence | None
    verdict: Verdict
    state_before: RegionStateName
    state_after: RegionStateName
    fraction_before: float
    fraction_after: float
    weights_before: dict[str, float]
    weights_after: dict[str, float]
    decided_by: str  # the judge's rule or the last guard that changed the plan
    rule: str  # the judge's rule, before guards
    guards: tuple[str, ...]
    reasons: tuple[str, ...]
    hold_down_until: float | None
    llr: dict[str, dict[str, float]] = field(default_factory=dict)  # per signal: trip, recover, threshold
    consumed_n: int = 0  # probes consumed by this evaluation (each probe is consumed once)
    # per span and region: counts (n, over, errors, ttft_over) over this region's spans of breach evidence (the peer
    # hold's input, peers.py)
    span_counts: tuple[dict[str, tuple[int, int, int, int]], ...] = ()

    @property
    def changed(self) -> bool:
        return self.state_before != self.state_after or abs(self.fraction_after - self.fraction_before) > EPS

    def to_log(self) -> dict[str, Any]:
        ev = self.evidence
        out = self._fields(ev)
        if ev is not None and ev.capacity_source is not None:  # live capacity configured (docs/capacity.md)
            out["capacity"] = {
                "source": ev.capacity_source,
                "load_rps": ev.load_rps,
                "headroom_rps": ev.headroom_rps,
                "age_s": ev.capacity_age_s,
                "kv_usage": ev.kv_usage,
            }
        return out

    def _fields(self, ev: RegionEvidence | None) -> dict[str, Any]:
        return {
            "region": self.region,
            "p99_ms": None if ev is None else ev.p99_ms,
            "n": 0 if ev is None else ev.n,
            "error_rate": None if ev is None else round(ev.error_rate, 6),
            "over_slo_fraction": None if ev is None else ev.over_slo_fraction,
            "ttft_p99_ms": None if ev is None else ev.ttft_p99_ms,
            "consumed_n": self.consumed_n,
            "llr": self.llr,
            "span_counts": [{q: list(c) for q, c in span.items()} for span in self.span_counts],
            "verdict": self.verdict.kind,
            "triggers": list(self.verdict.rules),
            "state_before": str(self.state_before),
            "state_after": str(self.state_after),
            "serving_fraction_before": self.fraction_before,
            "serving_fraction_after": self.fraction_after,
            "weights_before": dict(self.weights_before),
            "weights_after": dict(self.weights_after),
            "decided_by": self.decided_by,
            "rule": self.rule,
            "guards": list(self.guards),
            "reasons": list(self.reasons),
            "hold_down_until": self.hold_down_until,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: ControllerState
    matrix: TrafficMatrix
    decisions: tuple[Decision, ...]
    guard_events: tuple[guards.GuardEvent, ...] = ()
    fail_open: bool = False
    frozen: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_log(self) -> dict[str, Any]:
        """The evaluation-wide facts (fail open, freeze, every guard change) for one summary log event."""
        return {
            "fail_open": self.fail_open,
            "frozen": self.frozen,
            "notes": list(self.notes),
            "guard_events": [e.to_log() for e in self.guard_events],
        }

    def decision(self, region: str) -> Decision:
        return next(d for d in self.decisions if d.region == region)

    @property
    def fractions(self) -> dict[str, float]:
        return {d.region: d.fraction_after for d in self.decisions}
