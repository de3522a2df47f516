"""Reload: SIGHUP re-reads the policy, an invalid file is rejected and the last good policy stays; a daemon
started with an invalid policy exits 78 having written nothing."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import redis
from structlog.testing import capture_logs

from trafficd.policy.schema import LoadedPolicy, load_policy
from trafficd.runtime.reload import EX_CONFIG, PolicyHolder, install_sighup, load_or_exit

ROOT = Path(__file__).parent.parent
MINIMAL = (ROOT / "policies" / "minimal.yaml").read_text()
BROKEN = MINIMAL + "windows:\n  min_sample: 400\n  trip: 3\n"  # two problems, lines 22 and 23
BROKEN_PROBLEMS = [
    {
        "line": 22,
        "column": 3,
        "field": "windows.min_sample",
        "reason": "unknown key 'min_sample'; did you mean 'min_samples'?",
    },
    {"line": 23, "column": 9, "field": "windows.trip", "reason": "a duration needs a unit: write '3s' or '3ms', not 3"},
]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL)
    return path


def holder_for(path: Path, **kwargs: Any) -> PolicyHolder:
    return PolicyHolder(path, load_policy(path), **kwargs)


def test_reload_switches_to_a_valid_new_policy(policy_file: Path) -> None:
    """A changed valid file is taken: new hash in force, one policy.reloaded event with old/new hash and changes."""
    holder = holder_for(policy_file)
    old_hash = holder.hash
    policy_file.write_text(MINIMAL + "slo:\n  total_p99: 2s\n")
    with capture_logs() as logs:
        assert holder.reload() is True
    assert holder.policy.slo.total_p99 == 2.0 and holder.hash != old_hash
    assert [e["event"] for e in logs] == ["policy.reloaded"]
    event = logs[0]
    assert (event["old_hash"], event["new_hash"], event["changed"]) == (old_hash, holder.hash, True)
    assert event["changes"] == [
        "slo.total_p99: 3s → 2s",
        "recovery threshold (recover.below × slo.total_p99): 2.4s → 1.6s",
    ]
    assert event["file_sha256"] == holder.current.sha256 and holder.reloads == 1


def test_invalid_file_is_rejected_and_the_last_good_policy_stays(policy_file: Path) -> None:
    """An invalid file: reload() is False, the same LoadedPolicy stays, the event lists every problem."""
    holder = holder_for(policy_file)
    good = holder.current
    policy_file.write_text(BROKEN)
    with capture_logs() as logs:
        assert holder.reload() is False
    assert holder.current is good
    assert (holder.rejections, holder.last_reload_ok) == (1, False)
    assert [e["event"] for e in logs] == ["policy.reload_rejected"]
    event = logs[0]
    assert event["log_level"] == "error" and event["policy_hash"] == good.hash and event["problem_count"] == 2
    assert event["problems"] == [{"file": str(policy_file), **p} for p in BROKEN_PROBLEMS]


def test_deleted_file_is_rejected(policy_file: Path) -> None:
    """A policy file that vanished is a rejected reload, not a crash."""
    holder = holder_for(policy_file)
    policy_file.unlink()
    with capture_logs() as logs:
        assert holder.reload() is False
    assert logs[0]["problems"][0]["reason"] == "cannot read the file: No such file or directory"


def test_comment_only_edit_keeps_hash_and_calls_no_listener(policy_file: Path) -> None:
    """A comment edit reloads with changed=false and the same hash; listeners run only on real changes."""
    holder = holder_for(policy_file)
    calls: list[tuple[str, str]] = []
    holder.on_change(lambda old, new: calls.append((old.hash, new.hash)))
    policy_file.write_text("# edited at 03:00 by on-call\n" + MINIMAL)
    with capture_logs() as logs:
        assert holder.reload() is True
    assert logs[0]["changed"] is False and logs[0]["changes"] == []
    assert logs[0]["old_hash"] == logs[0]["new_hash"] and calls == []
    old_hash = holder.hash
    policy_file.write_text(MINIMAL + "ramp:\n  max_step: 10%\n")
    with capture_logs():
        assert holder.reload() is True
    assert calls == [(old_hash, holder.hash)]


def test_a_failing_listener_does_not_undo_the_reload(policy_file: Path) -> None:
    """A listener that raises is logged; the new policy stays in force."""
    holder = holder_for(policy_file)

    def broken(old: LoadedPolicy, new: LoadedPolicy) -> None:
        raise RuntimeError("boom")

    holder.on_change(broken)
    policy_file.write_text(MINIMAL + "ramp:\n  max_step: 10%\n")
    with capture_logs() as logs:
        assert holder.reload() is True
    assert holder.policy.ramp.max_step == 0.1
    assert [e["event"] for e in logs] == ["policy.reloaded", "policy.listener_failed"]
    assert logs[1]["error"] == "RuntimeError: boom"


def test_accept_hook_refuses_a_valid_policy_the_daemon_cannot_run(policy_file: Path) -> None:
    """An agent's check (its region must stay in the policy) turns a valid but unusable file into a rejection."""

    def region_kept(p: Any) -> list[str]:
        return [] if "eu-west" in p.regions else ["region 'eu-west' (this agent's) is no longer in the policy"]

    holder = holder_for(policy_file, accept=region_kept)
    good = holder.current
    policy_file.write_text(MINIMAL.split("  eu-west:")[0] + "dns:" + MINIMAL.split("\ndns:")[1])
    with capture_logs() as logs:
        assert holder.reload() is False
    assert holder.current is good
    assert logs[0]["problems"] == [
        {
            "file": str(policy_file),
            "line": None,
            "column": None,
            "field": "",
            "reason": "region 'eu-west' (this agent's) is no longer in the policy",
        }
    ]


