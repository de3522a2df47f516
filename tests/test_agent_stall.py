"""An agent never reports its own stall as the worker's: StallWatch, and a real agent process under SIGSTOP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kit import eventually
from test_reload import Events

from trafficd.dev.services import LOOPBACK, free_port, wait_for_port
from trafficd.model import Sample
from trafficd.probe.crossing import despite_stall
from trafficd.probe.stall import StallWatch
from trafficd.stats.sketch import COUNTED_N, COUNTED_TOTAL, COUNTED_TTFT, counts_of


class FakeClocks:
    def __init__(self) -> None:
        self.mono, self.cpu = 100.0, 5.0


def watch(clocks: FakeClocks) -> StallWatch:
    return StallWatch("r1", threshold_s=0.25, tick_s=0.05, clock=lambda: clocks.mono, cpu=lambda: clocks.cpu)


def test_a_gap_longer_than_tick_plus_threshold_is_a_stall_and_its_kind_follows_cpu() -> None:
    """Ticks on time are no stall; a 3 s gap with no CPU is `paused`, a 0.5 s gap spent computing is `busy`."""
    clocks = FakeClocks()
    w = watch(clocks)
    for _ in range(5):
        clocks.mono += 0.05
        assert w.check() is None
    clocks.mono += 3.0
    paused = w.check()
    assert paused is not None and paused.kind == "paused" and paused.duration_s == pytest.approx(3.0)
    clocks.mono += 0.5
    clocks.cpu += 0.45
    busy = w.check()
    assert busy is not None and busy.kind == "busy"
    clocks.mono += 0.29  # 0.05 tick + 0.24: under the threshold
    assert w.check() is None and w.stalls_total == 2


def test_overlapping_catches_a_stall_before_the_ticker_runs() -> None:
    """A probe that ends right after a pause overlaps it even when no tick ran since; one before it does not."""
    clocks = FakeClocks()
    w = watch(clocks)
    before = (clocks.mono - 1.0, clocks.mono - 0.5)
    start = clocks.mono - 0.1
    clocks.mono += 4.0  # paused: nothing ran, not even the ticker
    stall = w.overlapping(start, clocks.mono)
    assert stall is not None and stall.duration_s == pytest.approx(4.0)
    assert w.overlapping(*before) is None
    clocks.mono += 0.05
    assert w.overlapping(clocks.mono - 0.02, clocks.mono) is None  # a probe entirely after the pause


def test_overlap_s_is_the_stalls_time_inside_a_span() -> None:
    """Two stalls (3 s and 0.5 s) and a span from inside the first to after the second: 1 s of one, 0.5 s of the
    other; a span with no stall in it: 0."""
    clocks = FakeClocks()
    w = watch(clocks)
    first_start = clocks.mono
    clocks.mono += 3.0
    w.check()
    for _ in range(20):  # 1 s of ticks on time
        clocks.mono += 0.05
        w.check()
    clocks.mono += 0.5
    w.check()
    assert w.overlap_s(first_start + 2.0, clocks.mono + 1.0) == pytest.approx(1.5)
    assert w.overlap_s(first_start + 3.0, first_start + 4.0) == pytest.approx(0.0, abs=1e-9)


def test_a_probe_over_its_slo_whatever_the_stall_took_is_kept_with_the_stall_taken_out() -> None:
    """With the agent stalled from 0.1 s to 0.6 s into a probe, its record keeps its latency and TTFT less the stall's
    time in each and counts what is over even so (with its error); over only because of the stall: discarded."""
    slo = (800.0, 300.0)

    def probe(total_ms: float, ttft_ms: float | None, ok: bool = True) -> Sample:
        return Sample("r1", "w1", "m1", 1000.0, ok, None if ok else "total_timeout", total_ms, ttft_ms)

    def stall(elapsed_s: float) -> float:  # the stall's time within the probe's first elapsed_s
        return min(max(elapsed_s - 0.1, 0.0), 0.5)

    def counted(s: Sample) -> int | None:
        kept = despite_stall(s, stall, slo)
        return None if kept is None else counts_of(kept, *slo)

    assert counted(probe(2000.0, 50.0)) == COUNTED_N | COUNTED_TOTAL  # total over either way
    assert counted(probe(4000.0, None, ok=False)) == COUNTED_N | COUNTED_TOTAL | COUNTED_TTFT  # timed out
    assert counted(probe(2000.0, 900.0)) == COUNTED_N | COUNTED_TOTAL | COUNTED_TTFT  # both over either way
    assert counted(probe(2000.0, 600.0)) == COUNTED_N | COUNTED_TOTAL  # TTFT over only with the stall's time
    assert counted(probe(1000.0, 50.0)) is None  # over only with the stall's 0.5 s
    assert counted(probe(600.0, 50.0)) is None  # not over at all: the stall inflated it
    assert counted(probe(100.0, None, ok=False)) is None  # a fast failure during the stall
    kept = despite_stall(probe(4000.0, None, ok=False), stall, slo)
    assert kept is not None and kept.total_ms == 3500.0 and kept.reason == "total_timeout" and not kept.ok
    kept = despite_stall(probe(2000.0, 600.0), stall, slo)
    assert kept is not None and kept.ttft_ms == pytest.approx(100.0) and kept.total_ms == 1500.0


@pytest.fixture
def worker() -> Iterator[int]:
    """A real fake worker process (about 150 ms per answer)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trafficd.dev", "fake-worker", "--port", str(port), "--ttft-ms", "50", "--tokens", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


