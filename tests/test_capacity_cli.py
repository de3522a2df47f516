"""`trafficd status` and `trafficd stats` show each region's live load and headroom, or why they are not live."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import kit
import pytest

from trafficd import cli
from trafficd.policy.capacity import Capacity
from trafficd.policy.schema import load_policy
from trafficd.stats import capacity_store
from trafficd.stats.capacity import worker_figures
from trafficd.stats.client import redis_client


@pytest.fixture
def policy_file(tmp_path: Path, redis_url: str, key_prefix: str) -> Path:
    """r1 (two workers) reads live capacity; r2 too, but its agents never wrote figures."""
    doc = kit.two_region_doc(redis_url, key_prefix, capacity={"max_concurrency": 40})
    doc["regions"]["r2"]["capacity_headroom"] = "30%"
    path = kit.write_policy(tmp_path / "policy.yaml", doc)
    asyncio.run(_store_r1(path))
    return path


async def _store_r1(path: Path) -> None:
    policy = load_policy(path).policy
    client = redis_client(policy.redis)
    now, cfg = time.time(), Capacity(max_concurrency=40)
    figures = {
        "w1": worker_figures(20.0, 0.0, 40.0, 0.5, 10.0, cfg, at=now - 1.0),  # (min(32, 36) − 20) × 0.5 = 6 req/s
        "w2": worker_figures(10.0, 2.0, 40.0, None, 5.0, cfg, at=now - 2.0),  # (32 − 10 − 2) × 0.5 = 10 req/s
    }
    try:
        await capacity_store.write(client, policy, "r1", figures, now)
    finally:
        await client.aclose()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    return code, capsys.readouterr().out


def test_stats_shows_load_and_headroom(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`stats` prints r1's summed load (15 req/s) and headroom (16 req/s) with their age; r2 has none."""
    code, out = run(capsys, "stats", "--policy", str(policy_file))
    assert code == 0
    assert re.search(r"\n  capacity load 15 req/s, headroom 16 req/s \(live, \ds old, 2 workers, KV 50%\)\n", out)
    assert "  capacity MISSING: the declared capacity_headroom is used" in out
    code, out = run(capsys, "stats", "--policy", str(policy_file), "--json")
    r1 = json.loads(out)["r1"]["capacity"]
    assert (r1["source"], r1["load_rps"], r1["headroom_rps"], r1["workers"]) == ("live", 15.0, 16.0, 2)


def test_status_shows_load_and_headroom(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`status` adds a line per region with its load and headroom, and the same figures in its JSON."""
    code, out = run(capsys, "status", "--policy", str(policy_file), "--no-dns")
    assert code == 3  # no controller leads (nothing else runs here)
    assert re.search(r"\n   load 15 req/s, headroom 16 req/s \(live, \ds old, KV 50%\)\n", out)
    assert "   capacity: MISSING: the declared capacity_headroom is used" in out
    code, out = run(capsys, "status", "--policy", str(policy_file), "--no-dns", "--json")
    cap = json.loads(out)["regions"]["r1"]["capacity"]
    assert (cap["source"], cap["load_rps"], cap["headroom_rps"]) == ("live", 15.0, 16.0)


def test_controller_exports_load_and_headroom() -> None:
    """A decision with live capacity sets the region's load and headroom gauges (NaN while not live)."""
    from trafficd.runtime import metrics

    metrics.record_region("cap-a", {"capacity": {"source": "live", "load_rps": 15.0, "headroom_rps": 16.0}})
    metrics.record_region("cap-b", {"capacity": {"source": "stale", "load_rps": None, "headroom_rps": None}})
    text = metrics.exposition("controller").decode()
    assert 'trafficd_region_load_requests_per_second{region="cap-a"} 15.0' in text
    assert 'trafficd_region_headroom_requests_per_second{region="cap-a"} 16.0' in text
    assert 'trafficd_region_headroom_requests_per_second{region="cap-b"} NaN' in text
