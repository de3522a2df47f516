"""sd_notify: datagrams reach $NOTIFY_SOCKET; without it nothing is sent and nothing fails."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from trafficd.runtime import notify


def test_notify_sends_fields_to_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY=1 and STATUS=… arrive as one newline-separated datagram on the socket systemd gave us."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify.notify("READY=1", "STATUS=ok") is True
        assert server.recv(4096) == b"READY=1\nSTATUS=ok"


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd (no NOTIFY_SOCKET) notify returns False and raises nothing."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    """With WatchdogSec=60s systemd sets WATCHDOG_USEC=60000000; we ping every 30 s."""
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert notify.watchdog_interval_s() is None


def test_reload_tells_systemd_reloading_then_ready_with_a_status_naming_a_rejected_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP's reload sends RELOADING=1 with MONOTONIC_USEC, then READY=1 and STATUS= naming the rejected file."""
    import asyncio
    import shutil
    import time

    from trafficd.policy.schema import load_policy
    from trafficd.runtime.reload import PolicyHolder, reload_notifying

    path = tmp_path / "policy.yaml"
    shutil.copy(Path(__file__).resolve().parent.parent / "policies" / "minimal.yaml", path)
    path.chmod(0o644)
    holder = PolicyHolder(path, load_policy(path))
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(sock_path))
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
        before_us = time.monotonic_ns() // 1000
        path.write_text(path.read_text() + "\nwindows: {min_sample: 3}\n")
        assert asyncio.run(reload_notifying(holder)) is False
        first = server.recv(4096).decode().split("\n")
        second = server.recv(4096).decode().split("\n")
        assert first[0] == "RELOADING=1" and first[1].startswith("MONOTONIC_USEC=")
        assert before_us <= int(first[1].split("=")[1]) <= time.monotonic_ns() // 1000
        assert second[0] == "READY=1" and "REJECTED" in second[1] and str(path) in second[1]
        assert "min_sample" in second[1] and holder.hash in second[1]  # the problem and the policy still in force
        path.write_text((Path(__file__).resolve().parent.parent / "policies" / "minimal.yaml").read_text())
        assert asyncio.run(reload_notifying(holder)) is True
        server.recv(4096)
        assert server.recv(4096).decode() == f"READY=1\nSTATUS=policy {holder.hash} from {path} in force (reload 1)"
