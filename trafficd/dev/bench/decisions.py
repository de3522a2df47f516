"""Operating characteristic of the trip rule: `python -m trafficd.dev bench-decisions [--policy FILE] [--quick]`.

It drives every region of the policy (default: three regions, 1 worker × 1 model each at the default probe rate)
through the controller's own `judge.evaluate` — evidence, phase machine, every guard, planner — once per
`windows.evaluate_every`, with per-slice counts drawn at each region's probe rate (decisions_sim.py; the
experiments are in decisions_runs.py). The region under test is the policy's first; the others probe at the healthy
rate unless a row says otherwise. Drawing counts per slice instead of replaying single probes through Redis keeps
1,000 region-hours per point to about a minute of CPU; the judge only sees counts, so nothing it decides on is lost.

Printed: false shifts (A's serving fraction leaving 1) per region-hour at 0.25 / 0.5 / 0.8 / 1.0 % over, the share of
A's time below full serving, the most shifts and drain–restore cycles in any 6-hour span; detection rate and median
/ p90 / p99 delay (onset → first weight change) at 1.5 / 2 / 5 / 20 % over and for a hard stall, beside the 2 %
point the sequential-test limit (Wald: threshold ÷ KL divergence per probe; two-peaked: plus the deadline a probe
over the SLO takes to report); fail open with every region at 2 / 3 % over; the max_drained swap (A drained at the
breach rate, then B stalls); after a global episode. Each point from ≥ 1,000 region-hours (`--quick`: a few, for the
test that keeps this command working). Both latency shapes (one-peaked, two-peaked) throughout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from trafficd.decide import characteristic as ch
from trafficd.dev.bench import decisions_runs as runs
from trafficd.dev.bench.decisions_sim import STALL
from trafficd.policy.schema import Policy, load_policy, parse_policy

FALSE_RATES = (0.0025, 0.005, 0.008, 0.01)
DETECT_RATES = (0.015, 0.02, 0.05, 0.20)
FAIL_OPEN_RATES = (0.02, 0.03)
SHAPES = ("one-peaked", "two-peaked")

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


Task = tuple[str, str, str, float, str, float, int]
Result = tuple[str, float, str, dict[str, Any]]


def _task(args: Task) -> Result:
    policy_text, _name, kind, p, shape, size, seed = args
    policy = parse_policy(policy_text).policy
    n = int(size)
    if kind == "false":
        quiet = p < policy.trip.healthy_rate * 1.5  # nothing trips: every region at p, counted separately
        return kind, p, shape, runs.stationary(policy, p, shape, size, seed, everywhere=quiet)
    if kind == "detect":
        return kind, p, shape, runs.detection(policy, p, shape, n, seed)
    if kind == "fail_open":
        return kind, p, shape, runs.fail_open(policy, p, shape, max(1, math.ceil(n / len(policy.region_names))), seed)
    if kind == "swap":
        return kind, p, shape, runs.swap(policy, shape, n, seed)
    stays = kind == "episode_stays"
    per_run_h = len(policy.region_names) * 1.75  # 10 min warm-up + 20 min episode + ~15 min to its end + 1 h after
    return kind, p, shape, runs.after_episode(policy, shape, max(1, math.ceil(n / per_run_h)), seed, stays)


def tasks(hours: float, only: str | None = None) -> list[tuple[str, float, str, float]]:
    out = [("false", p, s, hours) for p in FALSE_RATES for s in SHAPES]
    out += [("detect", p, s, hours) for p in (*DETECT_RATES, STALL) for s in SHAPES]
    out += [("fail_open", p, s, hours) for p in FAIL_OPEN_RATES for s in SHAPES]
    out += [(k, 0.0, s, hours) for k in ("swap", "episode_healthy", "episode_stays") for s in SHAPES]
    return [t for t in out if selected(t, only)]


def selected(task: tuple[str, float, str, float], only: str | None) -> bool:
    """`--only KIND[:RATE[:SHAPE]],…` (RATE a share such as 0.02, or `stall`): whether a row is to be run."""
    if not only:
        return True
    kind, p, shape, _ = task
    rate = "stall" if p == STALL else f"{p:g}"
    return any(
        want[0] == kind and (len(want) < 2 or want[1] == rate) and (len(want) < 3 or want[2] == shape)
        for want in (w.strip().split(":") for w in only.split(","))
    )


def run(policy_text: str, name: str, hours: float, workers: int, only: str | None = None) -> list[Result]:
    todo = tasks(hours, only)
    # the slowest first, so that the pool finishes together
    order = sorted(range(len(todo)), key=lambda i: todo[i][0] != "false")
    argv = [(policy_text, name, *todo[i], i + 1) for i in order]
    if workers <= 1:
        out = [_task(a) for a in argv]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            out = list(pool.map(_task, argv))
    back = dict(zip(order, out, strict=True))
    return [back[i] for i in range(len(todo))]


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def upper_bound_95(k: int, n: int) -> float:
    """Clopper–Pearson: the upper end of the exact two-sided 95 % interval for a rate seen k times in n trials
    (the p at which k or fewer would be seen with probability 2.5 %; 3 / n, the rule of three, is close for k = 0)."""
    if k >= n:
        return 1.0

    def at_most_k(p: float) -> float:  # P(X <= k), X ~ Binomial(n, p), summed in logs
        log_choose = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
        log_terms = [c + i * math.log(p) + (n - i) * math.log1p(-p) for i, c in enumerate(log_choose)]
        top = max(log_terms)
        return math.exp(top) * sum(math.exp(t - top) for t in log_terms)

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at_most_k(mid) > 0.025 else (lo, mid)
    return hi


def _delays(d: list[float], n: int) -> dict[str, Any]:
    return {
        "detected_percent": 100.0 * len(d) / n if n else 0.0,
        "median_s": _quantile(d, 0.5),
        "p90_s": _quantile(d, 0.9),
        "p99_s": _quantile(d, 0.99),
        "mean_s": sum(d) / len(d) if d else None,
    }


def _row(kind: str, p: float, shape: str, r: dict[str, Any]) -> dict[str, Any]:
    label = "hard stall" if p == STALL else f"{p:.2%} over"
    if kind == "false":
        return {
            "kind": kind,
            "condition": label,
            "shape": shape,
            "region_hours": r["hours"],
            "false_shifts_per_region_hour": r["shifts"] / r["hours"],
            "false_shift_percent_of_region_hours": 100.0 * r["shifts"] / r["hours"],
            "shed_percent_of_time": 100.0 * r["shed_share"],
            "cycles": r["cycles"],
            "spans_6h_with_more_than_one_shift": r["spans_over_one_cycle"],
            "spans_6h": r["spans_6h"],
            "max_shifts_in_any_6h": r["max_shifts_in_6h"],
            "max_cycles_in_any_6h": r["max_cycles_in_6h"],
        }
    if kind == "detect":
        held = [h for h in r.get("held", ()) if h > 0]
        return (
            {"kind": kind, "condition": label, "shape": shape, "region_hours": r["runs"]}
            | _delays(r["delays"], r["runs"])
            | {
                "held_percent": 100.0 * len(held) / len(r["delays"]) if r["delays"] else 0.0,
                "held_median_s": _quantile(held, 0.5),
                "held_p90_s": _quantile(held, 0.9),
                "held_max_s": max(held, default=None),
            }
        )
    if kind == "fail_open":
        return {
            "kind": kind,
            "condition": f"every region at {p:.0%} over",
            "shape": shape,
            "region_hours": r["region_hours"],
            "runs": r["runs"],
            "runs_with_a_weight_change": r["runs_moved"],
            "runs_with_a_weight_change_percent": 100.0 * r["runs_moved"] / r["runs"],
            "runs_with_a_weight_change_upper_95_percent": 100.0 * upper_bound_95(r["runs_moved"], r["runs"]),
            "region_shifts": r["region_shifts"],
            "episode_percent_of_time": 100.0 * r["episode_share"],
        }
    if kind == "swap":
        return {
            "kind": kind,
            "condition": "max_drained swap: A drained at the breach rate, then B stalls",
            "shape": shape,
            "region_hours": r["runs"],
            "max_drained_exceeded": r["over_limit"],
        } | _delays(r["delays"], r["runs"])
    out = {
        "kind": kind,
        "condition": "after a global episode: "
        + ("A stays at the breach rate" if kind == "episode_stays" else "every region healthy again"),
        "shape": shape,
        "region_hours": round(r["runs"] * 1.75 * 3),
        "runs": r["runs"],
        "episodes": r["episodes"],
        "shifts_during_onset": r["shifts_during"],
        "shifts_after": r["shifts_after"],
    }
    if kind == "episode_stays":
        out |= _delays(r["delays"], r["episodes"])
    return out


def wald(policy: Policy, name: str) -> dict[str, float]:
    """The sequential-test limit at the breach rate: threshold ÷ KL(p1 ‖ p0) per probe, in seconds; a probe over
    the SLO is known to be over when it passes the SLO threshold (the agent's early record), so from the onset the
    two-peaked limit adds that threshold (its probes are still running then)."""
    c = ch.characteristic(policy, name)
    return {
        "threshold": c.threshold,
        "wald_delay_s": c.wald_delay_s,
        "wald_delay_two_peaked_s": c.wald_delay_s + policy.slo_threshold_ms / 1000.0,
        "probes_per_s": c.probes_per_s,
    }


def _fmt(x: float | None, unit: str = "s") -> str:
    return "—" if x is None else f"{x:.0f} {unit}"


def _false_table(rows: list[dict[str, Any]]) -> None:
    print("| condition | shape | region-hours | false shifts / region-hour | time shed | most shifts / cycles in 6 h |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "false":
            print(
                f"| {r['condition']} | {r['shape']} | {r['region_hours']:g} | {r['false_shifts_per_region_hour']:.4f} "
                f"({r['false_shift_percent_of_region_hours']:.2f} %) | {r['shed_percent_of_time']:.2f} % | "
                f"{r['max_shifts_in_any_6h']} / {r['max_cycles_in_any_6h']} |"
            )


def _delay_table(rows: list[dict[str, Any]]) -> None:
    print("| condition | shape | runs | detected | median | p90 | p99 | mean |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "detected_percent" in r:
            n = r.get("episodes", r["region_hours"])
            print(
                f"| {r['condition']} | {r['shape']} | {n} | {r['detected_percent']:.1f} % | "
                f"{_fmt(r['median_s'])} | {_fmt(r['p90_s'])} | {_fmt(r['p99_s'])} | {_fmt(r['mean_s'])} |"
            )


def _other_lines(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["kind"] == "detect" and r["held_percent"]:
            print(
                f"{r['condition']}, {r['shape']}: trip held by the peer hold (a global problem suspected) in "
                f"{r['held_percent']:.1f} % of the detected runs, for a median {_fmt(r['held_median_s'])}, "
                f"p90 {_fmt(r['held_p90_s'])}, at most {_fmt(r['held_max_s'])}"
            )
        elif r["kind"] == "fail_open":
            print(
                f"{r['condition']}, {r['shape']}: weights moved in {r['runs_with_a_weight_change']} of {r['runs']} "
                f"one-hour runs ({r['runs_with_a_weight_change_percent']:.2f} %, 95 % upper bound "
                f"{r['runs_with_a_weight_change_upper_95_percent']:.2f} %; {r['region_hours']} region-hours, "
                f"{r['region_shifts']} region shifts); "
                f"global episode {r['episode_percent_of_time']:.1f} % of the time"
            )
        elif r["kind"] == "swap":
            print(f"{r['condition']}, {r['shape']}: max_drained exceeded {r['max_drained_exceeded']} times")
        elif r["kind"].startswith("episode"):
            print(
                f"{r['condition']}, {r['shape']}: {r['episodes']} episodes in {r['runs']} runs; shifts before the "
                f"episode was recognised {r['shifts_during_onset']}, after it ended {r['shifts_after']}"
            )


def _print(rows: list[dict[str, Any]], limit: dict[str, float], elapsed_s: float, region: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"trip rule operating characteristic — full judge.evaluate, region under test {region}, "
        f"{limit['probes_per_s']:g} probes/s, threshold {limit['threshold']:g}; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {elapsed_s:.0f} s, load average at the end {load:.1f}"
    )
    _false_table(rows)
    print()
    _delay_table(rows)
    print()
    _other_lines(rows)
    for r in rows:
        if r["kind"] == "detect" and r["condition"] == "2.00% over" and r.get("mean_s"):
            key = "wald_delay_two_peaked_s" if r["shape"] == "two-peaked" else "wald_delay_s"
            gap = 100.0 * (r["mean_s"] / limit[key] - 1.0)
            plus = " + the SLO threshold a probe runs before it is over it" if r["shape"] == "two-peaked" else ""
            print(
                f"2 % over, {r['shape']}: mean delay {r['mean_s']:.0f} s vs the sequential-test limit "
                f"{limit[key]:.0f} s (threshold ÷ KL per probe ÷ probe rate{plus}): {gap:+.1f} %"
                f" ({100.0 * (r['mean_s'] / limit['wald_delay_s'] - 1.0):+.1f} % vs {limit['wald_delay_s']:.0f} s)"
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
    region = policy.region_names[0]
    hours = 6.0 if args.quick else float(args.hours)
    started = time.perf_counter()
    rows = [_row(*r) for r in run(text, region, hours, 1 if args.quick else args.workers, args.only)]
    elapsed = time.perf_counter() - started
    limit = wald(policy, region)
    if args.json:
        print(json.dumps({"rows": rows, "limit": limit, "elapsed_s": round(elapsed, 1)}, allow_nan=False))
    else:
        _print(rows, limit, elapsed, region)
    return 0


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--policy", help="policy file (default: 3 regions, 1 worker × 1 model, every default)")
    p.add_argument("--quick", action="store_true", help="6 region-hours per point, one process (for the test)")
    p.add_argument("--hours", type=float, default=1000.0, help="region-hours per point (default 1000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    p.add_argument("--only", help="run only these rows: KIND[:RATE[:SHAPE]],… e.g. detect:0.02:two-peaked,detect:stall")
    p.add_argument("--load", help="REGION=REQ_PER_S,...: print where each drained region's load goes (by volume)")
    p.add_argument("--headroom", help="REGION=REQ_PER_S,...: each region's live headroom (with --load)")
    return p


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from trafficd.dev.cli import DEV_COMMANDS

    p = _parser(sub.add_parser("bench-decisions", help=DEV_COMMANDS["bench-decisions"].help))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.decisions")).parse_args()))
