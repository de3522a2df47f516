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
