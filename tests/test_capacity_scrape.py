"""Live capacity end to end on real parts: aiohttp workers publishing vLLM metrics, agents' scraper, redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import kit
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from trafficd import keys
from trafficd.decide import planner
from trafficd.model import RegionEvidence
from trafficd.policy.schema import Policy
from trafficd.probe.capacity_scrape import CapacityScraper
from trafficd.probe.discovery import WorkerRef
from trafficd.stats import capacity_store
from trafficd.stats.client import redis_client
from trafficd.stats.reader import with_capacity


class MetricsWorker:
    """A worker publishing vLLM's metrics: `running` requests completing `rate` req/s (the counter follows the
    clock), a KV usage, and a switch that makes /metrics fail."""

    def __init__(self, running: int, rate: float, kv: float = 0.3) -> None:
        self.running, self.rate, self.kv = running, rate, kv
        self.failing = False
        self.hits = 0
        self.t0 = time.monotonic()
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def metrics(self, _: web.Request) -> web.Response:
        self.hits += 1
        if self.failing:
            return web.Response(status=503, text="down")
        done = 1000.0 + self.rate * (time.monotonic() - self.t0)
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="m"}} {self.running}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            'vllm:num_requests_waiting{model_name="m"} 0\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{model_name="m"}} {self.kv}\n'
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="stop",model_name="m"}} {done}\n'
        )
        return web.Response(text=text, content_type="text/plain")

    async def start(self) -> MetricsWorker:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def workers() -> AsyncIterator[dict[str, MetricsWorker]]:
    """us-east serves 5× eu-west's load: 25 running at 50 req/s against 5 running at 10 req/s."""
    ws = {"us-east": await MetricsWorker(25, 50.0).start(), "eu-west": await MetricsWorker(5, 10.0).start()}
    yield ws
    for w in ws.values():
        await w.stop()


def two_regions(workers: dict[str, MetricsWorker], redis_url: str, key_prefix: str, **capacity: Any) -> Policy:
    regions = {
        r: kit.region_doc(r, worker_url=w.url, worker=f"{r}-w", neighbours=[x for x in workers if x != r])
        for r, w in workers.items()
    }
    doc = kit.policy_doc(
        regions,
        redis={"url": redis_url, "key_prefix": key_prefix},
        capacity={"max_concurrency": 50, "scrape_every": "200ms", "max_age": "2s", **capacity},
    )
    return kit.as_policy(doc)


def scraper_for(policy: Policy, region: str, client: Any, **kw: Any) -> CapacityScraper:
    refs = [WorkerRef.from_policy(w) for w in policy.regions[region].workers]

    async def write(p: Policy, r: str, figures: dict[str, Any], now: float) -> None:
        await capacity_store.write(client, p, r, figures, now)

    return CapacityScraper(lambda: policy, region, lambda: refs, write, **kw)


async def live_evidence(client: Any, policy: Policy) -> dict[str, RegionEvidence]:
    base = {r: RegionEvidence(region=r, n=1000) for r in policy.region_names}
    return await with_capacity(client, policy, base, time.time())


