"""The judge's memory between evaluations: per-region state and the last traffic matrix (pure values).

The controller stores `ControllerState.to_dict()` in Redis as JSON so that a new leader continues where the old
one stopped (accumulated evidence and the slice cursor, hold-downs, cooldowns, serving fractions). `from_dict`
accepts what `to_dict` wrote and tolerates missing fields (defaults), so adding a field later keeps old states
readable (a state stored by the old rule loads with no accumulated evidence). Re-exported by
`trafficd.decide.judge`, which is where callers import them from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from trafficd.model import RegionStateName, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy


class Phase(enum.StrEnum):
    """The hysteresis behind the state names: not tripped, tripped (shedding/holding), recovering (ramping up)."""

    NORMAL = "normal"
    DOWN = "down"
    UP = "up"


@dataclass(frozen=True, slots=True)
class RegionState:
    name: RegionStateName = RegionStateName.HEALTHY
    serving_fraction: float = 1.0
    phase: Phase = Phase.NORMAL
    trip_llr: dict[str, float] = field(default_factory=dict)  # per signal: CUSUM evidence of the breach rate
    recover_llr: dict[str, float] = field(default_factory=dict)  # per signal: CUSUM evidence of the healthy rate
    cursor: int | None = None  # newest slice consumed (each slice's counts are consumed once)
    cursor_counts: tuple[int, int, int, int] = (0, 0, 0, 0)  # n, over, errors, ttft_over consumed from it
    # per span (one per peers.SPAN_FROM level) and region, this one included: the counts (n, over, errors,
    # ttft_over) it consumed since this region's breach evidence was last at or below that level (peers.py)
    span_counts: tuple[dict[str, tuple[int, int, int, int]], ...] = ()
    lean_until: float | None = None  # evidence leaned towards a breach recently (fail open counts it until then)
    last_step_at: float | None = None  # when the serving fraction last moved (cooldown)
    trip_times: tuple[float, ...] = ()  # recent trips (hold-down grows with them, each forgotten after decay)
    hold_down_until: float | None = None  # no recovery before this
    restored_at: float | None = None  # when the last trip ended back at full serving (recover.flap_window)
    since: float | None = None  # when `name` was entered
    reasons: tuple[str, ...] = ()  # why the last evaluation left it here

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": str(self.name),
            "serving_fraction": self.serving_fraction,
            "phase": str(self.phase),
            "trip_llr": dict(self.trip_llr),
            "recover_llr": dict(self.recover_llr),
            "cursor": self.cursor,
            "cursor_counts": list(self.cursor_counts),
            "span_counts": [{r: list(v) for r, v in span.items()} for span in self.span_counts],
            "lean_until": self.lean_until,
            "last_step_at": self.last_step_at,
            "trip_times": list(self.trip_times),
            "hold_down_until": self.hold_down_until,
            "restored_at": self.restored_at,
            "since": self.since,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegionState:
        def opt(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else float(v)

        return cls(
            name=RegionStateName(d.get("name", "healthy")),
            serving_fraction=float(d.get("serving_fraction", 1.0)),
            phase=Phase(d.get("phase", "normal")),
            trip_llr={str(k): float(v) for k, v in (d.get("trip_llr") or {}).items()},
            recover_llr={str(k): float(v) for k, v in (d.get("recover_llr") or {}).items()},
            cursor=None if d.get("cursor") is None else int(d["cursor"]),
            cursor_counts=_counts(d.get("cursor_counts")),
            span_counts=tuple(
                {str(r): _counts(v) for r, v in (span or {}).items()} for span in d.get("span_counts") or ()
            ),
            lean_until=opt("lean_until"),
            last_step_at=opt("last_step_at"),
            trip_times=tuple(float(t) for t in d.get("trip_times", ())),
            hold_down_until=opt("hold_down_until"),
            restored_at=opt("restored_at"),
            since=opt("since"),
            reasons=tuple(str(r) for r in d.get("reasons", ())),
        )


def _counts(raw: Any) -> tuple[int, int, int, int]:
    values = [int(v) for v in (raw or ())][:4]
    values += [0] * (4 - len(values))
    return (values[0], values[1], values[2], values[3])


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Every region's state plus the matrix last planned. Empty = every region healthy, serving fully."""

    regions: dict[str, RegionState] = field(default_factory=dict)
    matrix: TrafficMatrix = field(default_factory=dict)
    evaluated_at: float | None = None
    evaluations: int = 0
    global_episode: bool = False  # fail open: most regions' evidence leans towards a breach (a global problem)

    @classmethod
    def initial(cls, policy: Policy, now: float) -> ControllerState:
        """Every region healthy and serving fully, identity matrix (a first start, nothing stored)."""
        names = policy.region_names
        return cls(regions={r: RegionState(since=now) for r in names}, matrix=identity_matrix(names))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "regions": {r: s.to_dict() for r, s in self.regions.items()},
            "matrix": {src: dict(row) for src, row in self.matrix.items()},
            "evaluated_at": self.evaluated_at,
            "evaluations": self.evaluations,
            "global_episode": self.global_episode,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControllerState:
        at = d.get("evaluated_at")
        return cls(
            regions={str(r): RegionState.from_dict(s) for r, s in (d.get("regions") or {}).items()},
            matrix={
                str(src): {str(dst): float(v) for dst, v in row.items()} for src, row in (d.get("matrix") or {}).items()
            },
            evaluated_at=None if at is None else float(at),
            evaluations=int(d.get("evaluations", 0)),
            global_episode=bool(d.get("global_episode", False)),
        )

    def fractions(self) -> dict[str, float]:
        return {r: s.serving_fraction for r, s in self.regions.items()}
