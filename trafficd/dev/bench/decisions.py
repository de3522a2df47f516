"""Operating characteristic of the trip rule: `python -m trafficd.dev bench-decisions [--policy FILE] [--quick]`.

For one region of the policy (default: the first; 1 worker × 1 model at the default probe rate in the built-in
policy) it drives the judge's own code — `judge.judge_region` (each slice consumed once into the per-signal
evidence, the verdict) and `judge.machine` (trip, hold-down, recovery) — with per-slice counts drawn at the
region's probe rate, one evaluation per `windows.evaluate_every`, and applies what the guards do to one region
alone (one `ramp.max_step` per `ramp.cooldown`). Drawing counts per slice instead of single probes keeps 1,000
region-hours per point to about a minute of CPU; the rule only sees counts, so nothing is lost.

Latency shapes: *one-peaked* — probes over the SLO are slow successes; *two-peaked* (stall type) — they are
probes that hit the total deadline: they count as errors too and complete `deadlines.total` after they started.
A *hard stall* fails every probe started after the onset (each completes at its deadline).

Printed: false shifts (trips) per region-hour at 0.25 / 0.5 / 0.8 / 1.0 % over and the share of 6-hour spans with
more than one drain–restore cycle; detection rate and median / p90 / p99 delay (onset → first weight change) at
1.5 / 2 / 5 / 20 % over and for a hard stall; beside the 2 % point the sequential-test limit (Wald: threshold ÷
KL divergence per probe). Each point from ≥ 1,000 region-hours (`--quick`: 6, for the test that keeps this
command working).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from trafficd.decide import characteristic as ch
from trafficd.decide import guards
from trafficd.decide.judge import Phase, RegionState, judge_region, machine
from trafficd.decide.planner import EPS
from trafficd.model import RegionEvidence, SliceCounts
from trafficd.policy.schema import Policy, load_policy, parse_policy

FALSE_RATES = (0.0025, 0.005, 0.008, 0.01)
DETECT_RATES = (0.015, 0.02, 0.05, 0.20)
SHAPES = ("one-peaked", "two-peaked")
STALL = -1.0  # marker rate: every probe fails at its deadline
NORMAL_MS = 1000.0  # a probe within the SLO completes about a second after it started
SLOW_MS = 4000.0  # a one-peaked probe over the SLO

DEFAULT_POLICY = """version: 1
service: bench
probe: {targets: {allow_loopback: true}}
models: [{name: m}]
regions:
  us-east:
    workers: [{name: w1, url: "http://127.0.0.1:1"}]
    dns: {endpoint: us-east.lb.example.com, aws_region: us-east-1}
  eu-west:
    workers: [{name: w1, url: "http://127.0.0.1:1"}]
    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}
  ap-southeast:
    workers: [{name: w1, url: "http://127.0.0.1:1"}]
    dns: {endpoint: ap-southeast.lb.example.com, aws_region: ap-southeast-1}