async def test_drain_spills_by_volume_from_scraped_metrics(
    workers: dict[str, MetricsWorker], redis_url: str, key_prefix: str
) -> None:
    """Scraped, stored and read back: eu-west's drain fits in us-east, us-east's drain mostly stays."""
    policy = two_regions(workers, redis_url, key_prefix)
    client = redis_client(policy.redis)
    scrapers = [scraper_for(policy, r, client) for r in workers]
    try:

        async def scraped_twice() -> dict[str, RegionEvidence] | None:
            for s in scrapers:
                await s.scrape_once(policy)
            ev = await live_evidence(client, policy)
            return ev if all(e.capacity_source == "live" for e in ev.values()) else None

        ev = await kit.eventually_async(scraped_twice, "both regions' load measured", interval_s=0.2)
        us, eu = ev["us-east"], ev["eu-west"]
        assert us.load_rps == pytest.approx(50.0, rel=0.3) and eu.load_rps == pytest.approx(10.0, rel=0.3)
        # headroom = (min(0.8 × 50, running × 0.9 / 0.3 KV) − running) × rate/running:
        # us-east (min(40, 75) − 25) × 2 = 30 req/s; eu-west (min(40, 15) − 5) × 2 = 20 req/s (its KV cache binds)
        assert us.headroom_rps == pytest.approx(30.0, rel=0.3) and eu.headroom_rps == pytest.approx(20.0, rel=0.3)
        spare = planner.headroom(policy, ev)
        eu_drained = planner.plan(policy, {"us-east": 1.0, "eu-west": 0.0}, spare)
        assert eu_drained["eu-west"] == {"us-east": 1.0, "eu-west": 0.0}
        workers["eu-west"].running, workers["eu-west"].kv = 30, 0.6  # busy: (min(40, 45) − 30) × 10/30 ≈ 3.3 req/s
        ev = await kit.eventually_async(
            lambda: _rescraped(scrapers, client, policy, lambda e: (e["eu-west"].headroom_rps or 99) < 5),
            "eu-west's smaller headroom",
        )
        us_drained = planner.plan(policy, {"us-east": 0.0, "eu-west": 1.0}, planner.headroom(policy, ev))
        taken = us_drained["us-east"]["eu-west"]
        assert taken == pytest.approx((ev["eu-west"].headroom_rps or 0) / (ev["us-east"].load_rps or 1), rel=1e-6)
        # the rest stays at us-east: eu-west offers < 5 req/s of us-east's ≥ 35 (50 ± 30 %), so at most 1/7 moves
        assert us_drained["us-east"]["us-east"] == pytest.approx(1.0 - taken) and taken < 5.0 / 35.0
    finally:
        for s in scrapers:
            await s.close()
        await client.aclose()


async def _rescraped(scrapers: list[CapacityScraper], client: Any, policy: Policy, ok: Any) -> Any:
    for s in scrapers:
        await s.scrape_once(policy)
    ev = await live_evidence(client, policy)
    return ev if ok(ev) else None


async def test_stale_figures_fall_back_to_declared_headroom(
    workers: dict[str, MetricsWorker], redis_url: str, key_prefix: str
) -> None:
    """Figures older than capacity.max_age make the region stale: the declared capacity_headroom is used instead."""
    policy = two_regions(workers, redis_url, key_prefix)
    doc = policy.model_dump(mode="json")
    doc["regions"]["us-east"]["capacity_headroom"] = "50%"
    policy = kit.as_policy(doc)
    client = redis_client(policy.redis)
    try:
        scraper = scraper_for(policy, "us-east", client)
        figures = await kit.eventually_async(lambda: scraper.scrape_once(policy), "figures stored (second scrape)")
        await scraper.close()
        at = figures["us-east-w"].at
        key_now = keys.capacity_key(key_prefix, policy.service, "us-east", capacity_store.bucket_of(at, 2.0))
        assert "{us-east}" in key_now and 0 < await client.ttl(key_now) <= 6
        later = at + 2.5
        read = await capacity_store.read(client, policy, later)
        assert read["us-east"].source == "stale" and read["us-east"].load_rps is None
        assert read["eu-west"].source == "missing"
        base = {r: RegionEvidence(region=r, n=1000) for r in policy.region_names}
        ev = await with_capacity(client, policy, base, later)
        spare = planner.headroom(policy, ev)
        assert not spare.by_volume and spare["us-east"] == 0.5  # no live load anywhere: the unit rule, declared
        assert spare["eu-west"] == 0.0  # reads live capacity, nothing fresh, nothing declared: never unlimited
    finally:
        await client.aclose()


