"""`trafficd history` and the audit stream: decisions, overrides and Route 53 changes with evaluation ids and
reasons, read back in one command; the stream is capped by count and by age."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from ctlkit import bootstrapped, feed
from structlog.testing import capture_logs

from trafficd import cli
from trafficd.commands.history import parse_when
from trafficd.control.controller import Controller
from trafficd.keys import audit_key
from trafficd.runtime import audit
from trafficd.runtime.reload import PolicyHolder


@pytest.fixture
def loaded(redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path) -> Any:
    return bootstrapped(tmp_path, redis_url, key_prefix, hosted_zone, moto.url)


def history(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the test printed before (structlog defaults) is not the command's
    code = cli.main(["history", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_why_was_a_region_drained_is_one_command(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """After a shift, `history --region` shows the decision with its evaluation id, its reasons and evidence, and
    the Route 53 change it caused (cause plan, the region touched); --json carries the same ids."""
    path, lp = loaded
    ctl = Controller(PolicyHolder(path, lp))
    await feed(lp.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # takes the lease and the writer epoch: sends no weight at start
    with capture_logs() as logs:
        await ctl.evaluate_once()
    await ctl.shutdown()
    (shift,) = [e for e in logs if e["event"] == "controller.weights_shifted"]
    code, out, err = await asyncio.to_thread(history, capsys, "--policy", str(path), "--region", "eu-west")
    assert code == 0 and err == ""
    assert f"eval {shift['evaluation_id']}" in out
    assert "eu-west healthy→draining, serving 1.00→0.50 by trip: 100.00% of 20 samples over 3000ms" in out
    assert "Route 53 applied" in out and "(plan)" in out and "evidence: p99" in out
    code, out, _ = await asyncio.to_thread(history, capsys, "--policy", str(path), "--json", "--since", "10m")
    entries = json.loads(out)
    decision = next(e for e in entries if e["kind"] == "decision")
    change = next(e for e in entries if e["kind"] == "route53")
    assert decision["evaluation_id"] == change["evaluation_id"] == shift["evaluation_id"]
    assert decision["regions"] == ["eu-west"] and decision["reasons"] and decision["at"].endswith("Z")
    assert change["cause"] == "plan" and "eu-west" in change["regions"] and change["change_id"]
    assert decision["policy_hash"] == lp.hash


async def test_a_manual_drain_reads_as_manual(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A drain set with `trafficd drain` is logged and recorded as a manual drain with its author and reason."""
    path, lp = loaded
    await feed(lp.policy, {"us-east": 200.0, "eu-west": 200.0, "ap-southeast": 200.0})
    args = ["drain", "eu-west", "--for", "1h", "--reason", "maintenance CHG-1", "--policy", str(path)]
    assert await asyncio.to_thread(cli.main, args) == 0
    structlog.reset_defaults()  # the command configured logging at WARNING; the controller's INFO is wanted
    ctl = Controller(PolicyHolder(path, lp))
    await ctl.evaluate_once()  # takes the lease and the writer epoch: sends no weight at start
    with capture_logs() as logs:
        await ctl.evaluate_once()
    await ctl.shutdown()
    (shift,) = [e for e in logs if e["event"] == "controller.weights_shifted"]
    assert shift["rule"] == "manual_drain" and shift["decided_by"] == "override" and shift["verdict"] == "override"
    assert shift["judged_verdict"] in ("ok", "recovered")  # the evidence was fine: kept apart, not the cause
    assert shift["reasons"][0].startswith("manual drain by ") and shift["reasons"][0].endswith(": maintenance CHG-1")
    assert shift["override"]["reason"] == "maintenance CHG-1"
    _, out, _ = await asyncio.to_thread(history, capsys, "--policy", str(path), "--region", "eu-west")
    assert "manual drain of eu-west in force by" in out and "by override: manual drain by" in out
    assert "restore" not in out and "recovered" not in out


async def test_history_with_nothing_recorded_says_so(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """No entries: one line saying so, exit 0; an unknown region or a bad --since is a usage error (2)."""
    path, _ = loaded
    code, out, _ = await asyncio.to_thread(history, capsys, "--policy", str(path), "--since", "5m")
    assert code == 0 and out.startswith("nothing recorded since ")
    code, _, err = await asyncio.to_thread(history, capsys, "--policy", str(path), "--region", "mars")
    assert code == 2 and "unknown region 'mars'" in err
    code, _, err = await asyncio.to_thread(history, capsys, "--policy", str(path), "--since", "yesterday")
    assert code == 2 and "not a duration or a UTC time" in err


def entry(i: int) -> audit.Entry:
    return audit.Entry("decision", time.time(), f"1-{i}", "h", ("eu-west",), f"entry {i}", {})


async def test_the_stream_is_capped_by_count_and_by_age(redis_url: str, key_prefix: str) -> None:
    """1,000 entries with a cap of 100 leave at most ~200 (approximate trim); entries older than the age cap go."""
    client = aioredis.from_url(redis_url)
    key = audit_key(key_prefix, "svc")
    try:
        for start in range(0, 1000, 100):
            batch = [entry(i) for i in range(start, start + 100)]
            await audit.record(client, key_prefix, "svc", batch, max_entries=100)
        assert 100 <= await client.xlen(key) <= 200
        await client.delete(key)
        for i in range(300):  # three stream nodes of entries from 1970
            await client.xadd(key, {"e": json.dumps(entry(i).to_dict())}, id=f"{1000 + i}-0")
        await audit.record(client, key_prefix, "svc", [entry(1000)])
        got = [e.summary for e in await audit.read(client, key_prefix, "svc", since=0.0)]
        # MINID ~ drops whole stream nodes: only old entries sharing the newest node may stay
        assert got[-1] == "entry 1000" and "entry 0" not in got and len(got) <= 101
    finally:
        await client.delete(key)
        await client.aclose()


def test_since_takes_durations_and_utc_times() -> None:
    """`2h` is two hours back; `03:12` is today's 03:12 UTC (yesterday's if still to come); ISO times as given."""
    now = dt.datetime(2026, 12, 2, 4, 0, tzinfo=dt.UTC).timestamp()
    assert parse_when("2h", now) == now - 7200
    assert parse_when("03:12", now) == dt.datetime(2026, 12, 2, 3, 12, tzinfo=dt.UTC).timestamp()
    assert parse_when("05:00", now) == dt.datetime(2026, 12, 1, 5, 0, tzinfo=dt.UTC).timestamp()
    assert parse_when("2026-12-01T22:30Z", now) == dt.datetime(2026, 12, 1, 22, 30, tzinfo=dt.UTC).timestamp()
    with pytest.raises(ValueError, match="not a duration or a UTC time"):
        parse_when("soon", now)
