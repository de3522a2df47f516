"""The replay behind `trafficd simulate` (input formats: trafficd/commands/simulate.py): window lines grouped into
evaluations, or probes aggregated by the store's slice code, each judged by the controller's own `evaluate`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from trafficd.commands.simulate_input import (
    ACTION_FIELDS,
    CAPACITY_SOURCES,
    MAX_MS,
    MAX_RPS,
    MAX_T,
    WINDOW_FIELDS,
    InputError,
    Reading,
    flag,
    integer,
    known_fields,
    number,
    numbered,
    read_samples,
    region_of,
)
from trafficd.decide.evidence import window_as_slice
from trafficd.decide.judge import ControllerState, Evaluation, evaluate
from trafficd.model import Override, Overrides, RegionEvidence, Sample
from trafficd.policy.schema import Policy, parse_duration
from trafficd.stats.replay import replay_samples

TimelineError = InputError  # a line that cannot be used; the message names the file and line (exit 1)


@dataclass
class Moment:
    t: float
    evidence: dict[str, RegionEvidence] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)


def _evidence(policy: Policy, d: dict[str, Any]) -> RegionEvidence:
    """One window line → evidence, every field checked (finite, in range, known)."""
    known_fields(d, WINDOW_FIELDS, "window")
    region = region_of(policy, d)
    n = integer(d, "n", 0, 10**9)
    ttft_p99 = number(d, "ttft_p99_ms", 0.0, MAX_MS, required=False)
    ttft_over = number(d, "ttft_over_slo", 0.0, 1.0, required=False)
    thr = policy.ttft_threshold_ms
    if ttft_over is None and ttft_p99 is not None and thr is not None:
        ttft_over = 1.0 if ttft_p99 > thr else 0.0
    recent_n = integer(d, "recent_n", 0, 10**6)
    return RegionEvidence(
        region=region,
        n=n,
        errors=round((number(d, "error_rate", 0.0, 1.0, required=False) or 0.0) * n),
        over_slo_fraction=number(d, "over_slo", 0.0, 1.0, required=False) or 0.0,
        p99_ms=number(d, "p99_ms", 0.0, MAX_MS, required=False),
        ttft_n=n if ttft_p99 is not None or ttft_over is not None else 0,
        ttft_over_slo_fraction=ttft_over or 0.0,
        ttft_p99_ms=ttft_p99,
        recent_over=integer(d, "recent_over", 0, recent_n),
        recent_n=recent_n,
        stale=flag(d, "stale"),
        unreadable=flag(d, "unreadable"),
        headroom=number(d, "headroom", 0.0, 100.0, required=False),
        **_capacity_fields(policy, d),
    )


def _capacity_fields(policy: Policy, d: dict[str, Any]) -> dict[str, Any]:
    """Live capacity of a window line: `load_rps`, `headroom_rps`, `capacity` (live / stale / missing)."""
    load = number(d, "load_rps", 0.0, MAX_RPS, required=False)
    room = number(d, "headroom_rps", 0.0, MAX_RPS, required=False)
    source = d.get("capacity", "live" if load is not None else None)
    if source is None:
        return {}
    if source not in CAPACITY_SOURCES:
        raise ValueError(f"capacity: must be live, stale or missing (got {json.dumps(source)})")
    if source == "live" and load is None:
        raise ValueError("load_rps: missing; live capacity needs the region's load in requests/s")
    live = source == "live"
    return {
        "load_rps": load if live else None,
        "headroom_rps": room if live else None,
        "capacity_source": source,
        "capacity_age_s": 0.0 if live else None,
    }


def parse_timeline(policy: Policy, lines: Iterable[str], path: str = "<timeline>") -> list[Moment]:
    """Group the timeline's lines into evaluations, in `t` order."""
    moments: dict[float, Moment] = {}
    for no, d in numbered(lines, path):
        try:
            t = number(d, "t", 0.0, MAX_T)
            assert t is not None
            m = moments.setdefault(t, Moment(t))
            if "override" in d:
                _check_action(policy, d)
                m.actions.append(d)
                continue
            ev = _evidence(policy, d)
            if ev.region in m.evidence:
                raise ValueError(f"region: a second line for {ev.region} at t={t:g}; give one per evaluation")
            m.evidence[ev.region] = ev
        except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:  # any hostile line
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise TimelineError(f"{path}:{no}: {what}") from None
    return [moments[t] for t in sorted(moments)]


