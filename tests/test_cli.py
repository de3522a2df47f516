"""The command line as a whole: one error tree mapped to exit codes once, lazy commands, one --policy default,
--version, quiet closed pipes, development commands kept out, and daemons that never signal READY with a
configuration that cannot work."""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ctlkit import policy_text

from trafficd import __version__, cli, errors
from trafficd.dev.services import free_port

HEAVY = ("redis", "boto3", "botocore", "aiohttp", "pydantic", "apscheduler", "structlog")


def trafficd(
    *argv: str, env: dict[str, str] | None = None, module: str = "trafficd"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def no_password_policy(tmp_path: Path, redis_url: str, prefix: str, zone: dict[str, str], moto_url: str) -> Path:
    """A valid policy whose Redis password comes from an environment variable nobody set."""
    text = policy_text(redis_url, prefix, zone, moto_url)
    text = text.replace(f"key_prefix: {prefix}}}", f"key_prefix: {prefix}, password_env: TRAFFICD_TEST_UNSET_PW}}")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_error_tree_maps_to_exit_codes() -> None:
    """Config errors 78, transient 75, refused 1, usage 2; the existing classes sit in their branch."""
    from trafficd.dns.route53.outcome import Route53Error
    from trafficd.policy.schema import PolicyError
    from trafficd.probe.agent import AgentConfigError
    from trafficd.probe.credentials import SecretError
    from trafficd.probe.discovery import DiscoveryError
    from trafficd.probe.prober import ProbeConfigError
    from trafficd.stats.client import StoreConfigError

    for cls in (PolicyError, SecretError, StoreConfigError, ProbeConfigError, AgentConfigError):
        assert issubclass(cls, errors.ConfigError), cls
    assert issubclass(DiscoveryError, errors.TransientError)
    assert issubclass(Route53Error, errors.RefusedError)
    assert errors.classify(StoreConfigError("x")) == 78
    assert errors.classify(DiscoveryError("x")) == 75
    assert errors.classify(Route53Error("x")) == 1
    assert errors.classify(errors.UsageError("x")) == 2
    assert errors.classify(ConnectionRefusedError("x")) == 75
    assert errors.classify(ValueError("a bug")) is None  # unexpected: the traceback stays


def test_library_errors_are_classified_without_catching_them_in_commands() -> None:
    """redis-py and botocore errors map to 75 (unreachable) or 78 (credentials, permissions)."""
    import botocore.exceptions
    import redis.exceptions

    assert errors.classify(redis.exceptions.ConnectionError("down")) == 75
    assert errors.classify(redis.exceptions.AuthenticationError("bad password")) == 78
    assert errors.classify(botocore.exceptions.NoCredentialsError()) == 78
    denied = botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "List")
    throttled = botocore.exceptions.ClientError({"Error": {"Code": "Throttling", "Message": "slow"}}, "List")
    assert errors.classify(denied) == 78 and errors.classify(throttled) == 75


def test_unset_redis_password_exits_78_with_one_message_for_every_command(
    tmp_path: Path, redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any
) -> None:
    """With the password variable unset, status, drain, stats and freeze exit 78 naming it, without a traceback."""
    path = str(no_password_policy(tmp_path, redis_url, key_prefix, hosted_zone, moto.url))
    for argv in (
        ["status", "--policy", path, "--no-dns"],
        ["drain", "us-east", "--for", "1h", "--reason", "x", "--policy", path],
        ["stats", "--policy", path],
        ["freeze", "--reason", "x", "--policy", path],
    ):
        result = trafficd(*argv)
        assert result.returncode == 78, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "TRAFFICD_TEST_UNSET_PW" in lines[0], (argv, result.stderr)


