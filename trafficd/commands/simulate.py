"""`trafficd simulate --policy FILE --timeline FILE`: replay window statistics through the real judge.

The timeline is JSON lines. Evidence, one line per region per evaluation:
    {"t": 30, "region": "us-east", "n": 1200, "p99_ms": 3400, "over_slo": 0.02, "error_rate": 0.001}
    optional: "ttft_p99_ms", "ttft_over_slo", "recent_over" + "recent_n" (fast rule), "stale": true,
    "unreadable": true, "headroom": 0.3
On-call actions, applied before the evaluation at their `t` (the same meaning as the commands):
    {"t": 10, "override": "drain", "region": "us-east", "for": "60s", "reason": "maintenance", "force": false}
    {"t": 40, "override": "undrain", "region": "us-east"}            (with "for": keep it serving that long)
    {"t": 50, "override": "freeze", "for": "5m", "reason": "incident"}   {"t": 60, "override": "unfreeze"}
Evaluations are the distinct `t` values in order (seconds; `now` = t). A region with no line at some `t` has no
evidence then (unknown: hold). Output: one JSON object per evaluation and region, on stdout.

When a line gives `ttft_p99_ms` but no `ttft_over_slo`, the p99 stands in for the exact count: over the TTFT SLO
means over the quantile (1.0), else 0.0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trafficd.cli import add_policy_argument, open_policy
from trafficd.decide.judge import ControllerState, Evaluation, evaluate
from trafficd.errors import TrafficdError
from trafficd.model import Override, Overrides, RegionEvidence
from trafficd.policy.schema import Policy, parse_duration


class TimelineError(TrafficdError, ValueError):
    """A timeline line that cannot be used; the message names the file and line."""


@dataclass
class Moment:
    t: float
    evidence: dict[str, RegionEvidence] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)


def _evidence(policy: Policy, d: dict[str, Any]) -> RegionEvidence:
    n = int(d.get("n", 0))
    ttft_p99 = d.get("ttft_p99_ms")
    ttft_over = d.get("ttft_over_slo")
    thr = policy.ttft_threshold_ms
    if ttft_over is None and ttft_p99 is not None and thr is not None:
        ttft_over = 1.0 if float(ttft_p99) > thr else 0.0
    return RegionEvidence(
        region=str(d["region"]),
        n=n,
        errors=round(float(d.get("error_rate", 0.0)) * n),
        over_slo_fraction=float(d.get("over_slo", 0.0)),
        p99_ms=None if d.get("p99_ms") is None else float(d["p99_ms"]),
        ttft_n=n if ttft_p99 is not None or ttft_over is not None else 0,
        ttft_over_slo_fraction=float(ttft_over or 0.0),
        ttft_p99_ms=None if ttft_p99 is None else float(ttft_p99),
        recent_over=int(d.get("recent_over", 0)),
        recent_n=int(d.get("recent_n", 0)),
        stale=bool(d.get("stale", False)),
        unreadable=bool(d.get("unreadable", False)),
        headroom=None if d.get("headroom") is None else float(d["headroom"]),
    )


def parse_timeline(policy: Policy, lines: Iterable[str], path: str = "<timeline>") -> list[Moment]:
    """Group the timeline's lines into evaluations, in `t` order."""
    moments: dict[float, Moment] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            d = json.loads(line)
            t = float(d["t"])
            if not math.isfinite(t):
                raise ValueError(f"t must be a finite number of seconds (got {d['t']!r})")
            m = moments.setdefault(t, Moment(t))
            if "override" in d:
                _check_action(policy, d)
                m.actions.append(d)
                continue
            if d.get("region") not in policy.regions:
                raise ValueError(f"region {d.get('region')!r} is not in the policy")
            m.evidence[str(d["region"])] = _evidence(policy, d)
        except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:  # any hostile line
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise TimelineError(f"{path}:{no}: {what}") from None
    return [moments[t] for t in sorted(moments)]


def _check_action(policy: Policy, d: dict[str, Any]) -> None:
    kind = d["override"]
    if kind not in ("drain", "undrain", "freeze", "unfreeze"):
        raise ValueError(f"override must be drain, undrain, freeze or unfreeze (got {kind!r})")
    if kind in ("drain", "undrain") and d.get("region") not in policy.regions:
        raise ValueError(f"region {d.get('region')!r} is not in the policy")
    if kind in ("drain", "freeze") and "for" not in d:
        raise ValueError(f'a {kind} needs \'for\', like "for": "60s"')
    if "for" in d:
        parse_duration(d["for"])


def _apply(overrides: Overrides, d: dict[str, Any], t: float) -> Overrides:
    kind = str(d["override"])
    reason = str(d.get("reason", f"simulated {kind}"))
    until = t + parse_duration(d["for"]) if "for" in d else 0.0
    by_region = dict(overrides.by_region)
    if kind == "freeze":
        return Overrides(Override("freeze", None, reason, until, "simulate", t), by_region)
    if kind == "unfreeze":
        return Overrides(None, by_region)
    region = str(d["region"])
    by_region.pop(region, None)
    if kind == "drain" or "for" in d:
        by_region[region] = Override(kind, region, reason, until, "simulate", t, bool(d.get("force", False)))
    return Overrides(overrides.freeze, by_region)


def replay(policy: Policy, moments: list[Moment]) -> Iterator[tuple[float, Evaluation]]:
    """Evaluate every moment in turn with the controller's own `evaluate`, threading state and overrides."""
    state = ControllerState()
    overrides = Overrides()
    for m in moments:
        for action in m.actions:
            overrides = _apply(overrides, action, m.t)
        evaluation = evaluate(policy, state, m.evidence, overrides, m.t)
        state = evaluation.state
        yield m.t, evaluation


def rows(policy: Policy, moments: list[Moment]) -> Iterator[dict[str, Any]]:
    """The output objects: one per evaluation and region."""
    for t, evaluation in replay(policy, moments):
        for d in evaluation.decisions:
            log = d.to_log()
            yield {
                "t": int(t) if t.is_integer() else t,
                "region": d.region,
                "state": log["state_after"],
                "serving_fraction": log["serving_fraction_after"],
                "weights": log["weights_after"],
                "decided_by": d.decided_by,
                "rule": d.rule,
                "guards": log["guards"],
                "reasons": log["reasons"],
                "state_before": log["state_before"],
                "serving_fraction_before": log["serving_fraction_before"],
                "verdict": log["verdict"],
                "triggers": log["triggers"],
                "n": log["n"],
                "p99_ms": log["p99_ms"],
                "error_rate": log["error_rate"],
            }


def _run(args: argparse.Namespace) -> int:
    policy = open_policy(args)
    try:
        with open(args.timeline, encoding="utf-8") as f:
            moments = parse_timeline(policy, f, args.timeline)  # TimelineError: exit 1, its message (trafficd.cli)
    except OSError as exc:
        raise TimelineError(f"{args.timeline}: cannot read the file: {exc.strerror}") from None
    for row in rows(policy, moments):
        sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="replay a timeline of window stats through the judge, guards and planner")
    add_policy_argument(p)
    p.add_argument("--timeline", required=True, help="JSON lines: one per region per evaluation")
    p.set_defaults(func=_run)