async def test_unreachable_endpoint_is_logged_once_per_episode(
    workers: dict[str, MetricsWorker], redis_url: str, key_prefix: str
) -> None:
    """A failing metrics endpoint warns once, is retried with backoff, recovers once, and a new outage warns again."""
    policy = two_regions(workers, redis_url, key_prefix)
    client = redis_client(policy.redis)
    w = workers["eu-west"]
    scraper = scraper_for(policy, "eu-west", client, backoff_base_s=0.01)
    try:
        with capture_logs() as logs:
            w.failing = True

            async def failed_three_times() -> bool:
                await scraper.scrape_once(policy)
                return w.hits >= 3

            await kit.eventually_async(failed_three_times, "three failed scrapes")
            w.failing = False
            await kit.eventually_async(lambda: _scraped(scraper, policy), "a good scrape")
            w.failing = True
            hits = w.hits
            await kit.eventually_async(lambda: _failed_after(scraper, policy, w, hits), "a new failure")
        events = [e for e in logs if e["event"].startswith("capacity.") and e["log_level"] != "debug"]
        assert [e["event"] for e in events] == [
            "capacity.scrape_failed",
            "capacity.scrape_recovered",
            "capacity.scrape_failed",
        ]
        assert events[0]["url"] == f"http://127.0.0.1:{w.port}/metrics" and "HTTP 503" in events[0]["error"]
    finally:
        await scraper.close()
        await client.aclose()


async def _scraped(scraper: CapacityScraper, policy: Policy) -> bool:
    return bool(await scraper.scrape_once(policy))


async def _failed_after(scraper: CapacityScraper, policy: Policy, w: MetricsWorker, hits: int) -> bool:
    await scraper.scrape_once(policy)
    return w.hits > hits


async def test_agent_runs_the_scraper_beside_its_probes(
    workers: dict[str, MetricsWorker], redis_url: str, key_prefix: str
) -> None:
    """`run_agent` with the Redis sink stores its region's live figures, read back as evidence."""
    from trafficd.probe.agent import run_agent

    policy = two_regions(workers, redis_url, key_prefix)
    loaded = kit.as_loaded(policy.model_dump(mode="json"))
    client = redis_client(policy.redis)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(loaded, "us-east", stop=stop, agent_id="agent-cap"))
    try:

        async def us_live() -> RegionEvidence | None:
            ev = (await live_evidence(client, policy))["us-east"]
            return ev if ev.capacity_source == "live" and ev.load_rps else None

        ev = await kit.eventually_async(us_live, "us-east's live load from the agent")
        assert ev.load_rps == pytest.approx(50.0, rel=0.3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()


class FakePrometheus:
    """Prometheus' /api/v1/query: answers `value` req/s as a one-sample vector, or an error while `failing`."""

    def __init__(self, value: float) -> None:
        self.value, self.failing = value, False
        self.queries: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def query(self, request: web.Request) -> web.Response:
        self.queries.append(request.query["query"])
        if self.failing:
            return web.json_response({"status": "error", "error": "query timed out"}, status=503)
        sample = {"metric": {}, "value": [time.time(), str(self.value)]}
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [sample]}})

    async def start(self) -> FakePrometheus:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.query)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self


async def test_load_query_replaces_the_workers_sum(
    workers: dict[str, MetricsWorker], redis_url: str, key_prefix: str
) -> None:
    """With capacity.load_query the region's load is Prometheus' answer ({region} filled in); a failing query is
    logged once per episode and the workers' headroom stays in use."""
    prom = await FakePrometheus(80.0).start()
    query = 'sum(rate(gateway_requests_total{region="{region}"}[1m]))'
    policy = two_regions(workers, redis_url, key_prefix, load_query={"url": prom.url, "query": query})
    client = redis_client(policy.redis)
    scraper = scraper_for(policy, "us-east", client)
    try:

        async def queried() -> RegionEvidence | None:
            await scraper.scrape_once(policy)
            ev = (await live_evidence(client, policy))["us-east"]
            return ev if ev.headroom_rps is not None and ev.load_rps == 80.0 else None

        ev = await kit.eventually_async(queried, "us-east's load from the query")
        assert ev.capacity_source == "live" and ev.headroom_rps == pytest.approx(30.0, rel=0.3)
        assert prom.queries[0] == 'sum(rate(gateway_requests_total{region="us-east"}[1m]))'
        with capture_logs() as logs:
            prom.failing = True
            for _ in range(3):
                await scraper.scrape_once(policy)
            prom.failing = False
            await scraper.scrape_once(policy)
        events = [e["event"] for e in logs if e["event"].startswith("capacity.query")]
        assert events == ["capacity.query_failed", "capacity.query_recovered"]
    finally:
        await scraper.close()
        await client.aclose()
        if prom.runner is not None:
            await prom.runner.cleanup()
