"""Spill-over by measured load, end to end: the demo's real processes with its simulated users (us-east 5×
eu-west), live capacity read from the fake workers' vLLM metrics, and a receiver whose KV cache is near full."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kit import eventually, log_events

from trafficd.dev.demo import DEMO_USERS
from trafficd.dev.services import LOOPBACK
from trafficd.dev.stack import REGIONS, TEST_TIMING, set_worker, started_stack
from trafficd.dns.route53 import client as r53client
from trafficd.dns.route53.provider import Route53Provider
from trafficd.policy.schema import load_policy

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

FAST = TEST_TIMING
KV_TOKENS = 100_000
PINNED_TOKENS = 93_000  # one long prompt's share of the KV cache: 93 %, over the 90 % kv_target


def _judged(log: Path, region: str) -> list[dict[str, Any]]:
    return [
        e
        for e in log_events(log)
        if e.get("region") == region and e.get("event") in ("controller.region_judged", "controller.weights_shifted")
    ]


def _long_prompt(port: int, done: threading.Event) -> None:
    """One request whose prompt fills 93 % of the worker's KV cache and whose prefill outlasts the test."""
    body = {
        "model": "demo-small",
        "messages": [{"role": "user", "content": "x" * (4 * PINNED_TOKENS - 200)}],
        "stream": True,
        "max_tokens": 8,
    }
    req = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with contextlib.suppress(OSError, ValueError, http.client.HTTPException):  # URLError is an OSError
        urllib.request.urlopen(req, timeout=300).read()  # ends when the stack stops the worker
    done.set()


def test_a_receiver_with_a_full_kv_cache_takes_none_of_a_drained_regions_users(redis_url: str, tmp_path: Path) -> None:
    """us-east (5× eu-west's users) has free slots but a KV cache 93 % full (one long prompt it really holds, over
    the 90 % target): its live headroom is 0 req/s, so when eu-west is drained its users all go to ap-southeast
    and none to us-east, although us-east is eu-west's first neighbour and (declared) takes 60 %."""
    stack_cm = started_stack(timing=FAST, redis_url=redis_url, workdir=tmp_path, users=DEMO_USERS, live_capacity=True)
    with stack_cm as (_stack, policy_file, ports):
        policy = load_policy(policy_file).policy
        provider = Route53Provider(policy, r53client.route53_client(policy))
        log = tmp_path / "controller.log"
        set_worker(ports["us-east"], kv_cache_tokens=KV_TOKENS, prefill_ms_per_ktok=3000.0)
        done = threading.Event()
        holder = threading.Thread(target=_long_prompt, args=(ports["us-east"], done), daemon=True)
        holder.start()

        def us_east_full() -> bool:
            cap = [e.get("capacity") or {} for e in _judged(log, "us-east")]
            return bool(cap) and cap[-1].get("source") == "live" and (cap[-1].get("kv_usage") or 0) >= 0.9

        eventually(us_east_full, "us-east judged with its KV cache over 90 %", timeout_s=40, interval_s=0.2)
        eventually(
            lambda: all(e and e[-1].get("state_after") == "healthy" for e in (_judged(log, r) for r in REGIONS)),
            "every region healthy",
            timeout_s=40,
            interval_s=0.2,
        )
        set_worker(ports["eu-west"], ttft_ms=FAST.slow_ttft_ms)
        rows: list[dict[str, float]] = []

        def drained() -> bool:
            matrix = provider.current_matrix() or {}
            rows.append(dict(matrix.get("eu-west", {})))
            return rows[-1].get("eu-west", 1.0) == 0.0

        eventually(drained, "eu-west drained", timeout_s=60, interval_s=0.2)
        assert not done.is_set()  # the long prompt was held the whole time
        assert all(row.get("us-east", 0.0) == 0.0 for row in rows), rows
        assert rows[-1].get("ap-southeast") == 1.0, rows[-1]
        us_east = [e["capacity"] for e in _judged(log, "us-east") if e.get("capacity", {}).get("source") == "live"]
        assert all(c["headroom_rps"] == 0.0 for c in us_east[-5:]), us_east[-5:]
        eu_west = [e for e in _judged(log, "eu-west") if e.get("event") == "controller.weights_shifted"]
        assert eu_west and all(e["capacity"]["source"] == "live" for e in eu_west), eu_west
    holder.join(timeout=30)  # the stopped worker ended the long request
