"""`trafficd simulate --policy FILE (--timeline FILE | --samples FILE)`: replay evidence through the real judge.

Probe level (`--samples`), JSON lines of probes, aggregated by the store's own slice and window code
(stats/replay.py) and judged every `windows.evaluate_every` by the controller's `evaluate`:
    {"t": 1700000000.25, "region": "us-east", "worker": "w1", "model": "m", "ok": true, "reason": null,
     "total_ms": 1830.5, "ttft_ms": 240.0}
Window level (`--timeline`), for hand-written scenarios. Evidence, one line per region per evaluation:
    {"t": 30, "region": "us-east", "n": 1200, "p99_ms": 3400, "over_slo": 0.02, "error_rate": 0.001}
    optional: "ttft_p99_ms", "ttft_over_slo", "recent_over" + "recent_n" (fast rule), "stale": true,
    "unreadable": true, "headroom": 0.3 (a share: the unit rule); live capacity (docs/capacity.md): "load_rps": 100,
    "headroom_rps": 30, "capacity": "live" (the default with load_rps; or "stale", "missing")
Probe-level files may carry capacity readings, a region's live figures from their `t` on (stale after the
region's capacity.max_age): {"t": 1700000000, "region": "us-east", "load_rps": 100, "headroom_rps": 30}
On-call actions, applied before the evaluation at their `t` (the same meaning as the commands):
    {"t": 10, "override": "drain", "region": "us-east", "for": "60s", "reason": "maintenance", "force": false}
    {"t": 40, "override": "undrain", "region": "us-east"}            (with "for": keep it serving that long)
    {"t": 50, "override": "freeze", "for": "5m", "reason": "incident"}   {"t": 60, "override": "unfreeze"}
Evaluations are the distinct `t` values in order (seconds; `now` = t). A region with no line at some `t` has no
evidence then (unknown: hold). Output: one JSON object per evaluation and region, on stdout.
The judge consumes exact per-slice counts, each once; a window line stands for the probes new since the previous
evaluation: (t − previous t) / windows.trip of its `n`, in its proportions (over the SLO, errors, TTFT).

Every bad line (NaN, Infinity, a boolean where a number belongs, out-of-range values, unknown fields, repeated
keys, the same probe twice) is a `file:line: field: problem` error (simulate_input.py); the output is always JSON.
When a line gives `ttft_p99_ms` but no `ttft_over_slo`, the p99 stands in for the exact count: over the TTFT SLO
means over the quantile (1.0), else 0.0.
"""

from __future__ import annotations

import argparse
import json
import sys

from trafficd.cli import add_policy_argument, open_policy

# `simulate --help` imports only this module; the replay (the judge, the policy schema) is imported to run.


def _run(args: argparse.Namespace) -> int:
    from trafficd.commands.simulate_input import InputError
    from trafficd.commands.simulate_replay import read_rows

    policy = open_policy(args)
    try:
        out = read_rows(policy, args.samples, args.timeline)  # InputError: exit 1, its file:line message
    except OSError as exc:
        raise InputError(f"{args.samples or args.timeline}: cannot read the file: {exc.strerror}") from None
    for row in out:
        sys.stdout.write(json.dumps(row, allow_nan=False) + "\n")
    sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="replay a timeline of window stats through the judge, guards and planner")
    add_policy_argument(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--timeline", help="JSON lines of window statistics: one per region per evaluation")
    source.add_argument(
        "--samples", help="JSON lines of probes: t, region, worker, model, ok, reason, total_ms, ttft_ms"
    )
    p.set_defaults(func=_run)
