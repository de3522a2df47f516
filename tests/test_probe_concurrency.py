"""`probe.concurrency: auto`: the slots follow series × measured probe duration ÷ interval, grow when workers
slow down so skipped probes stop, never pass `probe.max_concurrency`, shrink only after a sustained lull; each
change is one `agent.concurrency_changed` line and the `trafficd_probe_concurrency` gauge."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import kit
import pytest
from aiohttp import web
from probekit import DONE, ROLE, FakeSink, make_policy, tok, wait_until
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trafficd.probe import schedule
from trafficd.probe.agent import run_agent
from trafficd.probe.schedule import (
    GROW_WAIT_ROUNDS,
    LAG_WAIT_ROUNDS,
    SHRINK_AFTER_ROUNDS,
    ConcurrencySizer,
    Slots,
    needed_concurrency,
)
from trafficd.probe.stall import StallWatch
from trafficd.runtime import metrics


class TunableWorker:
    """A real aiohttp streaming worker whose first token comes `delay_s` after the request (changeable live); it
    counts the requests in flight."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(ROLE)
            await asyncio.sleep(self.delay_s)
            await resp.write(tok("ok"))
            await resp.write(DONE)
            await resp.write_eof()
            return resp
        finally:
            self.in_flight -= 1

    async def start(self) -> TunableWorker:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self.runner, self.url = await kit.serve(app, access_log=None)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def calm_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the host's load out of the sizing: the agent reads its event-loop lag as 0. The lag gate (shrink when
    the loop lags) has its own test above; these two are about the durations, and on a CI host at load 14 the
    gate would rightly hold the growth they look for."""
    monkeypatch.setattr(StallWatch, "lag_s", lambda self: 0.0)


@pytest.fixture
async def worker() -> AsyncIterator[TunableWorker]:
    w = await TunableWorker(0.02).start()
    yield w
    await w.stop()


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


def rounds(logs: list[EventDict]) -> list[EventDict]:
    return events(logs, "agent.round_completed")


def gauge(name: str, region: str) -> float | None:
    return metrics.AGENT.get_sample_value(name, {"region": region})


def test_sizer_starts_at_the_ceiling_then_follows_the_measured_durations() -> None:
    """20 series at 200 ms with a ceiling of 40: 40 (not the usual 64) before any measurement; 50 ms probes need
    7 slots, so one per series (20); 600 ms probes need 75: half as many again (30), then after GROW_WAIT_ROUNDS
    the ceiling (40)."""
    sizer = ConcurrencySizer(ceiling=40)
    assert sizer.start() == 40
    assert sizer.review(series=20, interval_s=0.2, skipped=0) is None  # nothing measured yet: unchanged
    for _ in range(256):
        sizer.probe_took(0.05)
    first = sizer.review(series=20, interval_s=0.2, skipped=0)
    assert first is not None and (first.before, first.after, first.reason) == (40, 20, "measured")
    for _ in range(256):
        sizer.probe_took(0.6)
    change = sizer.review(series=20, interval_s=0.2, skipped=0)
    assert change is not None and (change.before, change.after, change.reason) == (20, 30, "slow_probes")
    assert needed_concurrency(20, 0.6, 0.2) == 75 and change.needed == 40
    assert [sizer.review(series=20, interval_s=0.2, skipped=0) for _ in range(GROW_WAIT_ROUNDS)] == [None] * 4
    change = sizer.review(series=20, interval_s=0.2, skipped=0)
    assert change is not None and (change.before, change.after) == (30, 40)
    assert sizer.review(series=20, interval_s=0.2, skipped=5) is None  # at the ceiling: nothing more to give


def test_sizer_shrinks_only_after_a_sustained_lull() -> None:
    """Fast probes after slow ones shrink the slots only after SHRINK_AFTER_ROUNDS quiet rounds in a row; a
    skipping round restarts the count."""
    sizer = ConcurrencySizer(ceiling=100, limit=60, sized=True)
    for _ in range(256):
        sizer.probe_took(0.05)
    for _ in range(SHRINK_AFTER_ROUNDS - 1):
        assert sizer.review(series=20, interval_s=0.2, skipped=0) is None
    assert sizer.review(series=20, interval_s=0.2, skipped=1) is not None  # skipping: grows, count restarts
    grown = sizer.limit
    for _ in range(GROW_WAIT_ROUNDS):
        assert sizer.review(series=20, interval_s=0.2, skipped=0) is None  # after a growth: waits, counts nothing
    for _ in range(SHRINK_AFTER_ROUNDS - 1):
        assert sizer.review(series=20, interval_s=0.2, skipped=0) is None
    change = sizer.review(series=20, interval_s=0.2, skipped=0)
    assert change is not None and change.before == grown and change.after == 20 and change.reason == "fast_probes"


def test_sizer_grows_a_quarter_when_a_round_skips_despite_enough_slots() -> None:
    """Enough slots by the mean but a round still skipped (bunched starts, probes hanging unmeasured): half as
    many again, not a slot at a time."""
    sizer = ConcurrencySizer(ceiling=1000, limit=40, sized=True)
    for _ in range(100):
        sizer.probe_took(0.2)
    change = sizer.review(series=20, interval_s=0.2, skipped=3)
    assert change is not None and change.after == 60 and change.reason == "skipped_probes"


def test_a_lagging_event_loop_shrinks_the_slots_even_below_the_need_and_growth_comes_back_slowly() -> None:
    """The loop lags 40 ms (the host is saturated): 100 slots for 120 series shrink by a fifth every
    LAG_WAIT_ROUNDS + 1 rounds although 150 are needed; at 7 ms nothing moves; under 5 ms they grow back in
    10 % steps, spaced the same."""
    sizer = ConcurrencySizer(ceiling=256, limit=100, sized=True)
    for _ in range(256):
        sizer.probe_took(0.5)  # 120 series at 500 ms need 150
    first = sizer.review(series=120, interval_s=0.5, skipped=0, lag_s=0.040)
    assert first is not None and (first.before, first.after, first.reason) == (100, 80, "loop_lagging")
    assert first.needed == 150 and first.lag_s == 0.040
    waited = [sizer.review(series=120, interval_s=0.5, skipped=9, lag_s=0.040) for _ in range(LAG_WAIT_ROUNDS)]
    assert waited == [None] * LAG_WAIT_ROUNDS
    second = sizer.review(series=120, interval_s=0.5, skipped=9, lag_s=0.040)
    assert second is not None and second.after == 64
    for _ in range(LAG_WAIT_ROUNDS):
        sizer.review(series=120, interval_s=0.5, skipped=9, lag_s=0.007)
    assert sizer.review(series=120, interval_s=0.5, skipped=9, lag_s=0.007) is None  # between: hold, skipping
    eased = sizer.review(series=120, interval_s=0.5, skipped=9, lag_s=0.002)
    assert eased is not None and (eased.before, eased.after, eased.reason) == (64, 71, "lag_eased")
    assert sizer.review(series=120, interval_s=0.5, skipped=9, lag_s=0.002) is None  # spaced out


def test_after_a_lag_cap_a_smaller_need_is_not_mistaken_for_easing() -> None:
    """Capped by lag at 64 while more were needed, the need falls to 40 and a round skips: the slots grow by half
    (skipped_probes), not shrink under a `lag_eased` label."""
    sizer = ConcurrencySizer(ceiling=256, limit=64, sized=True, lag_capped=True)
    for _ in range(256):
        sizer.probe_took(0.2)  # 40 series at 500 ms: 20 by the formula, 40 by the floor (one slot per series)
    change = sizer.review(series=40, interval_s=0.5, skipped=3, lag_s=0.001)
    assert change is not None and (change.before, change.after, change.reason) == (64, 96, "skipped_probes")
    assert not sizer.lag_capped


async def test_slots_resize_admits_waiters_and_a_cancelled_waiter_leaks_nothing() -> None:
    """Growing the limit lets waiting holders in at once; a waiter cancelled by its deadline takes no slot."""
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slots.acquire()  # gives up: must not keep a place
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.resize(2)
    await asyncio.wait_for(waiter, 1)
    assert slots.in_use == 2
    slots.release()
    slots.release()
    assert slots.in_use == 0
    slots.resize(1)
    await asyncio.wait_for(slots.acquire(), 1)
    assert slots.in_use == 1


async def test_a_slowing_worker_grows_the_concurrency_until_no_probe_is_skipped(
    worker: TunableWorker, calm_loop: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 series every 200 ms: fast at first (sized down from 64 to one slot per series); when the worker
    takes 600 ms the agent skips, logs agent.falling_behind, grows (agent.concurrency_changed, the gauge) past 30
    in flight, and rounds stop skipping (agent.caught_up)."""
    policy = make_policy(
        [{"name": f"w{i}", "url": worker.url} for i in range(10)],
        probe={"interval": "200ms", "jitter": "10%", "concurrency": "auto", "max_concurrency": 200},
        models=["m"],
        region="auto-grow",
    )
    monkeypatch.setattr(schedule, "CAUGHT_UP_AFTER_S", 1.0)  # caught up after 1 s of rounds without a skip
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(
            run_agent(policy, "auto-grow", stop=stop, agent_id="a", sink=sink, rng=random.Random(1))
        )
        await wait_until(lambda: len(rounds(logs)) >= 3, what="three fast rounds")
        # the gauge shows the slots now: the first sizing (64 → 10, asserted below), or a growth after it when a
        # loaded machine made a fast round skip
        assert (
            gauge("trafficd_probe_concurrency", "auto-grow")
            == events(logs, "agent.concurrency_changed")[-1]["concurrency"]
        )
        worker.delay_s = 0.6
        await wait_until(lambda: len(events(logs, "agent.concurrency_changed")) >= 2, timeout_s=20, what="a growth")

        def settled() -> bool:
            last = rounds(logs)[-8:]
            changed = events(logs, "agent.concurrency_changed")
            return bool(changed) and changed[-1]["round"] < last[0]["round"] and not any(r["skipped"] for r in last)

        await wait_until(settled, timeout_s=30, what="eight rounds in a row without a skip after the last resize")
        await wait_until(lambda: events(logs, "agent.caught_up"), timeout_s=30, what="agent.caught_up")
        stop.set()
        await asyncio.wait_for(task, 10)
    measured, *grown = events(logs, "agent.concurrency_changed")
    assert (measured["concurrency_before"], measured["concurrency"], measured["reason"]) == (64, 10, "measured")
    assert grown[0]["concurrency_before"] == 10 and grown[0]["reason"] in ("slow_probes", "skipped_probes")
    assert all(e["concurrency"] > e["concurrency_before"] for e in grown)
    assert grown[-1]["concurrency"] >= 30 and grown[-1]["max_concurrency"] == 200
    assert worker.max_in_flight > 10  # the slots really grew
    assert events(logs, "agent.falling_behind") and events(logs, "agent.caught_up")
    assert events(logs, "agent.falling_behind")[0]["concurrency_mode"] == "auto"