def test_load_or_exit_exits_78_with_every_problem_on_stderr(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad policy at start: SystemExit(78), each problem on stderr with file:line:column, then a summary."""
    policy_file.write_text(BROKEN)
    with capture_logs() as logs, pytest.raises(SystemExit) as info:
        load_or_exit(policy_file)
    assert info.value.code == EX_CONFIG == 78
    assert capsys.readouterr().err.splitlines() == [
        f"{policy_file}:22:3: windows.min_sample: unknown key 'min_sample'; did you mean 'min_samples'?",
        f"{policy_file}:23:9: windows.trip: a duration needs a unit: write '3s' or '3ms', not 3",
        f"{policy_file}: 2 problems; not starting (exit 78)",
    ]
    assert [e["event"] for e in logs] == ["policy.load_rejected"]


def test_load_or_exit_under_systemd_writes_only_the_json_event(
    policy_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd (JOURNAL_STREAM set) a bad policy at start writes no plain line: the policy.load_rejected
    event alone carries every problem, so the journal holds only JSON."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    policy_file.write_text(BROKEN)
    with capture_logs() as logs, pytest.raises(SystemExit) as info:
        load_or_exit(policy_file)
    assert info.value.code == EX_CONFIG
    assert capsys.readouterr().err == ""
    (event,) = logs
    assert event["event"] == "policy.load_rejected" and event["problem_count"] == 2
    assert [p["line"] for p in event["problems"]] == [22, 23]


def test_load_or_exit_returns_the_policy_and_logs_warnings(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid policy is returned and logged with its hash; its warnings are fields of that JSON event (at
    WARNING), never plain lines on stderr."""
    policy_file.write_text(MINIMAL + "ramp:\n  cooldown: 30s\n")
    with capture_logs() as logs:
        loaded = load_or_exit(policy_file)
    assert logs[0]["event"] == "policy.loaded" and logs[0]["policy_hash"] == loaded.hash
    assert logs[0]["log_level"] == "warning"
    assert [(w["line"], w["field"]) for w in logs[0]["warnings"]] == [(22, "ramp.cooldown")]
    assert capsys.readouterr().err == ""


async def test_sighup_reloads_in_process(policy_file: Path) -> None:
    """install_sighup: a real SIGHUP to this process makes the holder re-read the file on the event loop."""
    holder = holder_for(policy_file)
    changed = asyncio.Event()
    holder.on_change(lambda old, new: changed.set())
    loop = asyncio.get_running_loop()
    install_sighup(loop, holder)
    try:
        await asyncio.to_thread(policy_file.write_text, MINIMAL + "slo:\n  error_rate: 2%\n")
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.wait_for(changed.wait(), timeout=5)
        assert holder.policy.slo.error_rate == 0.02 and holder.reloads == 1
        assert [e["event"] for e in logs] == ["policy.reloaded"]
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


CHILD = """
import asyncio, signal, sys
from trafficd.runtime import logs
from trafficd.runtime.reload import PolicyHolder, install_sighup, load_or_exit

async def main() -> None:
    holder = PolicyHolder(sys.argv[1], load_or_exit(sys.argv[1]))
    loop = asyncio.get_running_loop()
    install_sighup(loop, holder)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print('{"event": "child.ready"}', flush=True)
    await stop.wait()

logs.configure("INFO", json=True)
asyncio.run(main())
"""


class Events:
    """JSON log lines of a child process, read on a thread so the test can wait with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self._lines.put(json.loads(line))

    def wait_for(self, name: str, timeout_s: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if event["event"] == name:
                return event
        raise AssertionError(f"no {name} event within {timeout_s}s")


@pytest.fixture
def child(policy_file: Path) -> Iterator[tuple[subprocess.Popen[str], Events]]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", CHILD, str(policy_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    events = Events(proc.stdout)
    try:
        yield proc, events
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sighup_on_a_real_process(policy_file: Path, child: tuple[subprocess.Popen[str], Events]) -> None:
    """A running process: good edit → reloaded; broken edit → rejected, last good kept; next good edit → reloaded."""
    proc, events = child
    started = events.wait_for("policy.loaded")
    events.wait_for("child.ready")

    policy_file.write_text(MINIMAL + "slo:\n  total_p99: 2s\n")
    proc.send_signal(signal.SIGHUP)
    reloaded = events.wait_for("policy.reloaded")
    assert reloaded["old_hash"] == started["policy_hash"] and reloaded["changes"][0] == "slo.total_p99: 3s → 2s"

    policy_file.write_text(BROKEN)
    proc.send_signal(signal.SIGHUP)
    rejected = events.wait_for("policy.reload_rejected")
    assert rejected["policy_hash"] == reloaded["new_hash"]  # the last good policy is still in force
    assert [p["field"] for p in rejected["problems"]] == ["windows.min_sample", "windows.trip"]

    policy_file.write_text(MINIMAL + "slo:\n  total_p99: 2500ms\n")
    proc.send_signal(signal.SIGHUP)
    again = events.wait_for("policy.reloaded")
    assert again["old_hash"] == reloaded["new_hash"] and again["changes"][0] == "slo.total_p99: 2s → 2.5s"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("command", [["controller"], ["agent", "--region", "us-east"]])
def test_daemon_with_invalid_policy_exits_78_and_writes_nothing(
    command: list[str], tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """`trafficd agent|controller` with an invalid policy exit 78, print the problem, and leave Redis untouched."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        MINIMAL.replace("dns:\n  zone_id", f"redis:\n  url: {redis_url}\n  key_prefix: {key_prefix}\ndns:\n  zone_id")
        + "windows:\n  min_sample: 400\n"
    )
    client = redis.Redis.from_url(redis_url)
    before = set(client.keys("*"))  # other tests' keys may expire meanwhile: compare what was added
    proc = subprocess.run(
        [sys.executable, "-m", "trafficd", *command, "--policy", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 78
    assert f"{path}:25:3: windows.min_sample: unknown key 'min_sample'; did you mean 'min_samples'?" in proc.stderr
    assert client.keys(f"{key_prefix}*") == [] and set(client.keys("*")) - before == set()
