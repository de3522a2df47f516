"""systemd notification protocol (sd_notify) by hand: one datagram to $NOTIFY_SOCKET.

READY=1 once the daemon has loaded its policy and state, STATUS=… as it runs, WATCHDOG=1 from the main loop
(so a hung loop is restarted by systemd's WatchdogSec). A no-op when not run by systemd.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=leader") to systemd. Returns False when there is no socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of WATCHDOG_USEC, as systemd recommends; None when the watchdog is off or not for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
