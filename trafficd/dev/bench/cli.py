"""CLI start-up benchmark: `python -m trafficd.dev bench-cli [--runs N] [--json]`.

Runs each command N times as a new process (as an operator's shell does) and prints the median and the worst wall
time, and the median CPU time (user + system, which a loaded machine does not inflate the way it queues wall time):
`--help`, `--version`, `policy check` of the example policy, `status --help`, and a whole `status --no-dns`
against a throw-away redis-server (start, policy, Redis reads, output). The target is ≤ 0.3 s for `--help`,
`policy check` and `status` on an idle machine; the machine (CPUs, load average) is printed with the figures.

Each command runs once untimed first, with Python's bytecode cache on (in a temporary PYTHONPYCACHEPREFIX, even
when PYTHONDONTWRITEBYTECODE is set): an installed wheel is byte-compiled by pip at install, so compiling trafficd's
sources on every start (~0.04–0.1 s) is not what an operator waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trafficd.dev.services import RedisServer

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "policies" / "example.yaml"


def _policy(redis_url: str, directory: Path) -> Path:
    text = EXAMPLE.read_text().replace("redis://127.0.0.1:6379/0", redis_url)
    # the benchmark's redis-server has no password
    text = "\n".join(line for line in text.splitlines() if "password_file: redis-password" not in line) + "\n"
    path = directory / "policy.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def _environment(pycache: Path) -> dict[str, str]:
    """This process's environment with the bytecode cache on, in `pycache` (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _time(argv: list[str], runs: int, env: dict[str, str]) -> dict[str, Any]:
    walls, cpus = [], []
    command = [sys.executable, "-m", "trafficd", *argv]
    done = subprocess.run(command, capture_output=True, check=False, env=env)  # untimed: writes the bytecode
    code = done.returncode
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False, env=env)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        code = done.returncode
    return {
        "command": "trafficd " + " ".join(a if "/" not in a else Path(a).name for a in argv),
        "median_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpus), 3),  # user + system: what the command costs when not queued
        "exit": code,
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def run(runs: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="trafficd-bench-cli-") as tmp:
        redis = RedisServer().start()
        try:
            policy = str(_policy(redis.url, Path(tmp)))
            env = _environment(Path(tmp) / "pycache")
            return [
                _time(["--help"], runs, env),
                _time(["--version"], runs, env),
                _time(["policy", "check", str(EXAMPLE)], runs, env),
                _time(["status", "--help"], runs, env),
                _time(["status", "--no-dns", "--policy", policy], runs, env),
            ]
        finally:
            redis.stop()


def _command(args: argparse.Namespace) -> int:
    rows = run(args.runs)
    if args.json:
        print(json.dumps({"machine": machine(), "results": rows}, indent=2))
        return 0
    m = machine()
    print(f"machine: {m['cpus']} CPUs, load average {m['load_average']}, Python {m['python']}, {m['platform']}")
    for r in rows:
        print(
            f"{r['command']:<45} wall median {r['median_s']:.3f} s, max {r['max_s']:.3f} s; "
            f"CPU median {r['cpu_median_s']:.3f} s (exit {r['exit']})"
        )
    return 0


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--runs", type=int, default=10, help="processes per command (default 10)")
    p.add_argument("--json", action="store_true")
    return p


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(sub.add_parser("bench-cli", help="start-up time of trafficd commands (new process each run)"))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.cli")).parse_args()))
