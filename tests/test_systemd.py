"""The shipped systemd units: `systemd-analyze verify` without any output, `systemd-analyze security` exposure
≤ 1.5 (offline, on the unit files: no running systemd needed), and the example policy agrees with them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

UNITS = Path(__file__).resolve().parent.parent / "systemd"
INSTALLED_PATH = "/opt/trafficd/.venv/bin/trafficd"


MAX_EXPOSURE = 1.5


def _lay_out(tmp_path: Path) -> None:
    exe = shutil.which("trafficd") or str(Path(sys.executable).with_name("trafficd"))
    for unit in UNITS.glob("*.service"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_PATH, exe))
    (tmp_path / "trafficd-agent@us-east.service").symlink_to(tmp_path / "trafficd-agent@.service")


def _verify(tmp_path: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    _lay_out(tmp_path)
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[str(tmp_path / n) for n in names]],
        capture_output=True,
        text=True,
        check=False,
    )


def _exposure(tmp_path: Path, name: str) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(tmp_path / name)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_units_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates both units (the agent as an instance) ≤ 1.5."""
    _lay_out(tmp_path)
    for name in ("trafficd-controller.service", "trafficd-agent@us-east.service"):
        exposure = _exposure(tmp_path, name)
        assert exposure <= MAX_EXPOSURE, f"{name}: exposure {exposure}"


def test_controller_drop_in_for_aws_credentials_verifies(tmp_path: Path) -> None:
    """The off-EC2 drop-in (AWS credentials file as a credential) verifies together with the controller unit."""
    _lay_out(tmp_path)
    drop_in = tmp_path / "trafficd-controller.service.d"
    drop_in.mkdir()
    (drop_in / "aws-credentials.conf").write_text(
        (UNITS / "trafficd-controller.service.d" / "aws-credentials.conf").read_text()
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "trafficd-controller.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    text = (drop_in / "aws-credentials.conf").read_text()
    assert "LoadCredential=aws-credentials:/etc/trafficd/credentials/aws-credentials" in text
    assert "Environment=AWS_SHARED_CREDENTIALS_FILE=%d/aws-credentials" in text


def test_example_policy_names_the_credentials_the_units_load() -> None:
    """example.yaml's secret files are relative names the units pass with LoadCredential= (for every instance)."""
    from trafficd.policy.schema import load_policy

    policy = load_policy(UNITS.parent / "policies" / "example.yaml").policy
    agent = (UNITS / "trafficd-agent@.service").read_text()
    controller = (UNITS / "trafficd-controller.service").read_text()
    names = {
        line.split("=", 1)[1].split(":", 1)[0] for line in agent.splitlines() if line.startswith("LoadCredential=")
    }
    assert policy.redis.password_env is None and policy.probe.auth.api_key_env is None
    assert policy.redis.password_file in names and f"LoadCredential={policy.redis.password_file}:" in controller
    assert policy.probe.auth.api_key_file in names
    for unit in (agent, controller):
        assert "Environment=TRAFFICD_POLICY=/etc/trafficd/policy.yaml" in unit
    assert "IPAddressDeny=169.254.169.254" in agent  # agents never reach the instance metadata service


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
            "SystemCallFilter=~@privileged @resources",
            "PrivateUsers=yes",
            "ProtectProc=invisible",
            "ProcSubset=pid",
            "MemoryDenyWriteExecute=yes",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ):
            assert needed in lines, f"{unit.name} lacks {needed}"
        assert any(line.startswith("WatchdogSec=") for line in lines), unit.name


def test_agent_unit_denies_the_cloud_metadata_addresses() -> None:
    """The agent's unit denies link-local (169.254.169.254) and the IPv6 metadata address, whatever a policy says."""
    lines = (UNITS / "trafficd-agent@.service").read_text().splitlines()
    (deny,) = [line for line in lines if line.startswith("IPAddressDeny=")]
    assert {"169.254.0.0/16", "fd00:ec2::254"} <= set(deny.removeprefix("IPAddressDeny=").split())
