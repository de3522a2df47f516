"""`trafficd stats` against a real redis-server: the table, the JSON, and the exit codes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import kit
import pytest

from trafficd import cli
from trafficd.dev.services import free_port
from trafficd.model import Sample
from trafficd.policy.schema import Policy, parse_policy
from trafficd.stats import store


def write_policy(tmp_path: Path, url: str, prefix: str) -> Path:
    windows = {
        "evaluate_every": "1s",
        "slice": "1s",
        "trip": "5s",
        "long": "20s",
        "min_samples": 1,
        "stale_after": "5s",
    }
    return kit.write_policy(tmp_path / "policy.yaml", kit.two_region_doc(url, prefix, windows=windows))


def seed(path: Path) -> None:
    asyncio.run(_seed(parse_policy(path.read_text()).policy))


async def _seed(policy: Policy) -> None:
    client = store.redis_client(policy.redis)
    try:
        sink, now = store.SampleSink(client, policy), time.time()
        done = now - 1.0
        await sink.write([Sample("r1", "w1", "m1", done - 0.2, True, None, 200.0) for _ in range(8)])
        await sink.write([Sample("r1", "w2", "m1", done - 4.0, False, "total_timeout", 4000.0) for _ in range(2)])
        await sink.heartbeat("agent-a", "r1")
    finally:
        await client.aclose()


def test_stats_json_gives_exact_per_worker_and_region_figures(
    tmp_path: Path, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trafficd stats --json` prints the region and per-worker figures the controller would see."""
    path = write_policy(tmp_path, redis_url, key_prefix)
    seed(path)
    code = cli.main(["stats", "--policy", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    r1 = out["r1"]
    assert (r1["trip"]["n"], r1["trip"]["errors"], r1["trip"]["over_slo_fraction"]) == (10, 2, 0.2)
    assert r1["workers"]["w2"]["long"]["error_rate"] == 1.0
    assert r1["workers"]["w1"]["trip"]["n"] == 8
    assert out["r2"]["trip"]["n"] == 0


def test_stats_table_names_regions_workers_and_staleness(
    tmp_path: Path, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows every region (a region without agents marked stale) with its workers' lines."""
    path = write_policy(tmp_path, redis_url, key_prefix)
    seed(path)
    code = cli.main(["stats", "--policy", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "r1: newest sample" in out and "r2 [STALE]" in out
    assert "worker   w1" in out and "worker   w2" in out
    assert "n=10 err=20.00% over_slo=20.00%" in out


def test_stats_exit_codes_for_unreachable_redis_unknown_region_and_bad_policy(
    tmp_path: Path, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis unreachable → 75 (EX_TEMPFAIL) with a message; unknown region → 2; a broken policy file → 78."""
    path = write_policy(tmp_path, f"redis://127.0.0.1:{free_port()}/0", key_prefix)
    assert cli.main(["stats", "--policy", str(path)]) == 75
    assert "cannot read the statistics" in capsys.readouterr().err
    assert cli.main(["stats", "--policy", str(path), "--region", "nowhere"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n")
    assert cli.main(["stats", "--policy", str(bad)]) == 78
