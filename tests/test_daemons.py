"""The daemons as real processes: metrics and health endpoints, clean stop on SIGTERM, reload refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from ctlkit import policy_text
from kit import eventually

from trafficd.control.lease import lease_key
from trafficd.dev.services import free_port, wait_for_port


def wait_for(what: str, predicate: Callable[[], object], timeout_s: float = 20.0) -> None:
    eventually(predicate, what, timeout_s=timeout_s)


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trafficd", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def test_controller_serves_metrics_and_releases_its_lease_on_sigterm(
    redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path
) -> None:
    """A controller process shows leadership on /metrics, answers /healthz, exits 0 on SIGTERM releasing the lease."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(redis_url, key_prefix, hosted_zone, moto.url))
    port = free_port()
    proc = spawn(["controller", "--policy", str(path), "--metrics-port", str(port)], tmp_path / "ctl.log")
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for_port(port, proc=proc)
        wait_for("leadership in /metrics", lambda: "trafficd_leader 1.0" in get(f"http://127.0.0.1:{port}/metrics"))
        assert '"ok": true' in get(f"http://127.0.0.1:{port}/healthz")
        assert client.exists(lease_key(key_prefix, "ctl"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not client.exists(lease_key(key_prefix, "ctl"))
        assert b"controller.stopped" in (tmp_path / "ctl.log").read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()


def test_agent_rejects_a_reload_without_its_region_and_keeps_probing(
    redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path
) -> None:
    """SIGHUP with a valid policy lacking the agent's region is refused (policy.reload_rejected); the agent runs on."""
    path = tmp_path / "policy.yaml"
    text = policy_text(redis_url, key_prefix, hosted_zone, moto.url)
    path.write_text(text)
    log = tmp_path / "agent.log"
    # rounds are DEBUG events (the log budget): ask for them
    proc = spawn(["--log-level", "DEBUG", "agent", "--policy", str(path), "--region", "eu-west"], log)
    try:
        wait_for("agent start", lambda: b"agent.started" in log.read_bytes())
        path.write_text(text.replace("eu-west", "eu-north"))
        proc.send_signal(signal.SIGHUP)
        wait_for("reload rejection", lambda: b"policy.reload_rejected" in log.read_bytes())
        assert b"'eu-west' is not in the policy" in log.read_bytes()
        rounds = log.read_bytes().count(b"agent.round_completed")
        wait_for("more rounds", lambda: log.read_bytes().count(b"agent.round_completed") > rounds + 2)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_agent_with_an_unreadable_api_key_file_exits_78(
    redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path
) -> None:
    """A valid policy naming an API key file that cannot be read stops the agent with EX_CONFIG (78), not a trace."""
    path = tmp_path / "policy.yaml"
    text = policy_text(redis_url, key_prefix, hosted_zone, moto.url)
    missing = tmp_path / "no-such-key"
    path.write_text(
        text.replace(
            "probe: {targets: {allow_loopback: true}}",
            "probe: {targets: {allow_loopback: true, allow_cleartext_api_key: true}, "
            f"auth: {{api_key_file: {missing}}}}}",
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trafficd", "agent", "--policy", str(path), "--region", "eu-west"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(missing) in proc.stderr or "api_key" in proc.stderr
