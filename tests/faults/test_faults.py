"""The fault suite: issue 11's failures replayed on real processes, each history checked by the independent auditor.

Every scenario starts the demo stack (redis-server, moto behind the recording proxy, three fake workers, three
agents, a controller) with windows of seconds, injects one fault, and ends with `audit()`: the auditor replays
every batch Route 53 (the proxy) accepted and checks the invariants in auditor.py. Each prints one line in the
"fault suite" section of the run; the README lists them with what each proves. Outages and the clock (wall clock
steps, Redis down or slow, Route 53 denying or ambiguous, a killed agent) are in test_faults_outages.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kit import log_events as events

from trafficd.dev.stack import REGIONS

from .auditor import Window
from .harness import fault_stack, wait

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults"), pytest.mark.timeout(240)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trafficd", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _logged(log: Path, event: str) -> bool:
    return any(e.get("event") == event for e in events(log))


def test_redis_restarted_empty_then_a_controller_start_keeps_the_drain(tmp_path: Path) -> None:
    """eu-west drained; Redis loses everything and the controller restarts: it starts from Route 53 (eu-west
    drained, still slow) and writes no weight at start — no 0→255 reset."""
    with fault_stack(tmp_path) as f:
        f.healthy_and_led()
        f.slow("eu-west")
        wait("eu-west drained in Route 53", lambda: f.weights()["eu-west"] == 0, 60)
        f.signal("controller", signal.SIGTERM)
        assert f.stack.procs["controller"].wait(10) == 0
        assert f.stack.redis is not None
        f.stack.redis.stop()
        f.stack.redis.start()  # no persistence: restarted empty
        restart = time.time()
        f.controller("controller-2")
        wait("the new controller to lead", lambda: f.leader() == "controller-2", 30)
        time.sleep(6.0)  # six evaluations with eu-west still slow
        f.windows.append(Window("at_start", restart, time.time()))
        assert f.weights() == {"us-east": 255, "eu-west": 0, "ap-southeast": 255}
        started = [e for e in events(f.log("controller-2")) if e.get("event") == "controller.state_from_dns"]
        assert started and started[0]["serving"]["eu-west"] == 0.0
        assert f.audit("redis_restarted_empty", "eu-west stayed at 0 through the restart") == []


def test_leader_paused_past_its_lease_cannot_write_after_the_takeover(tmp_path: Path) -> None:
    """The leader is SIGSTOPped mid-drain past its 5 s lease; the standby takes over (new writer epoch); the old
    leader resumes: every batch of one epoch comes from one writer, and the old one's late batches are refused."""
    with fault_stack(tmp_path) as f:
        f.controller("controller-b")
        f.healthy_and_led()
        f.slow("eu-west")
        f.draining("eu-west")
        first, other = f.leader_and_standby()
        f.signal(first, signal.SIGSTOP)
        wait("the standby to take the lease", lambda: f.leader() == other, 30)
        wait("the new leader to write", lambda: any(b.writer == f.writer_of(other) for b in f.proxy.accepted_batches))
        f.signal(first, signal.SIGCONT)
        time.sleep(4.0)  # the resumed process runs whatever it was doing
        late = [b for b in f.proxy.accepted_batches if b.writer == f.writer_of(first) and b.at > time.time() - 4.0]
        assert late == []
        assert f.audit("leader_sigstop_past_lease", f"{len(f.proxy.refused_batches)} batch(es) refused") == []


def test_leader_killed_mid_drain_the_standby_continues_in_steps(tmp_path: Path) -> None:
    """SIGKILL of the leader mid-drain: the standby takes the lease and a new epoch and continues step by step."""
    with fault_stack(tmp_path) as f:
        f.controller("controller-b")
        f.healthy_and_led()
        f.slow("eu-west")
        f.draining("eu-west")
        first, other = f.leader_and_standby()
        f.signal(first, signal.SIGKILL)
        wait("the standby to lead", lambda: f.leader() == other, 30)
        wait("eu-west drained", lambda: f.weights()["eu-west"] == 0, 60)
        assert f.audit("leader_sigkill") == []