class NotifySocket:
    """A test $NOTIFY_SOCKET: collects what the daemon sends to systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("daemon", [["controller"], ["agent", "--region", "us-east"]])
def test_daemons_with_an_unusable_configuration_exit_78_and_never_signal_ready(
    daemon: list[str],
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    hosted_zone: dict[str, str],
    moto: Any,
) -> None:
    """Controller and agent without their Redis password: exit 78 before READY=1 (systemd will not restart)."""
    path = no_password_policy(tmp_path, redis_url, key_prefix, hosted_zone, moto.url)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        result = trafficd(*daemon, "--policy", str(path), env={"NOTIFY_SOCKET": str(notify.path)})
        assert result.returncode == 78, result.stdout + result.stderr
        assert "TRAFFICD_TEST_UNSET_PW" in result.stderr and "Traceback" not in result.stderr
        assert f'"{daemon[0]}.start_refused"' in result.stdout
        assert not any("READY=1" in m for m in notify.drain())
    finally:
        notify.close()


def test_controller_without_aws_credentials_exits_78_before_ready(
    tmp_path: Path, redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any
) -> None:
    """No AWS credentials anywhere: the controller says so and exits 78 instead of failing every tick."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(redis_url, key_prefix, hosted_zone, moto.url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "trafficd", "controller", "--policy", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "NOTIFY_SOCKET": str(notify.path)},
        )
        assert result.returncode == 78, result.stdout + result.stderr
        assert "no AWS credentials found" in result.stderr
        assert not any("READY=1" in m for m in notify.drain())
    finally:
        notify.close()


def test_controller_with_a_missing_hosted_zone_exits_78(
    tmp_path: Path, redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any
) -> None:
    """A zone id that does not exist is a configuration error at start (NoSuchHostedZone), not a retry loop."""
    path = tmp_path / "policy.yaml"
    zone = {**hosted_zone, "id": "ZNOSUCHZONE0000"}
    path.write_text(policy_text(redis_url, key_prefix, zone, moto.url))
    result = trafficd("controller", "--policy", str(path))
    assert result.returncode == 78, result.stdout + result.stderr
    assert "ZNOSUCHZONE0000" in result.stderr and "NoSuchHostedZone" in result.stderr


