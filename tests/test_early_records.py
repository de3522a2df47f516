"""A probe running past an SLO threshold is reported over it when it passes it (an early record), then settled.

Real parts: redis-server on a loopback port, the agent's own sink, the controller's own reader (`StatsView`), and an
aiohttp worker that stalls (headers and a role chunk, then nothing until the probe's deadline cuts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import kit
import pytest
from aiohttp import web

from trafficd.model import RegionEvidence, Sample
from trafficd.policy.schema import Deadlines, LoadedPolicy
from trafficd.probe.agent import Agent, run_agent
from trafficd.probe.crossing import Crossing
from trafficd.probe.target import Target
from trafficd.probe.timing import Run
from trafficd.stats import store
from trafficd.stats.records import records_of, stamp
from trafficd.stats.sketch import COUNTED_N, COUNTED_TOTAL, COUNTED_TTFT, Sketch, increments
from trafficd.stats.window import slice_of

ROLE = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
TOKEN = b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}}]}\n\n'
END = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


@dataclass
class StallingWorker:
    """Answers every probe with a role chunk and then nothing: the probe runs to its deadline."""

    arrived: list[float] = field(default_factory=list)  # monotonic
    released: list[float] = field(default_factory=list)  # when the probe gave up (its connection closed)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrived.append(time.monotonic())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(ROLE)
        try:
            await asyncio.Event().wait()  # cancelled when the probe gives up and closes the connection
        finally:
            self.released.append(time.monotonic())
        return resp

    async def start(self) -> StallingWorker:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner, self.url = await kit.serve(app, handler_cancellation=True)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def worker() -> AsyncIterator[StallingWorker]:
    w = await StallingWorker().start()
    yield w
    await w.stop()


def one_probe_policy(
    url: str | dict[str, str],
    redis_url: str,
    prefix: str,
    *,
    total_s: float = 4.0,
    slo: dict[str, str] | None = None,
) -> LoadedPolicy:
    """Each worker (`url`, or name → url) × one model probed once (a long interval), SLOs of 300 ms (TTFT) and
    800 ms (total) unless `slo` says otherwise."""
    urls = {"w1": url} if isinstance(url, str) else url
    dns = {"endpoint": "r1.lb.example.com", "aws_region": "us-east-1"}
    region = {"workers": [{"name": name, "url": u} for name, u in urls.items()], "dns": dns}
    doc = kit.policy_doc(
        {"r1": region},
        redis={"url": redis_url, "key_prefix": prefix},
        probe={"interval": "60s", "jitter": "0%", "deadlines": {"total": f"{total_s}s", "first_token": f"{total_s}s"}},
        slo=slo or {"total_p99": "800ms", "ttft_p99": "300ms"},
        windows={"evaluate_every": "1s", "slice": "1s", "trip": "60s", "long": "120s", "stale_after": "60s"},
    )
    doc["models"] = [{"name": "m1"}]
    return kit.as_loaded(doc)


@dataclass
class LateWorker:
    """A role chunk at once, the first token `token_s` after the request (sooner once `release` is set), the end
    `end_s` after the request (or just after the token)."""

    token_s: float
    end_s: float = 0.0
    on_arrival: Callable[[], None] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: list[float] = field(default_factory=list)  # monotonic
    ended: list[float] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start = time.monotonic()
        self.arrived.append(start)
        if self.on_arrival is not None:
            self.on_arrival()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(ROLE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), self.token_s)
        await resp.write(TOKEN)
        await asyncio.sleep(max(0.0, start + self.end_s - time.monotonic()))
        await resp.write(END)
        await resp.write_eof()
        self.ended.append(time.monotonic())
        return resp


@contextlib.asynccontextmanager
async def serving(*workers: LateWorker) -> AsyncIterator[None]:
    for w in workers:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", w.handle)
        w.runner, w.url = await kit.serve(app)
    try:
        yield
    finally:
        for w in workers:
            if w.runner is not None:
                await w.runner.cleanup()


class RecordingSink(store.SampleSink):
    """The agent's real sink to Redis, keeping a copy of every record the agent hands it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[Sample] = []

    async def write(self, samples: Sequence[Sample]) -> None:
        self.records.extend(samples)
        await super().write(samples)