async def test_auto_concurrency_never_passes_max_concurrency(worker: TunableWorker, calm_loop: None) -> None:
    """The same slow worker with max_concurrency 8: the slots start and stay at 8 (never more in flight), the
    agent keeps skipping and its one warning says the ceiling is the limit."""
    worker.delay_s = 0.6
    policy = make_policy(
        [{"name": f"w{i}", "url": worker.url} for i in range(10)],
        probe={"interval": "200ms", "jitter": "10%", "concurrency": "auto", "max_concurrency": 8},
        models=["m"],
        region="auto-cap",
    )
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(
            run_agent(policy, "auto-cap", stop=stop, agent_id="a", sink=sink, rng=random.Random(2))
        )
        await wait_until(lambda: len(rounds(logs)) >= 6, timeout_s=20, what="six rounds")
        assert gauge("trafficd_probe_concurrency", "auto-cap") == 8.0
        assert gauge("trafficd_probe_concurrency_max", "auto-cap") == 8.0
        stop.set()
        await asyncio.wait_for(task, 10)
    assert worker.max_in_flight <= 8
    assert all(e["concurrency"] <= 8 for e in events(logs, "agent.concurrency_changed"))
    assert sum(r["skipped"] for r in rounds(logs)[2:]) > 0
    warned = events(logs, "agent.falling_behind")
    assert len(warned) == 1 and warned[0]["concurrency"] == warned[0]["max_concurrency"] == 8
    assert "probe.max_concurrency" in warned[0]["hint"]


def test_concurrency_changes_are_info_at_most_every_five_minutes() -> None:
    """Under a CPU squeeze the sizing adapts every few rounds: the first change in 300 s is INFO, the rest DEBUG."""
    from trafficd.probe.schedule import CHANGE_INFO_EVERY_S, ConcurrencyControl

    lines: list[tuple[str, int]] = []

    class Log:
        def info(self, event: str, **kw: Any) -> None:
            lines.append(("info", kw["changes_at_debug"]))

        def debug(self, event: str, **kw: Any) -> None:
            lines.append(("debug", kw["changes_at_debug"]))

    now = [0.0]
    control = ConcurrencyControl("r1", Log(), clock=lambda: now[0])
    for t in (0.0, 10.0, 20.0, CHANGE_INFO_EVERY_S, CHANGE_INFO_EVERY_S + 1):
        now[0] = t
        control.log_change()
    assert lines == [("info", 0), ("debug", 0), ("debug", 1), ("info", 2), ("debug", 0)]
