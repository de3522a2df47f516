"""A reload can never block the event loop or the signal handlers: parsing runs off the loop with a timeout."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kit import eventually
from structlog.testing import capture_logs
from test_reload import MINIMAL, Events

from trafficd.dev.services import free_port
from trafficd.policy.schema import LoadedPolicy, load_policy
from trafficd.runtime import reload as reload_module
from trafficd.runtime.reload import PolicyHolder

BOMB = Path(__file__).parent / "policies" / "invalid-alias-bomb.yaml"


async def test_a_slow_parse_times_out_while_the_loop_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose reading takes 3 s is rejected after the 0.3 s timeout; the loop ticks all along."""
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL)
    holder = PolicyHolder(path, load_policy(path))

    def slow_load(p: Any) -> LoadedPolicy:
        time.sleep(3.0)  # a parse that hogs its thread, as a hostile file would
        return load_policy(p)

    monkeypatch.setattr(reload_module, "load_policy", slow_load)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with capture_logs() as logs:
        assert not await holder.reload_async(timeout_s=0.3)
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed < 2.0 and ticks >= 10  # the loop was never blocked by the parse
    (event,) = [e for e in logs if e["event"] == "policy.reload_rejected"]
    assert event["problems"][0]["reason"] == (
        "reading and checking the file took longer than 0.3s; the last good policy stays"
    )
    with capture_logs() as logs:  # the first read is still running: a second reload says so, never piles up
        assert not await holder.reload_async(timeout_s=0.3)
    assert "still being read" in logs[-1]["problems"][0]["reason"]
    assert holder.current.path == str(path) and holder.rejections == 2


def test_sighup_with_an_alias_bomb_leaves_healthz_and_sigterm_working(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """A real agent: SIGHUP with a billion-laughs file is rejected with the expansion limit, /healthz answers right
    after, and SIGTERM stops the process cleanly (it used to wedge the daemon until SIGKILL)."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        MINIMAL.replace("dns:\n  zone_id", f"redis:\n  url: {redis_url}\n  key_prefix: {key_prefix}\ndns:\n  zone_id")
        + "probe:\n  interval: 200ms\n"
    )
    port = free_port()
    agent = ["agent", "--policy", str(path), "--region", "us-east", "--metrics-port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "trafficd", *agent],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    events = Events(proc.stdout)
    try:
        events.wait_for("agent.started")
        healthz = f"http://127.0.0.1:{port}/healthz"
        eventually(lambda: _get(healthz) == 200, "/healthz before the reload")
        shutil.copy(BOMB, path)
        proc.send_signal(signal.SIGHUP)
        rejected = events.wait_for("policy.reload_rejected", timeout_s=10)
        assert "expands to more than 20000 values" in rejected["problems"][0]["reason"]
        assert _get(healthz) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0