def test_help_imports_no_command_module_and_names_every_command() -> None:
    """`trafficd --help` lists every command from the static table without importing a heavy library."""
    code = (
        "import sys, contextlib, io\n"
        "from trafficd import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    first, _, rest = result.stdout.partition("\n")
    assert first == "[]"
    for name in cli.COMMANDS:
        assert name in rest


def _imported_after(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """Which of `names` a fresh interpreter has imported after `cli.main(argv)` (its output discarded)."""
    code = (
        "import sys, contextlib, io\n"
        "from trafficd import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    with contextlib.suppress(SystemExit):\n"
        f"        cli.main({argv!r})\n"
        f"print(sorted(m for m in {names!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    imported: list[str] = eval(result.stdout)  # a list literal of module names
    return imported


def test_fast_commands_import_only_what_they_use(
    tmp_path: Path, redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any
) -> None:
    """The start-up targets (bench-cli): `status --help` imports no heavy library; `policy check` no structlog or
    I/O library; a whole `status --no-dns` (a Redis with no controller) no structlog, boto3, aiohttp or scheduler;
    a whole `status` adds botocore for its Route 53 read, not boto3's resource layer (s3transfer) and no dnspython
    (the provider's DNS verification)."""
    assert _imported_after(["status", "--help"], HEAVY) == []
    example = str(Path(__file__).resolve().parent.parent / "policies" / "example.yaml")
    assert _imported_after(["policy", "check", example], HEAVY) == ["pydantic"]
    policy = tmp_path / "policy.yaml"
    text = Path(example).read_text().replace("redis://127.0.0.1:6379/0", redis_url)
    text = text.replace("key_prefix: trafficd", f"key_prefix: {key_prefix}")
    policy.write_text("\n".join(line for line in text.splitlines() if "password_file" not in line) + "\n")
    assert _imported_after(["status", "--no-dns", "--policy", str(policy)], HEAVY) == ["pydantic", "redis"]
    text = text.replace("zone_id: Z0123456789EXAMPLE", f"zone_id: {hosted_zone['id']}\n  endpoint_url: {moto.url}")
    policy.write_text("\n".join(line for line in text.splitlines() if "password_file" not in line) + "\n")
    with_dns = _imported_after(["status", "--policy", str(policy)], (*HEAVY, "dns", "s3transfer"))
    assert with_dns == ["botocore", "pydantic", "redis"]


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of `parser` (`status`, `policy`, `policy check`, …)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(*path, name), *_command_paths(sub, (*path, name))]
    return found


def test_every_command_help_imports_no_heavy_library() -> None:
    """`trafficd COMMAND [ACTION] --help`, for every command and action, imports none of the heavy libraries."""
    paths = _command_paths(cli.build_parser())
    assert {p[0] for p in paths} == set(cli.COMMANDS) and len(paths) > len(cli.COMMANDS)
    # one interpreter runs them in turn: modules only accumulate, so the first --help that imports one is named
    code = (
        "import sys, contextlib, io, json\n"
        "from trafficd import cli\n"
        f"for path in {paths!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        cli.main([*path, '--help'])\n"
        f"    print(json.dumps([' '.join(path), sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    imported = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(imported) == len(paths), result.stdout + result.stderr
    for command, modules in imported:
        assert modules == [], f"trafficd {command} --help imports {', '.join(modules)}"


def test_static_help_texts_match_the_registered_commands() -> None:
    """Each command's one-line help in cli.COMMANDS is the one its module registers (and no command is missing)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: spec.help for name, spec in cli.COMMANDS.items()}
    assert not any(spec.module.startswith("trafficd.dev") for spec in cli.COMMANDS.values())


def test_every_policy_option_defaults_to_trafficd_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """$TRAFFICD_POLICY is the --policy default of every command that takes one (else /etc/trafficd/policy.yaml)."""
    monkeypatch.setenv("TRAFFICD_POLICY", "/tmp/from-env.yaml")
    parser = cli.build_parser()
    seen = 0
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif "--policy" in action.option_strings and p.prog != "trafficd probe":  # probe: policy optional
                assert action.default == "/tmp/from-env.yaml", p.prog
                seen += 1
    assert seen >= 10
    monkeypatch.delenv("TRAFFICD_POLICY")
    assert cli.default_policy() == "/etc/trafficd/policy.yaml"


def test_version() -> None:
    """`trafficd --version` prints the package version."""
    result = trafficd("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"trafficd {__version__}"


def test_closed_pipe_exits_quietly() -> None:
    """`trafficd policy schema | true`: the reader is gone before the first write; no traceback, exit 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trafficd", "policy", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # closed while the child is still importing: its first write meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141
    assert err == ""


def test_closed_pipe_in_process() -> None:
    """A handler hitting BrokenPipeError (any command) returns 141 without raising."""

    def broken(args: argparse.Namespace) -> int:
        raise BrokenPipeError

    saved = os.dup(1)  # _closed_pipe points fd 1 at /dev/null: put the real one back
    try:
        assert cli.dispatch(argparse.Namespace(func=broken)) == 141
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def test_development_commands_are_not_production_commands() -> None:
    """`trafficd demo` points to trafficd-dev (exit 2); `python -m trafficd.dev --help` lists them."""
    result = trafficd("demo")
    assert result.returncode == 2 and "trafficd-dev demo" in result.stderr
    dev = trafficd("--help", module="trafficd.dev")
    assert dev.returncode == 0
    for name in ("demo", "fake-worker", "bench-probe"):
        assert name in dev.stdout


def test_fake_worker_runs_from_the_dev_entry_point(tmp_path: Path) -> None:
    """`python -m trafficd.dev fake-worker` serves on its port (the demo and tests start workers this way)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trafficd.dev", "fake-worker", "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "fake worker did not listen"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _record(seen: dict[str, tuple[int, ...]], command: str) -> int:
    seen[command] = gc.get_threshold()
    return 0


def test_commands_collect_garbage_late_and_daemons_at_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command runs with the raised gen-0 threshold, a daemon with the caller's; main restores the caller's."""
    seen: dict[str, tuple[int, ...]] = {}

    def parser(argv: list[str]) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.add_argument("--log-level", default=None)
        sub = p.add_subparsers(dest="command", required=True)
        for name, daemon in (("cmd", False), ("daemon", True)):
            sub.add_parser(name).set_defaults(func=lambda args: _record(seen, args.command), logs_to_stdout=daemon)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    caller = gc.get_threshold()
    assert cli.main(["cmd"]) == 0 and cli.main(["daemon"]) == 0
    assert seen["cmd"] == (max(caller[0], cli.COMMAND_GC_THRESHOLD), *caller[1:])
    assert seen["daemon"] == caller
    assert gc.get_threshold() == caller
