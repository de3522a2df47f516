"""`trafficd status` against real Redis and moto: readable text with reasons, JSON with ISO times, exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from ctlkit import bootstrapped, feed

from trafficd import cli
from trafficd.control.controller import Controller
from trafficd.runtime.reload import PolicyHolder


@pytest.fixture
def loaded(redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path) -> Any:
    return bootstrapped(tmp_path, redis_url, key_prefix, hosted_zone, moto.url)


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["status", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_no_leader_exits_3_and_says_so(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """With no controller holding the lease, status exits 3 and its first line says nothing moves DNS."""
    path, _ = loaded
    code, out, err = await asyncio.to_thread(status, capsys, "--policy", str(path), "--no-dns")
    assert code == 3 and err == ""
    assert out.splitlines()[0].endswith("NO LEADER — no controller holds the lease; nothing moves DNS")
    code, out, _ = await asyncio.to_thread(status, capsys, "--policy", str(path), "--no-dns", "--json")
    assert code == 3 and json.loads(out)["exit_code"] == 3 and json.loads(out)["leader"] is None


async def test_an_unknown_region_exits_4_with_its_reason(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A region without samples is unknown: exit 4, its row and reason shown, no 0.00% error figure at n=0."""
    path, lp = loaded
    ctl = Controller(PolicyHolder(path, lp), controller_id="ctl-a")
    await feed(lp.policy, {"us-east": 200.0, "eu-west": 200.0})
    await ctl.evaluate_once()  # takes the lease and the writer epoch: sends no weight at start
    await ctl.evaluate_once()
    try:
        code, out, _ = await asyncio.to_thread(status, capsys, "--policy", str(path), "--no-dns")
    finally:
        await ctl.shutdown()
    assert code == 4
    row = next(line for line in out.splitlines() if line.startswith("ap-southeast"))
    assert "UNKNOWN" in row and row.split()[-3:] == ["-", "-", "STALE"]  # over SLO and errors at n=0
    assert "   why: " in out and "unknown (weights held): ap-southeast" in out
    assert "0.00%" not in out and "{" not in out and "'" not in out


async def test_a_dry_run_watcher_is_listed_under_the_leader(loaded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A leader and a dry-run controller beside it: the text names the watcher and its policy; JSON lists it."""
    path, lp = loaded
    await feed(lp.policy, {"us-east": 200.0, "eu-west": 200.0, "ap-southeast": 200.0})
    leader = Controller(PolicyHolder(path, lp), controller_id="ctl-a")
    watcher = Controller(PolicyHolder(path, lp), controller_id="watcher-1", dry_run=True)
    await leader.evaluate_once()
    await leader.evaluate_once()
    await watcher.evaluate_once()
    try:
        code, out, _ = await asyncio.to_thread(status, capsys, "--policy", str(path), "--no-dns")
        _, jout, _ = await asyncio.to_thread(status, capsys, "--policy", str(path), "--no-dns", "--json")
    finally:
        await watcher.shutdown()
        await leader.shutdown()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("service ctl: leader ctl-a")
    assert lines[1] == f"dry-run watcher watcher-1 (policy {lp.hash}): judges and logs, writes nothing"
    assert [w["id"] for w in json.loads(jout)["dry_run_watchers"]] == ["watcher-1"]


async def test_a_draining_region_shows_why_and_where_its_users_go(
    loaded: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drained step: leader with its policy hash, the region's reasons and spill-over in words; JSON in ISO."""
    path, lp = loaded
    ctl = Controller(PolicyHolder(path, lp), controller_id="ctl-a")
    await feed(lp.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # takes the lease and the writer epoch: sends no weight at start
    await ctl.evaluate_once()
    try:
        code, out, _ = await asyncio.to_thread(status, capsys, "--policy", str(path))
        jcode, jout, _ = await asyncio.to_thread(status, capsys, "--policy", str(path), "--json")
    finally:
        await ctl.shutdown()
    assert code == 0 == jcode
    first = out.splitlines()[0]
    assert first.startswith("service ctl: leader ctl-a") and f"policy {lp.hash} (same as this file)" in first
    assert "last evaluation (" in out
    row = next(line for line in out.splitlines() if line.startswith("eu-west"))
    assert row.split()[:4] == ["eu-west", "draining", "0.50", "128"]
    assert "   why: 100.00% of 20 samples over 3000ms" in out
    assert "   its users also go to: us-east 0.50" in out or "   its users also go to: ap-southeast 0.50" in out
    assert "{" not in out
    data = json.loads(jout)
    assert data["leader_policy_hash"] == lp.hash and data["last_evaluation_id"] == "1-1"
    assert data["regions"]["eu-west"]["since"].endswith("Z") and data["evaluated_at"].endswith("Z")


def test_on_a_tty_the_answer_is_the_first_thing_printed(loaded: Any, tmp_path: Path) -> None:
    """Run as a person would (stdout and stderr on one terminal): status and history print their answer first,
    with no internal log line before it."""
    import os
    import pty
    import subprocess
    import sys

    path, _ = loaded
    for args, first in (
        (["status", "--policy", str(path), "--no-dns"], "service ctl: NO LEADER"),
        (["history", "--policy", str(path)], "nothing recorded since "),
    ):
        leader, follower = pty.openpty()
        proc = subprocess.run(
            [sys.executable, "-m", "trafficd", *args], stdout=follower, stderr=follower, timeout=60, check=False
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal is drained and closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        text = b"".join(chunks).decode()
        assert text.startswith(first), (proc.returncode, text[:300])
        assert "{" not in text and "[info" not in text
