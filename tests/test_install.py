"""The install as README's "Running it for real" writes it: the built wheel in a fresh venv, `trafficd files
install` under a temporary root, credential files, and agent and controller started as their units start them
(ExecStart=, Environment=, LoadCredential= into $CREDENTIALS_DIRECTORY, $NOTIFY_SOCKET) — both reach READY=1.

Offline: the wheel is built with the shared venv's setuptools (no build isolation) and installed with --no-deps;
the fresh venv sees the third-party dependencies through a .pth line naming the shared venv's site-packages (not
its .pth files, so the shared editable trafficd is not importable there: the wheel's trafficd is what runs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctlkit import policy_text

from trafficd import bootstrap
from trafficd.dev.services import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-redis-pw"

pytestmark = pytest.mark.xdist_group("install")  # one wheel build per run
# the installed trafficd must run, not a source tree on PYTHONPATH (whose egg-info would also fool pip)
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed (no dev package in it)."""
    tmp = tmp_path_factory.mktemp("install")
    dist = tmp / "dist"
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "-o", str(dist)]
    subprocess.run([*build, str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("trafficd-*.whl"))
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=CLEAN_ENV,
    ).stdout.strip()
    # install first, then expose the dependencies: pip must see an empty environment (never the shared one)
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300, env=CLEAN_ENV)
    assert (env_dir / "bin" / "trafficd").exists()
    Path(purelib, "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD).start()
    yield server
    server.stop()


def test_the_wheel_is_a_production_install(venv: Path) -> None:
    """The wheel runs `trafficd --version`, installs every data file pyproject lists, and has no development
    package (trafficd.dev)."""
    exe = venv / "bin" / "trafficd"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True, env=CLEAN_ENV)
    assert out.stdout.startswith("trafficd ")
    probe = [str(venv / "bin" / "python"), "-c", "import trafficd, trafficd.dev"]
    missing = subprocess.run(probe, capture_output=True, text=True, cwd="/", env=CLEAN_ENV)
    assert missing.returncode != 0 and "No module named 'trafficd.dev'" in missing.stderr
    dev = subprocess.run([str(venv / "bin" / "trafficd-dev"), "demo"], capture_output=True, text=True, env=CLEAN_ENV)
    assert dev.returncode == 78 and "not part of the production install" in dev.stderr
    for name in bootstrap.data_files():  # policies, units, the AWS drop-in, IAM policy, README (Documentation=)
        assert (venv / name).is_file(), name


def _unit(path: Path) -> dict[str, list[str]]:
    """Key → values of a unit file's [Service] section (drop-ins appended in order)."""
    out: dict[str, list[str]] = {}
    for f in [path, *sorted(Path(f"{path}.d").glob("*.conf"))]:
        for line in f.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                out.setdefault(key, []).append(value)
    return out


class Started:
    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, log: Path) -> None:
        self.proc, self.sock, self.log = proc, sock, log

    def wait_ready(self, timeout_s: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
            try:
                seen.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue
            if any("READY=1" in m.split("\n") for m in seen):
                return seen
        raise AssertionError(f"no READY=1 within {timeout_s}s: {seen} {self.log.read_text()[-3000:]}")


def _start_as_systemd(unit: Path, root: Path, instance: str, work: Path) -> Started:
    """What systemd does for this unit, minus the sandbox: credentials, environment, notify socket, ExecStart."""
    spec = _unit(unit)
    creds = work / "credentials"
    creds.mkdir(mode=0o700)
    for item in spec.get("LoadCredential", []):
        cred_id, source = item.split(":", 1)
        shutil.copy(root / source.lstrip("/"), creds / cred_id)
        (creds / cred_id).chmod(0o400)
    env = {"PATH": os.environ["PATH"], "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null"}
    for item in spec.get("Environment", []):
        key, value = item.split("=", 1)
        value = value.replace("%d", str(creds))
        if value.startswith("/etc/trafficd"):
            value = str(root / value.lstrip("/"))  # the staged root stands for /
        env[key] = value
    env["CREDENTIALS_DIRECTORY"] = str(creds)
    notify = work / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.5)
    env["NOTIFY_SOCKET"] = str(notify)
    argv = spec["ExecStart"][0].replace("%i", instance).split()
    log = work / "out.log"
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd="/")
    return Started(proc, sock, log)


def test_installed_agent_and_controller_reach_ready_with_the_units_environment(
    venv: Path,
    redis_with_password: RedisServer,
    key_prefix: str,
    hosted_zone: dict[str, str],
    moto: Any,
    tmp_path: Path,
) -> None:
    """files install → policy edited, credentials written (0600) → agent@us-east and controller (with the off-EC2
    AWS drop-in) started as systemd would: READY=1 from both, the credentials read from $CREDENTIALS_DIRECTORY."""
    root = tmp_path / "root"
    exe = venv / "bin" / "trafficd"
    install = [str(exe), "files", "install", "--root", str(root), "--aws-credentials-drop-in"]
    subprocess.run(install, check=True, env=CLEAN_ENV)
    units = root / "etc" / "systemd" / "system"
    assert _unit(units / "trafficd-agent@.service")["ExecStart"][0].startswith(str(exe))
    policy = root / "etc" / "trafficd" / "policy.yaml"
    url = f"redis://127.0.0.1:{redis_with_password.port}/0"
    text = policy_text(url, key_prefix, hosted_zone, moto.url)
    text = text.replace(f"key_prefix: {key_prefix}}}", f"key_prefix: {key_prefix}, password_file: redis-password}}")
    text = text.replace(
        "probe: {targets: {allow_loopback: true}}",
        "probe: {auth: {api_key_file: api-key}, targets: {allow_loopback: true, allow_cleartext_api_key: true}}",
    )
    assert "api_key_file: api-key" in text
    policy.write_text(text)  # the operator's edit: regions, workers, zone, Redis; the credential names stay
    creds = root / "etc" / "trafficd" / "credentials"
    for name, value in {
        "redis-password": PASSWORD,
        "api-key": "sk-test-key",
        "aws-credentials": "[default]\naws_access_key_id = AKIATEST\naws_secret_access_key = test\n",
    }.items():
        (creds / name).write_text(value + "\n")
        (creds / name).chmod(0o600)
    check = subprocess.run(
        [str(exe), "check", "--role", "controller", "--no-probe"],
        capture_output=True,
        text=True,
        env={**CLEAN_ENV, "TRAFFICD_POLICY": str(policy), "CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert re.search(r"^OK\s+redis\s", check.stdout, re.M), check.stdout + check.stderr
    started = []
    try:
        for unit, instance in (("trafficd-agent@.service", "us-east"), ("trafficd-controller.service", "")):
            work = tmp_path / (instance or "controller")
            work.mkdir()
            started.append(_start_as_systemd(units / unit, root, instance, work))
        for s in started:
            messages = s.wait_ready()
            assert any("STATUS=" in m for m in messages)
        controller_log = started[1].log.read_text()
        assert "controller.started" in controller_log and "NoCredentials" not in controller_log
    finally:
        for s in started:
            s.proc.send_signal(signal.SIGTERM)
        for s in started:
            assert s.proc.wait(timeout=30) == 0, s.log.read_text()[-3000:]
            s.sock.close()
