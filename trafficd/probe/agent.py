"""The agent loop: every `probe.interval`, probe every (worker × model) of one region and record the Samples.

One round per interval on a fixed-rate asyncio schedule (no drift, the interval re-read from the policy each
round so a reload applies). Each probe of the round starts after its own random delay, uniform in
[0, jitter × interval), so probes across workers don't align; at most `probe.concurrency` probes are in flight
(a semaphore, and the same limit on the connection pool). Rounds never wait for slow probes: a stalled worker's
probes run to their deadline while the next round starts on time, so a slow region keeps producing samples. A
probe that cannot get a slot before its round's interval ends is skipped and counted (`skipped`); skipping
episodes are logged once (`agent.falling_behind` / `agent.caught_up`, `probe/schedule.py`). With `probe.concurrency:
auto` the slots follow series × measured mean duration ÷ interval (`agent.concurrency_changed`). With a shard (I/N)
the agent probes only its share of the region's series.

Samples go to `SampleSink.write` in small batches (every ~250 ms) as probes finish (each carries its t0 and its
latency; the store files it under the slice in which it completed); `SampleSink.heartbeat(agent_id, region)` is
sent at the start of every round. Workers come from the policy list
and/or DNS discovery (refreshed in the background; a failure keeps the last good list).

Events: `agent.started`, `agent.round_completed` (counts by outcome), `agent.series_failed` /
`agent.series_recovered` (a series changes between ok and failing, with the reason), `agent.write_failed`,
`agent.heartbeat_failed`, `agent.prober_replaced`, `agent.config_failed`, `agent.stopped`; `agent.model_missing`
/ `agent.model_list_failed` / `agent.model_listed` from the model check (`probe/models.py`, once per
episode). Never the API key or the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from trafficd.model import Sample
from trafficd.policy.schema import LoadedPolicy, Policy
from trafficd.probe.crossing import despite_stall, probe_reporting_early, stall_time_since
from trafficd.probe.discovery import Discovery, WorkerRef
from trafficd.probe.models import warn_unlisted_models
from trafficd.probe.outbox import Outbox, SampleSinkLike
from trafficd.probe.prober import ProbeResult, Target, series_target
from trafficd.probe.probers import AgentConfigError as AgentConfigError  # raised by run_agent; re-exported
from trafficd.probe.probers import Probers, ProberSlot
from trafficd.probe.rounds import Round, SeriesHealth, log_completed, log_discarded
from trafficd.probe.schedule import ConcurrencyControl, Shard, SkipWatch
from trafficd.probe.stall import StallWatch
from trafficd.runtime import metrics
from trafficd.runtime.agent_report import AgentReport
from trafficd.runtime.logs import get_logger

log = get_logger("agent")

STOP_GRACE_S = 2.0  # in-flight probes get this long to finish when the agent stops


class PolicySource(Protocol):
    @property
    def current(self) -> LoadedPolicy: ...


def _loaded(source: PolicySource | LoadedPolicy) -> LoadedPolicy:
    return source if isinstance(source, LoadedPolicy) else source.current


def default_agent_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Agent:
    def __init__(
        self,
        source: PolicySource | LoadedPolicy,
        region: str,
        sink: SampleSinkLike,
        *,
        agent_id: str,
        rng: random.Random | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.source = source
        self.region = region
        self.sink = sink
        self.agent_id = agent_id
        self.rng = rng or random.Random()
        self.probers = Probers(region)  # the prober of the current probe settings (probe/probers.py)
        self._discovery: Discovery | None = None
        self._discovery_task: asyncio.Task[Any] | None = None
        self.outbox = Outbox(sink, region, agent_id)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.health = SeriesHealth()
        self._models_checked: tuple[int, list[tuple[str, str, str]]] | None = None
        self._models_warned: set[tuple[str, ...]] = set()  # model problems already logged (once per episode)
        self._checked_list: list[WorkerRef] | None = None  # the discovered list last checked (a refresh replaces it)
        self.current_workers: list[WorkerRef] = []  # this round's workers (the capacity scraper reads them)
        self._stopping = False
        self.stalls = StallWatch(region)
        self.discarded_stall_total = 0
        self.shard = shard or Shard()
        self.skips = SkipWatch(region, log, metrics.PROBES_SKIPPED)
        self.concurrency = ConcurrencyControl(region, log, self.stalls.lag_s)
        self.report = AgentReport(log, region)  # the log budget: agent.summary instead of a line per round

    # ---------------------------------------------------------------- set-up

    @property
    def _slot(self) -> ProberSlot | None:
        """The current prober and its probe slots (read by the metrics and the agent benchmark)."""
        return self.probers.current

    async def _workers(self, policy: Policy) -> list[WorkerRef]:
        region = policy.regions[self.region]
        workers = [WorkerRef.from_policy(w) for w in region.workers]
        cfg = region.discovery
        if cfg is None:
            self._discovery = None
            return workers
        loop = asyncio.get_running_loop()
        targets = policy.probe.targets
        if self._discovery is None or (self._discovery.cfg, self._discovery.targets) != (cfg, targets):
            self._discovery = Discovery(cfg, self.region, targets=targets)
            await self._discovery.refresh(loop.time())  # the first round needs the list
        elif self._discovery.due(loop.time()) and (self._discovery_task is None or self._discovery_task.done()):
            self._discovery_task = self._spawn(self._discovery.refresh(loop.time()))
        names = {w.name for w in workers}
        return workers + [w for w in self._discovery.workers if w.name not in names]

    def _check_models(self, policy: Policy, workers: list[WorkerRef], slot: ProberSlot) -> None:
        """Warn about models a worker does not list (`probe/models.py`): at start, after each discovery refresh,
        and when the policy changes the workers, models or APIs. Runs in the background."""
        discovered = self._discovery.workers if self._discovery is not None else None
        models = policy.models_for(self.region)
        asks: list[tuple[str, str, str]] = [
            (repr(w), m.name, policy.ask_for(self.region, m.name, w.api).api) for w in workers for m in models
        ]
        if self._models_checked == (id(discovered), asks) and self._checked_list is discovered:
            return
        self._models_checked, self._checked_list = (id(discovered), asks), discovered

        async def check() -> None:
            try:
                await warn_unlisted_models(slot.prober, policy, self.region, workers, self._models_warned)
            finally:
                await slot.release()

        slot.users += 1  # the check uses the prober: it is not closed under it
        self._spawn(check())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        loaded = _loaded(self.source)
        policy = loaded.policy
        if self.region not in policy.regions:
            raise AgentConfigError(f"region {self.region!r} is not in the policy")
        await self.probers.for_settings(policy.probe)
        self._spawn(self.stalls.run(stop))  # before the first probe: set-up time is no stall
        discovery = policy.regions[self.region].discovery
        log.info(
            "agent.started",
            region=self.region,
            agent_id=self.agent_id,
            policy_hash=loaded.hash,
            interval_s=policy.probe.interval,
            jitter=policy.probe.jitter,
            concurrency=policy.probe.concurrency,
            max_concurrency=policy.probe.max_in_flight,
            models=[m.name for m in policy.models_for(self.region)],
            listed_workers=[w.name for w in policy.regions[self.region].workers],
            discovery=discovery.name if discovery else None,
            shard=str(self.shard),
        )
        flusher = self._spawn(self.outbox.flush_loop(stop))
        number = 0
        next_at = loop.time()
        try:
            while not stop.is_set():
                loaded = _loaded(self.source)
                policy = loaded.policy
                if self.region not in policy.regions:
                    log.error("agent.config_failed", region=self.region, error="region no longer in the policy")
                    break
                slot = await self.probers.for_settings(policy.probe)
                workers = await self._workers(policy)
                self.current_workers = workers
                self._check_models(policy, workers, slot)
                number += 1
                self._spawn(self._round(number, loaded, workers, slot))
                await self.outbox.heartbeat()
                next_at += policy.probe.interval
                next_at = max(next_at, loop.time())  # fell behind (e.g. a slow reload): no burst of rounds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), next_at - loop.time())
        finally:
            await self._shutdown(flusher)
            log.info("agent.stopped", region=self.region, agent_id=self.agent_id, rounds=number)

    async def _round(self, number: int, loaded: LoadedPolicy, workers: list[WorkerRef], slot: ProberSlot) -> None:
        policy = loaded.policy
        loop = asyncio.get_running_loop()
        models = policy.models_for(self.region)
        rnd = Round(number, loop.time(), loaded.hash, len(workers), len(models))
        rnd.slo_ms = (policy.slo_threshold_ms, policy.ttft_threshold_ms)
        spread_s = policy.probe.jitter * policy.probe.interval
        slot_deadline = rnd.started + policy.probe.interval
        targets = self._my_targets(policy, workers, [m.name for m in models])
        self.concurrency.before_round(slot.cfg, slot.sem, len(targets))
        slot.users += 1
        try:
            await asyncio.gather(
                *(self._probe_one(rnd, t, self.rng.uniform(0.0, spread_s), slot_deadline, slot) for t in targets)
            )
        finally:
            await slot.release()
        log_discarded(self.region, rnd, self.discarded_stall_total)
        skipped = rnd.outcomes.get("skipped", 0)
        duration_ms = (loop.time() - rnd.started) * 1000.0
        self.report.round_completed(rnd.outcomes, len(targets), duration_ms, rnd.policy_hash)
        self.skips.round_done(
            round_number=number,
            probes=len(targets),
            skipped=skipped,
            concurrency=slot.sem.limit,
            interval_s=policy.probe.interval,
            mean_probe_s=self.concurrency.sizer.mean_s(),
            auto_max=slot.cfg.max_concurrency if slot.cfg.concurrency == "auto" else None,
            lag_s=self.stalls.lag_s(),
        )
        self.concurrency.after_round(slot.cfg, slot.sem, round_number=number, series=len(targets), skipped=skipped)
        log_completed(self.region, rnd, len(targets), duration_ms)
        metrics.loop_completed()

    def _my_targets(self, policy: Policy, workers: Sequence[WorkerRef], models: Sequence[str]) -> list[Target]:
        """This agent's series of the round: every (worker × model), or its shard's share of them."""
        return [series_target(policy, self.region, w, m) for w in workers for m in models if self.shard.owns(w.name, m)]

    async def _probe_one(
        self,
        rnd: Round,
        target: Target,
        delay_s: float,
        slot_deadline: float,
        slot: ProberSlot,
    ) -> None:
        await asyncio.sleep(delay_s)
        if self._stopping:
            rnd.outcomes["not_started"] += 1  # the agent is stopping
            return
        sem = slot.sem
        try:
            async with asyncio.timeout_at(slot_deadline):
                await sem.acquire()
        except TimeoutError:
            rnd.outcomes["skipped"] += 1
            return
        started = time.monotonic()
        stall_s = stall_time_since(started, self.stalls.overlap_s)
        try:  # reported over the SLO when it passes the threshold, not when it ends (probe/crossing.py)
            result, early = await probe_reporting_early(slot.prober, target, rnd.slo_ms, self.outbox.add, stall_s)
        finally:
            sem.release()
        self.concurrency.probe_took(time.monotonic() - started)
        stall = None if early else self.stalls.overlapping(started, time.monotonic())
        if stall is None:
            self._record(rnd, result)
        elif (kept := despite_stall(result.sample, stall_s, rnd.slo_ms)) is not None:
            self._record(rnd, replace(result, sample=kept))  # over its SLO whatever the stall took
        else:  # its measurement overlapped a local stall: it measured the agent, not the worker
            rnd.discard(result.sample, stall)
            self.discarded_stall_total += 1
            metrics.SAMPLES_DISCARDED_STALL.labels(target.region).inc()

    def _record(self, rnd: Round, result: ProbeResult) -> None:
        s = result.sample
        outcome = "ok" if s.ok else str(s.reason)
        rnd.outcomes[outcome] += 1
        metrics.record_probe(s)
        self.outbox.add(s)
        self.health.saw(result)

    # ---------------------------------------------------------------- output

    @property
    def pending(self) -> list[Sample]:
        """Samples not handed to the sink yet."""
        return self.outbox.pending

    async def _shutdown(self, flusher: asyncio.Task[Any]) -> None:
        self._stopping = True
        others = [t for t in self._tasks if t is not flusher]
        if others:
            _, still = await asyncio.wait(others, timeout=STOP_GRACE_S)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await self.outbox.flush()
        await self.probers.close()


async def run_agent(
    holder_or_loaded_policy: PolicySource | LoadedPolicy,
    region: str,
    *,
    stop: asyncio.Event,
    agent_id: str | None = None,
    sink: SampleSinkLike | None = None,
    rng: random.Random | None = None,
    shard: Shard | None = None,
) -> None:
    """Probe `region` until `stop` is set. Without `sink`, samples go to Redis (`store.SampleSink`)."""
    client: Any = None
    agent_id = agent_id or default_agent_id()
    if sink is None:
        from trafficd.stats import store

        policy = _loaded(holder_or_loaded_policy).policy
        try:
            client = store.client_for(policy, "agent", region)
        except store.StoreConfigError as exc:
            log.error("agent.config_failed", region=region, error=str(exc))
            raise AgentConfigError(str(exc)) from None
        real_sink = store.SampleSink(client, policy, agent_id=agent_id)
        sink = real_sink
        on_change = getattr(holder_or_loaded_policy, "on_change", None)
        if on_change is not None:

            def follow(old: LoadedPolicy, new: LoadedPolicy) -> None:
                real_sink.use_policy(new.policy)
                if new.policy.redis != old.policy.redis:
                    log.warning("agent.redis_change_needs_restart", region=region, policy_hash=new.hash)

            on_change(follow)
    agent = Agent(holder_or_loaded_policy, region, sink, agent_id=agent_id, rng=rng, shard=shard)
    slo = _loaded(holder_or_loaded_policy).policy.slo
    metrics.watch_agent(agent, slo.total_p99, slo.ttft_p99)
    scraper = None
    if client is not None:  # live capacity goes beside the samples in Redis (probe/capacity_scrape.py)
        from trafficd.probe.capacity_scrape import start_for_agent

        scraper = start_for_agent(lambda: _loaded(holder_or_loaded_policy).policy, agent, client, stop)
    try:
        await agent.run(stop)
    finally:
        if scraper is not None:
            await asyncio.gather(scraper, return_exceptions=True)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