@contextlib.asynccontextmanager
async def live_agent(
    loaded: LoadedPolicy, agent_id: str
) -> AsyncIterator[tuple[Agent, RecordingSink, store.StatsView]]:
    """A real agent (its loop in this process) writing to Redis through the real sink, and the controller's reader."""
    client = store.redis_client(loaded.policy.redis)
    sink = RecordingSink(client, loaded.policy, agent_id=agent_id)
    agent = Agent(loaded, "r1", sink, agent_id=agent_id)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent, sink, store.StatsView(client, loaded.policy)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()


def totals(ev: RegionEvidence) -> tuple[int, int, int, int]:
    """(n, over the total SLO, over the TTFT SLO, errors) summed over the slices: the exact counts in Redis."""
    return (
        sum(s.n for s in ev.slices),
        sum(s.over for s in ev.slices),
        sum(s.ttft_over for s in ev.slices),
        sum(s.errors for s in ev.slices),
    )


async def evidence_when(view: store.StatsView, what: str, cond: Any, timeout_s: float = 15.0) -> RegionEvidence:
    async def check() -> RegionEvidence | None:
        ev = (await view.evidence(time.time()))["r1"]
        return ev if cond(ev) else None

    return await kit.eventually_async(check, what, timeout_s=timeout_s, interval_s=0.02)


async def test_over_slo_is_in_redis_while_the_probe_still_runs_then_settled_exactly(
    worker: StallingWorker, redis_url: str, key_prefix: str
) -> None:
    """A stalled probe is counted (n, TTFT over, total over) while it runs; its end adds the error once and the
    histogram its real latency (the 4 s deadline), never a second n."""
    loaded = one_probe_policy(worker.url, redis_url, key_prefix)
    client = store.redis_client(loaded.policy.redis)
    view = store.StatsView(client, loaded.policy)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(loaded, "r1", stop=stop, agent_id="early"))
    try:
        ttft_over = await evidence_when(view, "TTFT over its SLO", lambda ev: ev.ttft_over_slo_fraction > 0)
        assert not worker.released, "the TTFT over-count arrived only after the probe ended"
        assert (ttft_over.n, ttft_over.errors) == (1, 0)
        over = await evidence_when(view, "total latency over its SLO", lambda ev: ev.over_slo_fraction > 0)
        assert not worker.released, "the over-SLO count arrived only after the probe ended"
        assert (over.n, over.errors, over.over_slo_fraction, over.ttft_over_slo_fraction) == (1, 0, 1.0, 1.0)
        assert over.p99_ms is None  # no latency in the histogram before the probe ends
        done = await evidence_when(view, "the probe's error", lambda ev: ev.errors > 0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
    assert (done.n, done.errors, done.over_slo_fraction, done.ttft_over_slo_fraction) == (1, 1, 1.0, 1.0)
    assert done.p99_ms is not None and done.p99_ms >= 4000.0 * 0.99  # the real latency, not the threshold
    assert sum(s.n for s in done.slices) == 1 and sum(s.errors for s in done.slices) == 1


async def test_a_counted_probe_cut_short_at_shutdown_gets_its_final_record(
    worker: StallingWorker, redis_url: str, key_prefix: str
) -> None:
    """The agent stops while a probe counted over the SLO still runs: its final record carries the latency so far
    (a lower bound), no error (the worker did not fail), and n stays 1."""
    loaded = one_probe_policy(worker.url, redis_url, key_prefix, total_s=60.0)
    client = store.redis_client(loaded.policy.redis)
    view = store.StatsView(client, loaded.policy)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(loaded, "r1", stop=stop, agent_id="early-stop"))
    try:
        await evidence_when(view, "total latency over its SLO", lambda ev: ev.over_slo_fraction > 0)
        stop.set()
        await asyncio.wait_for(task, 15)
        ev = await evidence_when(view, "the final record", lambda ev: ev.p99_ms is not None)
    finally:
        stop.set()
        await client.aclose()
    assert (ev.n, ev.errors, ev.over_slo_fraction) == (1, 0, 1.0)
    assert ev.p99_ms is not None and ev.p99_ms > 800.0


