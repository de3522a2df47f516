"""`trafficd check`: one line (or JSON object) per preflight check, against a real Redis, moto and a fake worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ctlkit import policy_text

from trafficd import cli
from trafficd.dev.services import free_port, stop_process, wait_for_port


def run_check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["check", *argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    return code, {c["name"] + ("" if c["name"] != "workers" else ":" + c["detail"]): c for c in out["checks"]}


def test_check_passes_with_redis_aws_and_zone_and_says_what_bootstrap_would_create(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    hosted_zone: dict[str, str],
    moto: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Policy, secrets, Redis version/ACL/clock, AWS, zone: ok; the empty zone's owned records: warn, exit 0."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(redis_url, key_prefix, hosted_zone, moto.url))
    code, checks = run_check(capsys, "--policy", str(path), "--no-probe")
    assert code == 0, checks
    assert checks["policy"]["status"] in ("ok", "warn")  # this test policy's short ramp draws a warning
    for name in ("secrets", "redis", "acl", "clock", "aws", "zone"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "version 7." in checks["redis"]["detail"] or "version 6." in checks["redis"]["detail"]
    assert checks["records"]["status"] == "warn" and "dns bootstrap" in checks["records"]["detail"]
    assert "offset against Redis" in checks["clock"]["detail"]


def test_check_fails_when_redis_is_unreachable_and_probes_each_worker(
    tmp_path: Path,
    key_prefix: str,
    hosted_zone: dict[str, str],
    moto: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Redis down: the redis line fails (exit 1); a listening worker is probed once (ok), a dead one fails."""
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "trafficd.dev", "fake-worker", "--port", str(port), "--model", "m", "--ttft-ms", "5"],
        start_new_session=True,  # stop_process signals the group
    )
    try:
        wait_for_port(port, proc=worker)
        text = policy_text(f"redis://127.0.0.1:{free_port()}/0", key_prefix, hosted_zone, moto.url)
        text = text.replace(
            '{name: us-east-w1, url: "http://127.0.0.1:9"}', f'{{name: us-east-w1, url: "http://127.0.0.1:{port}"}}'
        )
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        code, checks = run_check(capsys, "--policy", str(path), "--role", "agent")
        assert code == 1
        assert checks["redis"]["status"] == "fail" and "127.0.0.1" in checks["redis"]["detail"]
        workers = {k: v for k, v in checks.items() if k.startswith("workers:")}
        ok = [v for v in workers.values() if "us-east/us-east-w1" in v["detail"]]
        assert len(ok) == 1 and ok[0]["status"] == "ok" and "first token" in ok[0]["detail"]
        assert any(v["status"] == "fail" and "eu-west" in v["detail"] for v in workers.values())
    finally:
        stop_process(worker)


def test_check_fails_for_a_model_the_worker_does_not_list(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    hosted_zone: dict[str, str],
    moto: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker that answers any model but does not list the policy's: the models check fails (exit 1) naming the
    model list URL and what it lists; a worker whose list cannot be read is a warning."""
    port = free_port()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trafficd.dev",
            "fake-worker",
            "--port",
            str(port),
            "--model",
            "other",
            "--ttft-ms",
            "5",
        ],
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc=worker)
        text = policy_text(redis_url, key_prefix, hosted_zone, moto.url).replace(
            '{name: us-east-w1, url: "http://127.0.0.1:9"}', f'{{name: us-east-w1, url: "http://127.0.0.1:{port}/v1/"}}'
        )
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        assert cli.main(["check", "--policy", str(path), "--role", "agent", "--json"]) == 1
        checks = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "models"]
    finally:
        stop_process(worker)
    failed = [c for c in checks if c["status"] == "fail"]
    assert [c["detail"] for c in failed] == [
        f"us-east/us-east-w1 m (openai-chat): not listed at http://127.0.0.1:{port}/v1/models; the worker lists other"
    ]
    assert any(c["status"] == "warn" and "eu-west" in c["detail"] for c in checks)
