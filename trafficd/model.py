"""Value types shared by every stage: samples, evidence, region states, traffic matrix, records.

These are the contracts between the pure core (stats → judge → plan → records) and the adapters
(probe, Redis store, Route 53). They are frozen, slotted dataclasses with units in their field names and
carry no I/O. Anything that must survive a restart (controller state) converts to and from plain JSON dicts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# Reason codes of a failed probe (DESIGN §2). A successful probe has reason None.
REASONS: tuple[str, ...] = (
    "connect_error",
    "tls_error",
    "http_429",
    "http_4xx",
    "http_5xx",
    "error_body",
    "malformed_stream",
    "no_done",
    "empty_answer",
    "ttft_timeout",
    "stall_timeout",
    "total_timeout",
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe's outcome. A failed probe is a sample too: its latency is the deadline it hit."""

    region: str
    worker: str
    model: str
    t: float  # unix seconds at t0 (before the request was sent), from the agent's clock
    ok: bool
    reason: str | None  # one of REASONS when not ok
    total_ms: float  # t0 → [DONE]/final chunk, or the deadline value on a timeout
    ttft_ms: float | None = None  # t0 → first answer token (or first reasoning token, if the policy says so)
    max_gap_ms: float | None = None  # largest gap between chunks
    tokens: int = 0  # events with answer text received
    reasoning_tokens: int = 0  # events with reasoning text, reported apart
    connect_ms: float | None = None  # connection set-up (None when a pooled connection was reused)
    status: int | None = None  # HTTP status, None when no response
    # A probe still running past an SLO threshold is reported then (docs/stats.md "Early records"): `early`
    # marks such a record (counts only: it is not finished, so no error and no latency yet); `counted` says what
    # the probe's earlier records counted (sketch.COUNTED_*), which its later records never count again.
    early: bool = False
    counted: int = 0


class RegionStateName(enum.StrEnum):
    HEALTHY = "healthy"
    BREACHING = "breaching"  # over the SLO, not yet for long enough to trip
    DRAINING = "draining"  # tripped: serving fraction ramping down
    DRAINED = "drained"  # serving fraction at its floor
    RECOVERING = "recovering"  # below the recovery threshold: ramping back up
    UNKNOWN = "unknown"  # too little fresh evidence: hold


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """Exact counts of one time slice of a region (every series merged), as the store keeps them.

    The judge consumes each slice once (its cursor remembers the newest slice seen and how much of it was
    consumed), so overlapping windows never count the same probe twice.
    """

    slice_id: int  # floor(t / windows.slice)
    n: int
    over: int = 0  # total latency over the SLO threshold (a failed probe is recorded at its deadline)
    errors: int = 0
    ttft_over: int = 0  # TTFT over its SLO threshold (0 when no TTFT SLO)


@dataclass(frozen=True, slots=True)
class RegionEvidence:
    """What the judge knows about one region for one evaluation: exact per-slice counts plus window statistics.

    The judge decides on `slices` (exact counts, each consumed once); the window fields (over the trip window)
    explain the decision to humans and rank regions when `max_drained` slots are scarce.

    `over_slo_fraction` is exact (count over the threshold / n); the percentiles come from the histogram and
    are for humans. `stale` is true when the agents' heartbeats or newest sample are too old; `unreadable`
    when the store could not be read at all. Either makes the region unknown.
    """

    region: str
    n: int
    errors: int = 0
    over_slo_fraction: float = 0.0  # fraction of samples whose total latency is over the SLO threshold
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    ttft_n: int = 0
    ttft_over_slo_fraction: float = 0.0
    ttft_p99_ms: float | None = None
    recent_over: int = 0  # fast rule: how many of the last `recent_n` probes were over the SLO
    recent_n: int = 0
    newest_sample_age_s: float | None = None
    heartbeat_age_s: float | None = None
    stale: bool = False
    unreadable: bool = False
    headroom: float | None = None  # spare capacity as a fraction of own traffic, if known (simulate's unit rule)
    load_rps: float | None = None  # live: requests/s its workers complete (docs/capacity.md); None unless live
    headroom_rps: float | None = None  # live: requests/s more it can take within its capacity targets
    capacity_source: str | None = None  # "live", "stale", "missing" (no figures); None: no live capacity configured
    capacity_age_s: float | None = None  # age of the oldest worker figures behind load_rps / headroom_rps
    kv_usage: float | None = None  # the fullest worker's KV-cache usage (0..1), when published
    slices: tuple[SliceCounts, ...] = ()  # the accepted slices of the long window, oldest first (the judge's input)

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0


# Traffic matrix: for each source region (whose users the latency record sends there), the fraction of its
# users served by each destination region. Every row sums to 1. Identity = nothing drained.
TrafficMatrix = dict[str, dict[str, float]]


def identity_matrix(regions: list[str]) -> TrafficMatrix:
    return {src: {dst: (1.0 if dst == src else 0.0) for dst in regions} for src in regions}


@dataclass(frozen=True, slots=True)
class Record:
    """One Route 53 resource record set as trafficd sees it (the subset of fields we use)."""

    name: str  # fully qualified, with trailing dot, lower case
    type: str  # A, AAAA or CNAME
    set_identifier: str
    weight: int | None = None  # weighted routing
    region: str | None = None  # latency routing: the AWS region
    ttl: int | None = None  # None for alias records
    values: tuple[str, ...] = ()  # resource records (empty for alias records)
    alias_target: str | None = None  # DNS name of the alias target (same zone)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.type, self.set_identifier)


@dataclass(frozen=True, slots=True)
class Override:
    """An on-call override stored in Redis with an expiry."""

    kind: str  # "drain", "undrain" or "freeze"
    region: str | None  # None for freeze
    reason: str
    expires_at: float  # unix seconds
    created_by: str = ""
    created_at: float = 0.0
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "region": self.region,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "forced": self.forced,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Override:
        return cls(
            kind=str(d["kind"]),
            region=d.get("region"),
            reason=str(d.get("reason", "")),
            expires_at=float(d["expires_at"]),
            created_by=str(d.get("created_by", "")),
            created_at=float(d.get("created_at", 0.0)),
            forced=bool(d.get("forced", False)),
        )


@dataclass(frozen=True, slots=True)
class Overrides:
    """Every override in force at one evaluation."""

    freeze: Override | None = None
    by_region: dict[str, Override] = field(default_factory=dict)
