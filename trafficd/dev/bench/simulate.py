"""Probe-level replay benchmark: `python -m trafficd.dev bench-simulate [--runs N] [--json]`.

Writes one hour × 3 regions × 2 probes/s of probe samples (21,600 JSON lines, 0.8 % over the SLO, one-peaked) and
runs `trafficd simulate --samples` on them N times, each as a new process (start-up, parsing, the store's slice
code, the controller's judge and the JSON output included). Prints the median and worst wall time, the median CPU
time (user + system: what the command costs when it is not queued behind other processes) and, in-process, how the
time splits between reading the lines and replaying them. Target (issue 10): ≤ 2 s. The machine (CPUs, load
average before and after) is printed with the figures, since wall time on a loaded machine is queueing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trafficd.dev.bench.decisions import DEFAULT_POLICY

REGIONS = ("us-east", "eu-west", "ap-southeast")
T0 = 1_700_000_000.0
TARGET_S = 2.0


def write_samples(path: Path, seconds: int = 3600, per_s: float = 2.0, over: float = 0.008, seed: int = 10) -> int:
    """One probe every 1/per_s seconds per region; `over` of them over the 3 s SLO. Returns the line count."""
    rng = random.Random(seed)
    lines = []
    every = 1.0 / per_s
    for i in range(int(seconds * per_s)):
        for r in REGIONS:
            t = T0 + i * every + rng.random() * 0.05
            total = rng.uniform(3100.0, 5000.0) if rng.random() < over else rng.uniform(600.0, 1800.0)
            row = {"t": round(t, 3), "region": r, "worker": "w1", "model": "m", "ok": True, "reason": None}
            lines.append(json.dumps(row | {"total_ms": round(total, 1), "ttft_ms": round(total * 0.2, 1)}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _process(policy: Path, samples: Path, runs: int) -> dict[str, Any]:
    walls, cpus = [], []
    rows = 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        argv = [sys.executable, "-m", "trafficd", "simulate", "--policy", str(policy), "--samples", str(samples)]
        done = subprocess.run(argv, capture_output=True, check=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        rows = done.stdout.count("\n")
    return {
        "wall_median_s": round(statistics.median(walls), 3),
        "wall_max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpus), 3),
        "output_rows": rows,
    }


_SPLIT = """
import json, sys, time
from trafficd.commands.simulate_replay import sample_rows
from trafficd.commands.simulate_input import read_samples
from trafficd.policy.schema import load_policy
policy = load_policy(sys.argv[1]).policy
t0 = time.process_time()
with open(sys.argv[2], encoding="utf-8") as f:
    parsed = read_samples(policy, f, sys.argv[2])
t1 = time.process_time()
n = sum(1 for _ in sample_rows(policy, parsed))
t2 = time.process_time()
print(json.dumps({"read_cpu_s": round(t1 - t0, 3), "replay_cpu_s": round(t2 - t1, 3), "rows": n}))
"""


def _split(policy: Path, samples: Path) -> dict[str, Any]:
    """Where the command's time goes once imported: reading the lines, replaying them (a process of its own: dev
    tools import no command modules)."""
    done = subprocess.run(
        [sys.executable, "-c", _SPLIT, str(policy), str(samples)], capture_output=True, check=True, text=True
    )
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def _command(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="trafficd-bench-simulate-") as tmp:
        d = Path(tmp)
        policy = d / "policy.yaml"
        policy.write_text(DEFAULT_POLICY.replace("probe: {", "probe: {interval: 500ms, "))
        samples = d / "samples.jsonl"
        lines = write_samples(samples)
        res = {"lines": lines} | _process(policy, samples, args.runs) | _split(policy, samples)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps({"machine": machine, "result": res, "target_s": TARGET_S}))
        return 0
    print(
        f"trafficd simulate --samples, 1 h × 3 regions × 2 probes/s ({res['lines']} lines), {args.runs} runs: "
        f"wall median {res['wall_median_s']} s (max {res['wall_max_s']}), CPU median {res['cpu_median_s']} s "
        f"(target ≤ {TARGET_S:g} s); in-process: reading {res['read_cpu_s']} s, replay and judging "
        f"{res['replay_cpu_s']} s of CPU"
    )
    print(
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}, load average {machine['load_before']} before, "
        f"{machine['load_after']} after"
    )
    return 0


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--runs", type=int, default=5, help="how many times to run the command (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the lines")
    return p


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from trafficd.dev.cli import DEV_COMMANDS

    p = _parser(sub.add_parser("bench-simulate", help=DEV_COMMANDS["bench-simulate"].help))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.simulate")).parse_args()))
