"""CLI start-up benchmark: `python -m trafficd.dev bench-cli [--runs N] [--install wheel|source|both] [--json]`.

Runs each command N times as a new process (as an operator's shell does) and prints the best, the median and the
worst wall time, and the median CPU time (user + system, which a loaded machine inflates less than it queues wall
time): `--help`, `--version`, `policy check` of the example policy, `status --help`, and a whole `status --no-dns`
against a throw-away redis-server (start, policy, Redis reads, output), and the whole `status` with its Route 53
read (boto3) against a local moto server. The target is ≤ 0.3 s for `--help`,
`policy check` and `status` on an idle machine; the machine (CPUs, load average) is printed with the figures.

Two installs (`--install`, default both): `wheel` is what an operator runs, the `trafficd` console script of this
checkout's wheel installed in a fresh venv with only its runtime dependencies (installed.py); `source` is
`python -m trafficd` from this checkout in the development venv (its editable-install finder, and the development
libraries that redis-py imports when present: opentelemetry).

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

from trafficd.dev.bench import installed
from trafficd.dev.services import MotoServer, RedisServer

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "policies" / "example.yaml"
INSTALLS = ("wheel", "source")
HOW = {
    "wheel": "wheel (`trafficd` console script, fresh venv, runtime dependencies only):",
    "source": "source (`python -m trafficd`, development venv, editable install):",
}


def _hosted_zone(moto_url: str) -> str:
    """A hosted zone for the example's record name in the benchmark's moto server; its id."""
    import uuid

    import boto3

    client = boto3.client("route53", endpoint_url=moto_url, region_name="us-east-1")
    zone = client.create_hosted_zone(Name="example.com.", CallerReference=uuid.uuid4().hex)["HostedZone"]
    return str(zone["Id"]).split("/")[-1]


def _policy(redis_url: str, directory: Path, moto_url: str, zone_id: str) -> Path:
    text = EXAMPLE.read_text().replace("redis://127.0.0.1:6379/0", redis_url)
    text = text.replace("  zone_id: Z0123456789EXAMPLE", f"  zone_id: {zone_id}\n  endpoint_url: {moto_url}")
    # the benchmark's redis-server has no password
    text = "\n".join(line for line in text.splitlines() if "password_file: redis-password" not in line) + "\n"
    path = directory / "policy.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def _environment(pycache: Path, install: str) -> dict[str, str]:
    """This process's environment with the bytecode cache on, in `pycache` (see the module docstring), and the
    local Route 53's throw-away credentials; for the wheel, no PYTHONPATH (the installed trafficd runs)."""
    drop = {"PYTHONDONTWRITEBYTECODE", *(("PYTHONPATH",) if install == "wheel" else ())}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true")
    return env


def _time(trafficd: list[str], argv: list[str], runs: int, env: dict[str, str]) -> dict[str, Any]:
    walls, cpus = [], []
    command = [*trafficd, *argv]
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
        "min_s": round(min(walls), 3),  # the least disturbed run: closest to an idle machine when others run
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


def _commands(policy: str) -> list[list[str]]:
    return [
        ["--help"],
        ["--version"],
        ["policy", "check", str(EXAMPLE)],
        ["status", "--help"],
        ["status", "--no-dns", "--policy", policy],
        ["status", "--policy", policy],  # and the Route 53 read (boto3, local moto)
    ]


def run(runs: int, installs: tuple[str, ...] = INSTALLS) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="trafficd-bench-cli-") as tmp:
        redis, moto = RedisServer().start(), MotoServer()
        try:
            os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
            moto.start()
            policy = str(_policy(redis.url, Path(tmp), moto.url, _hosted_zone(moto.url)))
            rows = []
            for install in installs:
                if install == "wheel":
                    trafficd = [str(installed.install(Path(tmp) / "install") / "bin" / "trafficd")]
                else:
                    trafficd = [sys.executable, "-m", "trafficd"]
                env = _environment(Path(tmp) / f"pycache-{install}", install)
                rows += [{"install": install, **_time(trafficd, argv, runs, env)} for argv in _commands(policy)]
            return rows
        finally:
            moto.stop()
            redis.stop()


def _command(args: argparse.Namespace) -> int:
    before = machine()
    rows = run(args.runs, INSTALLS if args.install == "both" else (args.install,))
    after = machine()
    if args.json:
        print(json.dumps({"machine": before, "load_average_after": after["load_average"], "results": rows}, indent=2))
        return 0
    m = before
    print(
        f"machine: {m['cpus']} CPUs, load average {m['load_average']} before, {after['load_average']} after; "
        f"Python {m['python']}, {m['platform']}"
    )
    for install in INSTALLS:
        if any(r["install"] == install for r in rows):
            print(HOW[install])
        for r in (r for r in rows if r["install"] == install):
            print(
                f"  {r['command']:<45} wall min {r['min_s']:.3f} s, median {r['median_s']:.3f} s, "
                f"max {r['max_s']:.3f} s; CPU median {r['cpu_median_s']:.3f} s (exit {r['exit']})"
            )
    return 0


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--runs", type=int, default=10, help="processes per command (default 10)")
    p.add_argument(
        "--install",
        choices=[*INSTALLS, "both"],
        default="both",
        help="wheel: the console script of this checkout's wheel in a fresh venv (what an operator runs); "
        "source: python -m trafficd in the development venv (default both)",
    )
    p.add_argument("--json", action="store_true")
    return p


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(sub.add_parser("bench-cli", help="start-up time of trafficd commands (new process each run)"))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.cli")).parse_args()))
