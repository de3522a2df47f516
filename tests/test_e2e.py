"""End to end: real agent and controller processes, redis-server, moto server and fake workers.

The demo's own orchestration (`trafficd.demo`) runs here with short intervals, so the demo and this test can
never drift apart: a slow region must be drained in Route 53 and restored once it is fast again.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from trafficd.demo import REGIONS, Timing, run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

FAST = Timing(
    probe_interval="150ms",
    trip_window="4s",
    long_window="20s",
    min_samples=12,
    hold_down="3s",
    cooldown="1s",
    stale_after="4s",
    slow_ttft_ms=3800.0,
)


def test_slow_region_is_drained_then_restored(redis_url: str, tmp_path: Path) -> None:
    """A region made slow is drained to weight 0 in Route 53 while the others keep 255, then ramps back to 255."""
    out = io.StringIO()
    result = run_demo(timing=FAST, redis_url=redis_url, slow_region="eu-west", workdir=tmp_path, out=out)
    transcript = out.getvalue()
    assert result.drained, transcript
    assert result.restored, transcript

    weights = [w for _, w in result.weights_seen]
    # the others never stopped serving their own users
    for region in REGIONS:
        if region != "eu-west":
            assert all(w.get(region) == 255 for w in weights), transcript
    # the drain and the restore went in steps, not a snap between 255 and 0
    eu = [w["eu-west"] for w in weights]
    assert any(v not in (0, 255) for v in eu), f"no intermediate weight in {eu}"

    shifts = [e for e in result.events if e.get("event") == "controller.weights_shifted"]
    assert shifts, transcript
    for e in shifts:  # every decision carries its inputs
        for key in ("region", "p99_ms", "n", "error_rate", "state_before", "state_after", "policy_hash"):
            assert key in e, (key, e)
    assert {e["region"] for e in shifts} == {"eu-west"}