dns: {zone_id: Z1, record_name: api.example.com.}
"""


@dataclass
class Region:
    """One simulated region: its judge state and serving fraction, fed one evaluation interval at a time."""

    policy: Policy
    name: str
    rng: random.Random
    shape: str
    state: RegionState
    step_s: float
    rate: float
    deadline_s: float
    sid: int = 0
    carry: float = 0.0  # fractional probes carried to the next interval
    late: dict[int, tuple[int, int]] | None = None  # interval → (probes, failures) completing then (deadline)

    def _draw(self, n: int, p: float) -> int:
        rnd = self.rng.random
        return sum(1 for _ in range(n) if rnd() < p)

    def _started(self) -> int:
        x = self.rate * self.step_s + self.carry
        n = int(x)
        self.carry = x - n
        return n

    def interval(self, p: float) -> tuple[int, int, int]:
        """(probes, over the SLO, errors) completing in the next interval when a share `p` is over (STALL: all)."""
        late = self.late if self.late is not None else {}
        self.late = late
        started = self._started()
        due = self.sid + max(1, round(self.deadline_s / self.step_s))  # when a probe hitting the deadline completes
        failing = started if p == STALL else 0
        over = 0 if p == STALL else self._draw(started, p)
        if self.shape == "two-peaked" and p != STALL:
            failing, over = over, 0
        if failing:
            prev = late.get(due, (0, 0))
            late[due] = (prev[0] + failing, prev[1] + failing)
        n, err = started - failing, 0
        done = late.pop(self.sid, None)
        if done is not None:
            n, over, err = n + done[0], over + done[1], done[1]
        return n, over, err

    def evaluate(self, n: int, over: int, err: int) -> tuple[bool, bool]:
        """One evaluation through the judge; (tripped now, serving fraction moved)."""
        self.sid += 1
        now = self.sid * self.step_s
        counts = SliceCounts(self.sid, n, over, err, 0)
        ev = RegionEvidence(self.name, n=n, errors=err, over_slo_fraction=over / n if n else 0.0, slices=(counts,))
        j = judge_region(self.policy, self.name, self.state, ev, now)
        new, direction, rule = machine(self.policy, j.state, j.verdict, now)
        before = self.state.serving_fraction
        after = before
        cooled = new.last_step_at is None or now - new.last_step_at >= self.policy.ramp.cooldown - EPS
        if direction and cooled:
            target = self.policy.ramp.min_fraction if direction < 0 else 1.0
            after = guards.step_towards(self.policy, before, target)
        moved = abs(after - before) > EPS
        if new.phase == Phase.UP and after >= 1.0 - EPS:
            new = replace(new, phase=Phase.NORMAL)
        self.state = replace(new, serving_fraction=after, last_step_at=now if moved else new.last_step_at)
        return rule in ("trip", "retrip"), moved


def _region(policy: Policy, name: str, shape: str, seed: int) -> Region:
    return Region(
        policy=policy,
        name=name,
        rng=random.Random(seed),
        shape=shape,
        state=RegionState(),
        step_s=policy.windows.evaluate_every,
        rate=ch.probe_rate(policy, name),
        deadline_s=policy.probe.deadlines.total,
    )


def stationary(policy: Policy, name: str, p: float, shape: str, hours: float, seed: int) -> dict[str, Any]:
    """Trips (false shifts) over `hours` region-hours at a constant share `p` over the SLO, and 6-hour spans with
    more than one drain–restore cycle."""
    reg = _region(policy, name, shape, seed)
    per_hour = round(3600.0 / reg.step_s)
    trips: list[int] = []
    for i in range(int(hours * per_hour)):
        tripped, _ = reg.evaluate(*reg.interval(p))
        if tripped:
            trips.append(i)
    span = 6 * per_hour
    spans = max(1, int(hours // 6))
    crowded = sum(1 for k in range(spans) if sum(1 for t in trips if k * span <= t < (k + 1) * span) > 1)
    return {"trips": len(trips), "hours": hours, "spans_6h": spans, "spans_over_one_cycle": crowded}


def detection(policy: Policy, name: str, p: float, shape: str, runs: int, seed: int) -> dict[str, Any]:
    """Delay from onset (uniform within an evaluation interval) to the first weight change, per run of one hour."""
    delays: list[float] = []
    misses = 0
    warm = round(600.0 / policy.windows.evaluate_every)
    horizon = round(3600.0 / policy.windows.evaluate_every)
    for r in range(runs):
        reg = _region(policy, name, shape, seed * 100_003 + r)
        for _ in range(warm):  # ten healthy minutes first: the statistics start where they usually are
            reg.evaluate(*reg.interval(policy.trip.healthy_rate))
        reg.state = replace(reg.state, serving_fraction=1.0, phase=Phase.NORMAL, last_step_at=None)
        offset = reg.rng.random() * reg.step_s  # onset this long before the end of the first interval
        hit = None
        for k in range(horizon):
            if k == 0 and p != STALL:
                n, over, err = reg.interval(
                    p * offset / reg.step_s + policy.trip.healthy_rate * (1 - offset / reg.step_s)
                )
            else:
                n, over, err = reg.interval(p)
            _, moved = reg.evaluate(n, over, err)
            if moved:
                hit = k * reg.step_s + offset
                break
        if hit is None:
            misses += 1
        else:
            delays.append(hit)
    return {"runs": runs, "delays": delays, "misses": misses}


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _task(args: tuple[str, str, str, float, str, float, int]) -> tuple[str, float, str, dict[str, Any]]:
    policy_text, name, kind, p, shape, size, seed = args
    policy = parse_policy(policy_text).policy
    if kind == "false":
        return kind, p, shape, stationary(policy, name, p, shape, size, seed)
    return kind, p, shape, detection(policy, name, p, shape, int(size), seed)


def run(policy_text: str, name: str, hours: float, workers: int) -> list[tuple[str, float, str, dict[str, Any]]]:
    tasks = [("false", p, s, hours) for p in FALSE_RATES for s in SHAPES]
    tasks += [("detect", p, s, hours) for p in (*DETECT_RATES, STALL) for s in SHAPES]
    argv = [(policy_text, name, k, p, s, size, i + 1) for i, (k, p, s, size) in enumerate(tasks)]
    if workers <= 1:
        return [_task(a) for a in argv]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_task, argv))


def _rows(results: list[tuple[str, float, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for kind, p, shape, r in results:
        label = "hard stall" if p == STALL else f"{p:.2%} over"
        if kind == "false":
            out.append(
                {
                    "condition": label,
                    "shape": shape,
                    "region_hours": r["hours"],
                    "false_shifts_per_region_hour": r["trips"] / r["hours"],
                    "false_shift_percent_of_region_hours": 100.0 * r["trips"] / r["hours"],
                    "spans_6h_with_more_than_one_cycle": r["spans_over_one_cycle"],
                    "spans_6h": r["spans_6h"],
                }
            )
        else:
            d = r["delays"]
            out.append(
                {
                    "condition": label,
                    "shape": shape,
                    "region_hours": r["runs"],
                    "detected_percent": 100.0 * len(d) / r["runs"],
                    "median_s": _quantile(d, 0.5),
                    "p90_s": _quantile(d, 0.9),
                    "p99_s": _quantile(d, 0.99),
                    "mean_s": sum(d) / len(d) if d else None,
                }
            )
    return out


def wald(policy: Policy, name: str) -> dict[str, float]:
    """The sequential-test limit at the breach rate: threshold ÷ KL(p1 ‖ p0) per probe, in seconds."""
    c = ch.characteristic(policy, name)
    return {"threshold": c.threshold, "wald_delay_s": c.wald_delay_s, "probes_per_s": c.probes_per_s}


def _fmt(x: float | None, unit: str = "s") -> str:
    return "—" if x is None else f"{x:.0f} {unit}"


def _print(rows: list[dict[str, Any]], limit: dict[str, float], elapsed_s: float, args: argparse.Namespace) -> None:
    print(
        f"trip rule operating characteristic — region {args.region}, {limit['probes_per_s']:g} probes/s, "
        f"threshold {limit['threshold']:g}; {os.cpu_count()} cores, {platform.python_version()}, {elapsed_s:.0f} s"
    )
    print("| condition | shape | region-hours | false shifts / region-hour | 6-h spans with > 1 cycle |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "false_shifts_per_region_hour" in r:
            print(
                f"| {r['condition']} | {r['shape']} | {r['region_hours']:g} | {r['false_shifts_per_region_hour']:.4f} "
                f"({r['false_shift_percent_of_region_hours']:.2f} %) | {r['spans_6h_with_more_than_one_cycle']} of "
                f"{r['spans_6h']} |"
            )
    print()
    print("| condition | shape | runs (1 h each) | detected | median | p90 | p99 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "detected_percent" in r:
            print(
                f"| {r['condition']} | {r['shape']} | {r['region_hours']} | {r['detected_percent']:.1f} % | "
                f"{_fmt(r['median_s'])} | {_fmt(r['p90_s'])} | {_fmt(r['p99_s'])} |"
            )
    two = [r for r in rows if r.get("condition") == "2.00% over" and r.get("mean_s")]
    for r in two:
        gap = 100.0 * (r["mean_s"] / limit["wald_delay_s"] - 1.0)
        print(
            f"2 % over, {r['shape']}: mean delay {r['mean_s']:.0f} s vs the sequential-test limit "
            f"{limit['wald_delay_s']:.0f} s (threshold ÷ KL per probe ÷ probe rate): {gap:+.1f} %"
        )


def _command(args: argparse.Namespace) -> int:
    text = DEFAULT_POLICY
    if args.policy:
        load_policy(args.policy)  # a bad policy fails here with its file:line messages
        with open(args.policy, encoding="utf-8") as f:
            text = f.read()
    policy = parse_policy(text).policy
    if args.load:  # live capacity columns: the spill table instead of the trip rule (dev/bench/spill.py)
        from trafficd.dev.bench import spill

        rows = spill.table(policy, spill.figures(args.load, "load"), spill.figures(args.headroom, "headroom"))
        print(json.dumps({"spill": rows}) if args.json else spill.render(rows))
        return 0
    args.region = args.region or policy.region_names[0]
    hours = 6.0 if args.quick else float(args.hours)
    started = time.perf_counter()
    rows = _rows(run(text, args.region, hours, 1 if args.quick else args.workers))
    elapsed = time.perf_counter() - started
    limit = wald(policy, args.region)
    if args.json:
        print(json.dumps({"rows": rows, "limit": limit, "elapsed_s": round(elapsed, 1)}, allow_nan=False))
    else:
        _print(rows, limit, elapsed, args)
    return 0


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--policy", help="policy file (default: 3 regions, 1 worker × 1 model, every default)")
    p.add_argument("--region", help="the region to simulate (default: the policy's first)")
    p.add_argument("--quick", action="store_true", help="6 region-hours per point, one process (for the test)")
    p.add_argument("--hours", type=float, default=1000.0, help="region-hours per point (default 1000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    p.add_argument("--load", help="REGION=REQ_PER_S,...: print where each drained region's load goes (by volume)")
    p.add_argument("--headroom", help="REGION=REQ_PER_S,...: each region's live headroom (with --load)")
    return p


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from trafficd.dev.cli import DEV_COMMANDS

    p = _parser(sub.add_parser("bench-decisions", help=DEV_COMMANDS["bench-decisions"].help))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.decisions")).parse_args()))