def _probes() -> list[Sample]:
    """Finished probes of every kind: fast, slow success, TTFT late, stalled to a deadline, failed fast."""
    out = []
    for total, ttft, ok in itertools.product((200.0, 900.0, 4000.0), (None, 100.0, 500.0, 3500.0), (True, False)):
        if ttft is not None and ttft > total:
            continue
        out.append(Sample("r1", "w1", "m1", 1000.0, ok, None if ok else "total_timeout", total, ttft))
    return out


def test_records_of_a_probe_count_exactly_what_the_probe_counts() -> None:
    """Split into early and final records, every probe adds the same n, errors, over-counts and histogram as its
    one record did: each counted once, whatever the thresholds passed."""
    for s in _probes():
        for thresholds in ((800.0, 300.0), (800.0, None), (800.0, 2000.0), (150.0, 50.0)):
            records = records_of(s, *thresholds)
            assert sum(1 for r in records if not r.early) == 1
            assert increments(records, *thresholds) == increments([s], *thresholds), (s, thresholds)


def test_an_early_record_is_filed_in_the_slice_of_its_threshold_not_of_the_probes_end() -> None:
    """A probe stalled to a 30 s deadline is over a 3 s SLO from 3 s on: n and over go to the slice of t + 3 s,
    its error and latency to the slice of t + 30 s."""
    s = Sample("r1", "w1", "m1", 1000.0, False, "total_timeout", 30_000.0)
    early, final = records_of(s, 3000.0, None)
    assert slice_of(stamp(early), 10.0) == slice_of(1003.0, 10.0) and slice_of(stamp(final), 10.0) == 103
    first, second = Sketch.from_samples([early], 3000.0, None), Sketch.from_samples([final], 3000.0, None)
    assert (first.n, first.over("total"), first.errors, sum(first.counts("total"))) == (1, 1, 0, 0)
    assert (second.n, second.over("total"), second.errors, sum(second.counts("total"))) == (0, 0, 1, 1)


async def test_a_threshold_passed_while_the_agent_itself_stalled_writes_no_early_record() -> None:
    """Two probes pass the SLO threshold at the same moment: the one whose time so far was all the agent's own stall
    writes nothing (it is not over with the stall taken out), the other writes its early record (n and over)."""
    loop = asyncio.get_running_loop()
    target = Target("r1", "w1", "m1", "http://127.0.0.1:1")
    written: dict[str, list[Sample]] = {"stalled": [], "clear": []}

    def all_stall(elapsed_s: float) -> float:
        return elapsed_s

    def no_stall(elapsed_s: float) -> float:
        return 0.0

    watches = {
        name: Crossing(target, (50.0, None), written[name].append, all_stall if name == "stalled" else no_stall)
        for name in written
    }
    t0 = loop.time()
    for watch in watches.values():
        watch.start(Run(Deadlines(), t0), time.time())
    await kit.eventually_async(lambda: written["clear"], "the clear probe's early record", timeout_s=5.0)
    for watch in watches.values():
        watch.end()
    (early,) = written["clear"]
    assert early.early and early.total_ms > 50.0 and watches["clear"].counted
    assert written["stalled"] == [] and not watches["stalled"].counted


async def test_a_threshold_passed_while_the_agent_stalled_is_reported_once_over_it_with_the_stall_taken_out(
    redis_url: str, key_prefix: str
) -> None:
    """The agent's loop is blocked across two probes' 800 ms threshold: the probe still running (2 s) writes its
    early record once it is past 800 ms with the 0.7 s stall taken out, before it ends, and its final record adds
    nothing (n 1, over 1); the one whose worker finished inside the stall is discarded (it measured the agent)."""
    loop = asyncio.get_running_loop()

    def block_once() -> None:  # 0.3 s into the probes the agent's own loop stops for 0.7 s: a local stall
        if not loop_blocked:
            loop_blocked.append(loop.call_later(0.3, time.sleep, 0.7))

    loop_blocked: list[asyncio.TimerHandle] = []
    slow = LateWorker(token_s=0.0, end_s=2.0, on_arrival=block_once)
    inside = LateWorker(token_s=0.0, end_s=0.6, on_arrival=block_once)
    async with serving(slow, inside):
        urls = {"w-slow": slow.url, "w-inside": inside.url}
        loaded = one_probe_policy(urls, redis_url, key_prefix, slo={"total_p99": "800ms"})
        async with live_agent(loaded, "stalled-crossing") as (agent, sink, view):
            early = await evidence_when(view, "the slow probe's over-count", lambda ev: totals(ev)[1] == 1)
            assert not slow.ended, "the over-count arrived only after the probe ended"
            ev = await evidence_when(view, "the slow probe's final record", lambda ev: ev.p99_ms is not None)
            await kit.eventually_async(lambda: agent.discarded_stall_total, "the discard", timeout_s=10.0)
    crossing = min(slow.arrived + inside.arrived) + 0.8
    assert any(s.start < crossing < s.end for s in agent.stalls.stalls), "no local stall across the threshold"
    first, final = sink.records  # nothing of the probe that measured the stall
    assert (first.worker, first.early, first.counted) == ("w-slow", True, 0) and 800.0 < first.total_ms < 2000.0
    assert (final.worker, final.early, final.counted, final.ok) == ("w-slow", False, COUNTED_N | COUNTED_TOTAL, True)
    assert totals(early) == (1, 1, 0, 0) and totals(ev) == (1, 1, 0, 0) and agent.discarded_stall_total == 1