POLICY = """version: 1
service: stall
redis: {{url: '{redis_url}', key_prefix: {prefix}}}
probe:
  interval: 100ms
  jitter: 50%
  deadlines: {{connect: 1s, first_token: 1s, gap: 1s, total: 2s}}
  targets: {{allow_loopback: true}}
models: [{{name: m1}}]
regions:
  r1:
    workers:
      - {{name: w1, url: 'http://{host}:{port}'}}
      - {{name: w2, url: 'http://{host}:{port}'}}
    dns: {{endpoint: r1.example.com, aws_region: us-east-1}}
  r2:
    workers: [{{name: w3, url: 'http://{host}:{port}'}}]
    dns: {{endpoint: r2.example.com, aws_region: eu-west-1}}
slo: {{total_p99: 1s}}
windows: {{evaluate_every: 1s, slice: 1s, trip: 60s, long: 60s, min_samples: 1, stale_after: 30s}}
dns: {{zone_id: Z0123456789EXAMPLE, record_name: api.example.com.}}
"""


def test_sigstop_of_a_real_agent_records_no_slow_or_failed_sample(
    tmp_path: Path, redis_url: str, key_prefix: str, worker: int
) -> None:
    """A real agent probing a healthy worker is SIGSTOPped for 3 s: it logs agent.stalled (kind paused), discards
    the probes that were in flight, and Redis holds no sample over the 1 s SLO and no failure for the pause."""
    from trafficd.policy.schema import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(redis_url=redis_url, prefix=key_prefix, host=LOOPBACK, port=worker))
    policy = load_policy(path).policy
    cmd = [sys.executable, "-u", "-m", "trafficd", "agent", "--policy", str(path), "--region", "r1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    events = Events(proc.stdout)
    client = redis.Redis.from_url(redis_url)
    try:
        events.wait_for("agent.started")
        eventually(lambda: _samples(policy, client) >= 20, "20 samples before the pause")
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3.0)  # the pause under test: SIGSTOP for 3 s
        proc.send_signal(signal.SIGCONT)
        stalled = _wait_for(events, "agent.stalled", lambda e: e["duration_ms"] >= 2500)
        discarded = _wait_for(events, "agent.samples_discarded_stall", lambda e: e["stall_ms"] >= 2500)
        before_stop = _samples(policy, client)
        eventually(lambda: _samples(policy, client) >= before_stop + 20, "20 samples after the pause")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert stalled["kind"] == "paused" and stalled["duration_ms"] >= 2500
    assert discarded["discarded"] >= 1 and discarded["stall_ms"] >= 2500
    evidence = _evidence(policy)
    assert evidence.n >= 40
    assert evidence.errors == 0, evidence
    assert evidence.over_slo_fraction == 0.0, evidence  # no probe measured the 3 s pause
    assert evidence.p99_ms is not None and evidence.p99_ms < 1000.0


def _wait_for(events: Events, name: str, match: Any) -> dict[str, Any]:
    """The first `name` event that matches (shorter stalls, e.g. at start-up, are logged too)."""
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        event = events.wait_for(name, timeout_s=max(0.1, deadline - time.monotonic()))
        if match(event):
            return event
    raise AssertionError(f"no matching {name} event")


def _samples(policy: Any, client: Any) -> int:
    from trafficd import keys

    total = 0
    for key in client.scan_iter(match=keys.region_base(policy.redis.key_prefix, policy.service, "r1") + ":idx:*"):
        total += sum(int(v) for v in client.hgetall(key).values())
    return total


def _evidence(policy: Any) -> Any:
    import asyncio

    from trafficd.stats import store

    async def read() -> Any:
        client = store.redis_client(policy.redis)
        try:
            return (await store.StatsView(client, policy).evidence(time.time() + 1.0))["r1"]
        finally:
            await client.aclose()

    return asyncio.run(read())