def _check_action(policy: Policy, d: dict[str, Any]) -> None:
    known_fields(d, ACTION_FIELDS, "override")
    kind = d["override"]
    if kind not in ("drain", "undrain", "freeze", "unfreeze"):
        raise ValueError(f"override: must be drain, undrain, freeze or unfreeze (got {json.dumps(kind)})")
    if kind in ("drain", "undrain"):
        region_of(policy, d)
    if kind in ("drain", "freeze") and "for" not in d:
        raise ValueError(f'for: a {kind} needs \'for\', like "for": "60s"')
    if "for" in d:
        parse_duration(d["for"])
    flag(d, "force")


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
    prev_t: float | None = None
    for i, m in enumerate(moments):
        for action in m.actions:
            overrides = _apply(overrides, action, m.t)
        step_s = policy.windows.evaluate_every if prev_t is None else m.t - prev_t
        share = min(1.0, step_s / policy.windows.trip)
        evidence = {r: window_as_slice(ev, i, share) for r, ev in m.evidence.items()}
        prev_t = m.t
        evaluation = evaluate(policy, state, evidence, overrides, m.t)
        state = evaluation.state
        yield m.t, evaluation


def rows(policy: Policy, moments: list[Moment]) -> Iterator[dict[str, Any]]:
    """The output objects: one per evaluation and region."""
    return _rows(replay(policy, moments))


def sample_rows(
    policy: Policy,
    samples: list[Sample],
    capacity: list[tuple[float, str, float, float | None, float | None]] = (),  # type: ignore[assignment]
) -> Iterator[dict[str, Any]]:
    """Probe-level input: aggregated by the store's slice/window code, judged by the controller's code."""
    frames = replay_samples(policy, samples)
    return _rows(replay_evidence(policy, with_readings(policy, frames, capacity) if capacity else frames))


def with_readings(
    policy: Policy,
    frames: Iterable[tuple[float, dict[str, RegionEvidence]]],
    readings: Sequence[Reading],
) -> Iterator[tuple[float, dict[str, RegionEvidence]]]:
    """Each frame's evidence with every region's newest capacity reading at or before it (stale past max_age)."""
    ordered = sorted(readings)
    for t, evidence in frames:
        newest = {r: (rt, load, room, kv) for rt, r, load, room, kv in ordered if rt <= t}
        out = dict(evidence)
        for r, (rt, load, room, kv) in newest.items():
            cfg = policy.capacity_for(r)
            stale = cfg is not None and t - rt > cfg.max_age
            out[r] = replace(
                out.get(r) or RegionEvidence(region=r, n=0),
                load_rps=None if stale else load,
                headroom_rps=None if stale else room,
                capacity_source="stale" if stale else "live",
                capacity_age_s=t - rt,
                kv_usage=kv,
            )
        yield t, out


def replay_evidence(
    policy: Policy, frames: Iterable[tuple[float, dict[str, RegionEvidence]]]
) -> Iterator[tuple[float, Evaluation]]:
    state = ControllerState()
    for t, evidence in frames:
        evaluation = evaluate(policy, state, evidence, Overrides(), t)
        state = evaluation.state
        yield t, evaluation


def _rows(evaluations: Iterable[tuple[float, Evaluation]]) -> Iterator[dict[str, Any]]:
    for t, evaluation in evaluations:
        for d in evaluation.decisions:
            log = d.to_log()
            yield {
                "t": int(t) if float(t).is_integer() else round(t, 6),
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
                "llr": log["llr"],
                **({"span_counts": log["span_counts"]} if log["verdict"] == "breach" else {}),  # the peer hold's input
                **({"capacity": log["capacity"]} if "capacity" in log else {}),
            }


def read_rows(policy: Policy, samples: str | None, timeline: str | None) -> Iterator[dict[str, Any]]:
    """The output rows of a probe-level file (`samples`) or else a window-level one (`timeline`)."""
    if samples:
        capacity: list[Reading] = []
        with open(samples, encoding="utf-8") as f:
            found = read_samples(policy, f, samples, capacity)
        return sample_rows(policy, found, capacity)
    assert timeline is not None
    with open(timeline, encoding="utf-8") as f:
        return rows(policy, parse_timeline(policy, f, timeline))
