"""/metrics passes `promtool check metrics`; agents and controllers export their own metrics; counters count right."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from trafficd.model import Sample
from trafficd.policy.schema import load_policy
from trafficd.runtime import metrics
from trafficd.runtime.reload import PolicyHolder

MINIMAL = Path(__file__).resolve().parent.parent / "policies" / "minimal.yaml"


def promtool_check(text: bytes) -> str:
    """`promtool check metrics` on `text`; returns its complaints (empty when clean)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package `prometheus`; bootstrap installs it)"
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    return (proc.stdout + proc.stderr).decode() + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")


def names(text: bytes) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text.decode())}


def populate() -> None:
    """Put a value in every metric family, as a running agent and controller would."""
    metrics.watch_policy(PolicyHolder(MINIMAL, load_policy(MINIMAL)))
    fields = {
        "p99_ms": 3120.0,
        "ttft_p99_ms": 250.0,
        "n": 420,
        "error_rate": 0.01,
        "over_slo_fraction": 0.02,
        "state_after": "draining",
        "serving_fraction_after": 0.75,
        "weights_after": {"eu-west": 0.75, "us-east": 0.25},
        "heartbeat_age_s": 1.5,
    }
    metrics.record_region("eu-west", fields)
    metrics.record_slo(3.0, 0.3, 0.01)
    metrics.record_overrides(["eu-west"], {"eu-west": "drain"}, frozen=False)
    metrics.SHIFTS.labels("eu-west", "down").inc()
    metrics.EVALUATIONS.labels("leader").inc()
    metrics.EVALUATION_SECONDS.observe(0.02)
    metrics.LEADER.set(1)
    metrics.record_reconcile("applied", 2, 0)
    metrics.loop_completed()
    metrics.watch_agent(object(), 3.0, 0.3)
    sample = Sample("eu-west", "w1", "m", 0.0, ok=True, reason=None, total_ms=2900.0, ttft_ms=280.0)
    metrics.record_probe(sample)


def test_controller_and_agent_metrics_pass_promtool() -> None:
    """Both daemons' /metrics text passes `promtool check metrics` with no complaint."""
    populate()
    for role in ("controller", "agent"):
        assert promtool_check(metrics.exposition(role)) == "", role


def test_agents_export_no_leader_and_controllers_no_probe_histograms() -> None:
    """An agent's /metrics has probe histograms and sample buffers but no trafficd_leader; a controller the reverse."""
    populate()
    agent, controller = names(metrics.exposition("agent")), names(metrics.exposition("controller"))
    assert {"trafficd_probe_ttft_seconds", "trafficd_probe_duration_seconds", "trafficd_samples_dropped"} <= agent
    assert "trafficd_leader" not in agent and "trafficd_region_state" not in agent
    assert "trafficd_leader" in controller and "trafficd_probe_duration_seconds" not in controller
    common = {"trafficd_build_info", "trafficd_policy_info", "trafficd_config_last_reload_successful"}
    assert common <= agent and common <= controller


def test_probe_histogram_buckets_sit_around_the_slo() -> None:
    """Bucket bounds are multiples of the SLO threshold, with the threshold itself a bound."""
    assert 3.0 in metrics.slo_buckets(3.0) and 0.3 in metrics.slo_buckets(0.3)
    assert metrics.slo_buckets(3.0)[:3] == (0.3, 0.75, 1.5)


def sample_value(name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(metrics.exposition("controller").decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_a_failed_zone_listing_is_not_a_failed_change() -> None:
    """`dns_changes_total{outcome="error"}` counts batches only: a reconcile that failed listing the zone is not one."""
    before = sample_value("trafficd_dns_changes_total", {"outcome": "error"})
    reconciles = sample_value("trafficd_dns_reconciles_total", {"status": "error"})
    metrics.record_reconcile("error", 0, 0)  # ListResourceRecordSets failed: no batch was built
    assert sample_value("trafficd_dns_changes_total", {"outcome": "error"}) == before
    assert sample_value("trafficd_dns_reconciles_total", {"status": "error"}) == reconciles + 1
    metrics.record_reconcile("error", 3, 0)  # the ChangeResourceRecordSets call failed
    assert sample_value("trafficd_dns_changes_total", {"outcome": "error"}) == before + 1


def test_pending_change_gauges_follow_the_reconciles() -> None:
    """A pending change sets the gauge and its age; the next settled reconcile clears both."""
    metrics.record_reconcile("pending", 0, 0, now=100.0)
    metrics.record_reconcile("stuck", 0, 0, now=160.0)
    assert sample_value("trafficd_dns_change_pending", {}) == 1.0
    assert sample_value("trafficd_dns_change_pending_seconds", {}) == 60.0
    metrics.record_reconcile("no_changes", 0, 1, now=170.0)
    assert sample_value("trafficd_dns_change_pending", {}) == 0.0
    assert sample_value("trafficd_dns_drifted_records", {}) == 1.0


def test_policy_info_and_reload_outcome_follow_the_holder(tmp_path: Path) -> None:
    """trafficd_policy_info carries the hash in force; a rejected reload sets last_reload_successful to 0."""
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL.read_text())
    holder = PolicyHolder(path, load_policy(path))
    metrics.watch_policy(holder)
    assert sample_value("trafficd_policy_info", {"hash": holder.hash}) == 1.0
    assert sample_value("trafficd_config_last_reload_successful", {}) == 1.0
    path.write_text("version: 1\nnonsense: true\n")
    assert holder.reload() is False
    assert sample_value("trafficd_config_last_reload_successful", {}) == 0.0
    assert sample_value("trafficd_config_reloads_total", {"outcome": "rejected"}) == 1.0


def test_running_daemons_serve_metrics_that_pass_promtool(
    redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path
) -> None:
    """A real controller and a real agent process: each /metrics passes promtool; only the controller leads."""
    import os
    import signal
    import sys
    import urllib.request

    from ctlkit import policy_text
    from kit import eventually

    from trafficd.dev.services import free_port

    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(redis_url, key_prefix, hosted_zone, moto.url))
    ports = {"controller": free_port(), "agent": free_port()}
    commands = {
        "controller": ["controller", "--policy", str(path)],
        "agent": ["agent", "--policy", str(path), "--region", "eu-west"],
    }
    procs = {
        role: subprocess.Popen(
            [sys.executable, "-m", "trafficd", *cmd, "--metrics-port", str(ports[role])],
            stdout=(tmp_path / f"{role}.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        for role, cmd in commands.items()
    }

    def scrape(role: str) -> bytes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[role]}/metrics", timeout=5) as r:
                return bytes(r.read())
        except OSError:
            return b""

    def scraped(role: str, needle: bytes) -> bytes | None:
        text = scrape(role)
        return text if needle in text else None

    try:
        controller = eventually(lambda: scraped("controller", b"trafficd_leader 1.0"), "leader", timeout_s=60)
        agent = eventually(lambda: scraped("agent", b"trafficd_probe_duration_seconds_bucket"), "probes", timeout_s=60)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=20)
    assert promtool_check(controller) == "" and promtool_check(agent) == ""
    assert "trafficd_leader" not in names(agent) and "trafficd_region_serving_ratio" in names(controller)
