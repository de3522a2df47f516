"""The shipped systemd units pass `systemd-analyze verify` with no output at all (it exits 0 on warnings)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

UNITS = Path(__file__).resolve().parent.parent / "systemd"
INSTALLED_PATH = "/opt/trafficd/.venv/bin/trafficd"


def _verify(tmp_path: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("trafficd") or str(Path(sys.executable).with_name("trafficd"))
    for unit in UNITS.glob("*.service"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_PATH, exe))
    (tmp_path / "trafficd-agent@us-east.service").symlink_to(tmp_path / "trafficd-agent@.service")
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[str(tmp_path / n) for n in names]],
        capture_output=True,
        text=True,
        check=False,
    )


def test_units_verify_without_any_warning(tmp_path: Path) -> None:
    """Both units (the agent as an instance) verify cleanly: exit 0 and nothing printed."""
    result = _verify(tmp_path, ["trafficd-controller.service", "trafficd-agent@us-east.service"])
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_units_are_hardened_and_do_not_restart_on_config_errors() -> None:
    """Each unit is Type=notify with a watchdog, refuses to restart on exit 78, and drops privileges."""
    for unit in UNITS.glob("*.service"):
        lines = set(unit.read_text().splitlines())
        for needed in (
            "Type=notify",
            "RestartPreventExitStatus=78",
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "ProtectSystem=strict",
            "SystemCallFilter=@system-service",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ):
            assert needed in lines, f"{unit.name} lacks {needed}"
        assert any(line.startswith("WatchdogSec=") for line in lines), unit.name
