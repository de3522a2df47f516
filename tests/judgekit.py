"""Helpers for the judge/guards/planner tests: a small policy with short windows, evidence builders, a runner.

`run` feeds window-level evidence to the slice-consuming judge the way `trafficd simulate` does: each evaluation
adds one slice holding evaluate_every / windows.trip of the window's probes (100 of n=1000 here). `slow` (20 % over)
trips on its first evaluation; `good` gathers evidence of health at ~1.5 per evaluation (threshold 12.88).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import kit

from trafficd.decide.evidence import window_as_slice
from trafficd.decide.judge import ControllerState, Evaluation, evaluate
from trafficd.model import Override, Overrides, RegionEvidence
from trafficd.policy.schema import Policy

REGIONS = ("us-east", "eu-west", "ap-southeast")

BASE: dict[str, Any] = kit.policy_doc(
    service="judge-test",
    slo={"total_p99": "3s", "error_rate": "1%"},
    windows={"evaluate_every": "1s", "slice": "1s", "trip": "10s", "min_samples": 100},
    trip={"evaluations": 2, "fast_rule": {"over": 3, "of_last": 20}},
    recover={"below": "80%", "evaluations": 4, "hold_down": "5s", "hold_down_max": "40s"},
    ramp={"max_step": "50%", "cooldown": "2s"},
    guards={"min_serving_regions": 1, "max_drained": 1, "fail_open_share": "75%"},
)


def make_policy(**sections: Any) -> Policy:
    """The base test policy with sections deep-merged over it (durations and percentages as strings)."""
    return kit.as_policy(kit.merge(copy.deepcopy(BASE), sections))


def good(region: str, n: int = 1000, p99_ms: float = 1500.0, **kw: Any) -> RegionEvidence:
    return RegionEvidence(region=region, n=n, over_slo_fraction=0.0, p99_ms=p99_ms, **kw)


def slow(region: str, n: int = 1000, over: float = 0.2, p99_ms: float = 4000.0, **kw: Any) -> RegionEvidence:
    return RegionEvidence(region=region, n=n, over_slo_fraction=over, p99_ms=p99_ms, **kw)


def drain(region: str, until: float, *, forced: bool = False, reason: str = "test") -> Override:
    return Override(kind="drain", region=region, reason=reason, expires_at=until, forced=forced)


def run(
    policy: Policy,
    frames: Iterable[Mapping[str, RegionEvidence]],
    *,
    start: float = 0.0,
    every_s: float = 1.0,
    overrides: Overrides | None = None,
    state: ControllerState | None = None,
) -> list[Evaluation]:
    """Evaluate one frame of evidence per `every_s` seconds, threading the state through."""
    out = []
    st = state or ControllerState()
    t = start
    share = every_s / policy.windows.trip
    for frame in frames:
        sid = int(t // policy.windows.slice)
        given = {r: window_as_slice(e, sid, share) for r, e in frame.items()}
        ev = evaluate(policy, st, given, overrides or Overrides(), t)
        out.append(ev)
        st = ev.state
        t += every_s
    return out


def frame(*evidence: RegionEvidence, fill_good: bool = True) -> dict[str, RegionEvidence]:
    """Evidence for one evaluation; regions not given are healthy."""
    out = {e.region: e for e in evidence}
    if fill_good:
        for r in REGIONS:
            out.setdefault(r, good(r))
    return out