def test_dry_run_beside_the_leader_never_writes_and_shows_in_status(tmp_path: Path) -> None:
    """A dry-run controller beside the real one: no lease, no batch, listed by `status` as a watcher; the real one
    drains eu-west alone."""
    with fault_stack(tmp_path) as f:
        f.controller("dry", "--dry-run")
        f.healthy_and_led()
        f.slow("eu-west")
        f.draining("eu-west")
        status = _cli("status", "--policy", str(f.policy_file), "--json", "--no-dns")
        data = json.loads(status.stdout)
        assert [w["id"] for w in data["dry_run_watchers"]] == [f.writer_of("dry")]
        assert data["leader"].startswith(f.writer_of("controller"))
        assert all(b.writer != f.writer_of("dry") for b in f.proxy.accepted_batches)
        assert f.audit("dry_run_beside_leader") == []


def test_frozen_means_no_write_even_for_a_hand_edit(tmp_path: Path) -> None:
    """Frozen, an owned record edited by hand stays edited (the correction is logged as skipped, not sent) and a
    slow region is not drained; after unfreeze the controller resumes."""
    with fault_stack(tmp_path) as f:
        f.healthy_and_led()
        assert _cli("freeze", "--reason", "fault suite", "--for", "2m", "--policy", str(f.policy_file)).returncode == 0
        frozen_at = time.time()
        time.sleep(2.0)  # the freeze is read at the next evaluation
        edit = {
            "Name": f"eu-west.pool.api.{f.policy.dns.record_name.split('api.', 1)[1]}",
            "Type": "CNAME",
            "SetIdentifier": "eu-west-to-eu-west",
            "Weight": 200,
            "TTL": 1,
            "ResourceRecords": [{"Value": f"eu-west.lb.{f.policy.dns.record_name.split('api.', 1)[1]}"}],
        }
        f.r53.change_resource_record_sets(
            HostedZoneId=f.policy.dns.zone_id,
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": edit}]},  # type: ignore[typeddict-item]
        )
        f.slow("eu-west")
        time.sleep(8.0)
        assert f.weights()["eu-west"] == 200  # not corrected, not drained
        skipped = [e for e in events(f.log("controller")) if e.get("event") == "route53.write_skipped"]
        assert skipped and all(e.get("reason") == "frozen" for e in skipped)  # the correction it did not send
        unfrozen_at = time.time()
        assert _cli("unfreeze", "--policy", str(f.policy_file)).returncode == 0
        f.windows.append(Window("while_frozen", frozen_at + 1.5, unfrozen_at))
        wait("eu-west drained after the freeze", lambda: (f.weights()["eu-west"] or 255) < 200, 60)
        assert f.audit("freeze_and_hand_edit") == []


def test_hand_edit_of_an_owned_record_is_corrected_as_drift(tmp_path: Path) -> None:
    """Not frozen (drift: correct), an owned weight edited by hand is logged as drift and put back by one batch
    whose cause is drift, sent by the leader under its epoch; nothing else moves."""
    with fault_stack(tmp_path) as f:
        f.healthy_and_led()
        # drift is measured from the zone the leader took its writer epoch on: edit only once it has taken it
        wait("the leader's writer epoch", lambda: _logged(f.log("controller"), "controller.epoch_taken"), 30)
        zone = f.policy.dns.record_name.split("api.", 1)[1]
        edit = {
            "Name": f"eu-west.pool.api.{zone}",
            "Type": "CNAME",
            "SetIdentifier": "eu-west-to-eu-west",
            "Weight": 200,
            "TTL": 1,
            "ResourceRecords": [{"Value": f"eu-west.lb.{zone}"}],
        }
        f.r53.change_resource_record_sets(
            HostedZoneId=f.policy.dns.zone_id,
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": edit}]},  # type: ignore[typeddict-item]
        )
        wait("the hand edit corrected", lambda: f.weights()["eu-west"] == 255, 30)

        def drift_batches() -> list[dict[str, object]]:
            log = events(f.log("controller"))
            return [e for e in log if e.get("event") == "route53.changes_applied" and e.get("cause") == "drift"]

        # Route 53 shows the correction before the controller has written its log line: wait for the line
        wait("the correction logged with cause drift", lambda: bool(drift_batches()), 10)
        assert any(e.get("event") == "route53.drift_detected" for e in events(f.log("controller")))
        applied = [e for e in events(f.log("controller")) if e.get("event") == "route53.changes_applied"]
        assert applied[-1].get("cause") == "drift", applied[-1:]
        assert f.weights() == dict.fromkeys(REGIONS, 255)
        assert f.audit("hand_edit_corrected") == []