async def test_a_ttft_crossing_is_counted_when_it_happens_and_not_again_when_the_probe_ends(
    redis_url: str, key_prefix: str
) -> None:
    """A first token later than the 200 ms TTFT threshold and an end under the 3 s total one: the early record (n,
    TTFT over) is in Redis while the probe waits for its token; the final record adds its real TTFT to the
    histogram and no second n or over-count."""
    worker = LateWorker(token_s=2.5)  # the token when the test releases it (2.5 s at the latest), the end at once
    async with serving(worker):
        slo = {"total_p99": "3s", "ttft_p99": "200ms"}
        loaded = one_probe_policy(worker.url, redis_url, key_prefix, slo=slo)
        async with live_agent(loaded, "ttft-crossing") as (_, sink, view):
            early = await evidence_when(view, "the TTFT over-count", lambda ev: ev.ttft_over_slo_fraction > 0)
            assert not worker.ended, "the TTFT over-count arrived only after the probe ended"
            assert totals(early) == (1, 0, 1, 0)
            worker.release.set()
            done = await evidence_when(view, "the final record", lambda ev: ev.ttft_p99_ms is not None)
    assert totals(done) == (1, 0, 1, 0)
    first, final = sink.records
    assert first.early and first.ttft_ms is None and first.counted == 0
    assert not final.early and final.ok and final.counted == COUNTED_N | COUNTED_TTFT
    assert final.ttft_ms is not None and 200.0 < first.total_ms < final.ttft_ms <= final.total_ms < 3000.0
    assert done.ttft_p99_ms is not None and done.ttft_p99_ms > 200.0 and done.p99_ms is not None


async def test_a_local_stall_after_an_early_record_adds_no_over_count_the_worker_did_not_earn(
    redis_url: str, key_prefix: str
) -> None:
    """A probe counted early over the 200 ms TTFT threshold whose worker ends at 0.5 s, while the agent's own loop is
    blocked from 0.35 s to 1.35 s: its final record is under the 800 ms total threshold (the stall taken out), so
    Redis holds n 1, TTFT over 1 and no total over-count."""
    loop = asyncio.get_running_loop()
    blocked: list[asyncio.TimerHandle] = []

    def block_after_the_early_record() -> None:
        if not blocked:
            blocked.append(loop.call_later(0.35, time.sleep, 1.0))

    worker = LateWorker(token_s=0.3, end_s=0.5, on_arrival=block_after_the_early_record)
    async with serving(worker):
        slo = {"total_p99": "800ms", "ttft_p99": "200ms"}
        loaded = one_probe_policy(worker.url, redis_url, key_prefix, slo=slo)
        async with live_agent(loaded, "stall-after-early") as (agent, sink, view):
            done = await evidence_when(view, "the final record", lambda ev: ev.p99_ms is not None)
    first, final = sink.records
    assert first.early and first.counted == 0 and first.ttft_ms is None  # at the TTFT threshold, before the stall
    assert any(s.duration_s >= 0.9 for s in agent.stalls.stalls), "the agent's stall was not seen"
    assert not final.early and final.counted == COUNTED_N | COUNTED_TTFT
    assert final.total_ms < 800.0 and final.ttft_ms is not None and 200.0 < final.ttft_ms < 800.0
    assert totals(done) == (1, 0, 1, 0)
