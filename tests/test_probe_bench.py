"""The fidelity benchmark command runs end to end and never measures a TTFT below the worker's true one."""

from __future__ import annotations

import asyncio
import json
import sys


async def test_quick_benchmark_reports_figures_and_never_under_reports() -> None:
    """`python -m trafficd.dev.bench.probe --quick --json` prints both concurrencies, no failures, added ≥ 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trafficd.dev.bench.probe",
        "--quick",
        "--json",
        "--ttft-ms",
        "50",
        "--token-ms",
        "5",
        "--tokens",
        "3",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    report = json.loads(out)
    assert proc.returncode == 0
    assert [r["concurrency"] for r in report["results"]] == [1, 4]
    for r in report["results"]:
        assert r["failed"] == 0 and r["added_min_ms"] >= 0.0 and r["probes_per_s"] > 0
        assert r["added_p99_ms"] >= r["added_p50_ms"] and r["cpu_ms_per_probe"] > 0
    assert report["machine"]["nproc"] >= 1