def test_change_pending_past_the_timeout_alerts_once_and_holds(tmp_path: Path) -> None:
    """Route 53 keeps a drain step PENDING past `dns.propagation_timeout`: one route53.change_pending_timeout
    alert, no further batch while it is pending, and the drain goes on in steps once it is INSYNC."""
    with fault_stack(tmp_path) as f:
        f.healthy_and_led()
        f.policy_file.write_text(
            f.policy_file.read_text().replace("propagation_timeout: 30s", "propagation_timeout: 2s")
        )
        f.signal("controller", signal.SIGHUP)
        wait(
            "the 2s timeout in force",
            lambda: any(e.get("event") == "policy.reloaded" for e in events(f.log("controller"))),
            20,
        )
        f.proxy.pending_s = 8.0
        before = len(f.proxy.accepted_batches)
        f.slow("eu-west")
        wait("a first drain step sent", lambda: (f.weights()["eu-west"] or 255) < 255, 60)
        first = f.proxy.accepted_batches[before]
        wait(
            "the pending alert",
            lambda: any(e.get("event") == "route53.change_pending_timeout" for e in events(f.log("controller"))),
            20,
        )
        f.proxy.pending_s = 0.0
        wait("eu-west drained", lambda: f.weights()["eu-west"] == 0, 90)
        alerts = [e for e in events(f.log("controller")) if e.get("event") == "route53.change_pending_timeout"]
        assert len(alerts) == 1, alerts
        later = f.proxy.accepted_batches[before + 1 :]
        while_pending = [b for b in later if b.at < first.at + 7.5]  # the first change is PENDING for 8 s
        assert while_pending == [], [b.at - first.at for b in while_pending]
        assert len(later) >= 1  # the drain went on after INSYNC
        assert f.audit("pending_past_timeout", "1 alert, no batch while pending") == []


def test_sigterm_during_throttling_backoff_exits_within_5s(tmp_path: Path) -> None:
    """Route 53 throttles every change; SIGTERM while the controller backs off: it exits within 5 s, and the next
    controller resolves what happened by re-reading (no jump)."""
    with fault_stack(tmp_path) as f:
        f.healthy_and_led()
        f.proxy.inject("change", "error", code="Throttling", status=400, times=-1)
        f.slow("eu-west")
        wait(
            "the controller backing off",
            lambda: any(e.get("event") == "route53.throttled" for e in events(f.log("controller"))),
            60,
        )
        sent = time.monotonic()
        f.signal("controller", signal.SIGTERM)
        code = f.stack.procs["controller"].wait(10)
        took = time.monotonic() - sent
        assert code == 0 and took < 5.0, took
        f.proxy.faults.clear()
        f.controller("controller-2")
        f.draining("eu-west")
        assert f.audit("sigterm_in_throttle_backoff", f"exited in {took:.1f}s") == []


def test_every_region_keeps_serving_its_own_users_when_healthy(tmp_path: Path) -> None:
    """Baseline: with nothing wrong nothing is written but the takeover's epoch, and the auditor finds the bootstrap
    history clean (a check that the auditor itself accepts a quiet run)."""
    with fault_stack(tmp_path) as f:
        f.healthy_and_led()
        time.sleep(3.0)
        assert f.weights() == dict.fromkeys(REGIONS, 255)
        ours = [b for b in f.proxy.accepted_batches if b.writer is not None]
        assert all(all(r["type"] == "TXT" for _, r in b.changes) for b in ours)
        assert f.audit("quiet_baseline") == []
