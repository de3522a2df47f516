"""The demo's simulated users: requests go where Route 53's weights (moto behind the enforcing proxy, set by the
real provider) say, and the workers' own vLLM counters see the load they were sent (real aiohttp workers)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import r53proxy
from dns_fixtures import ctx, make_policy
from kit import eventually_async
from structlog.testing import capture_logs
from test_demo_worker import Worker

from trafficd.dev.fakeworker import Behaviour
from trafficd.dev.loadgen import LoadGen, read_worker_load
from trafficd.dns.route53.client import route53_client
from trafficd.dns.route53.provider import Route53Provider, bootstrap
from trafficd.model import TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy

REGIONS = ["us-east", "eu-west", "ap-southeast"]


def drain_us(own: float) -> TrafficMatrix:
    """us-east serves `own` of its users and sends the rest to eu-west; the others serve their own."""
    matrix = identity_matrix(REGIONS)
    matrix["us-east"] = {"us-east": own, "eu-west": 1.0 - own, "ap-southeast": 0.0}
    return matrix


@pytest.fixture
async def workers() -> AsyncIterator[dict[str, Worker]]:
    started = {
        r: await Worker(Behaviour(ttft_ms=5.0, token_ms=1.0, tokens=2, jitter=0.0, models=["m"])).start()
        for r in REGIONS
    }
    yield started
    for w in started.values():
        await w.runner.cleanup()


@pytest.fixture
def policy(hosted_zone: dict[str, str], moto: Any, route53: Any) -> Policy:
    p = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url)
    bootstrap(p, route53)
    return p


def set_weights(policy: Policy, route53: Any, matrix: TrafficMatrix) -> None:
    result = Route53Provider(policy, route53).reconcile(matrix, context=ctx())
    assert result.complete, result


async def running(gen: LoadGen) -> asyncio.Task[None]:
    return asyncio.create_task(gen.run())


async def stop(gen: LoadGen, task: asyncio.Task[None]) -> None:
    """Stop the arrivals and wait for the requests in flight to end."""
    gen.stop()
    await asyncio.wait_for(task, timeout=30)


async def test_users_are_split_by_the_pool_weights_in_route53(
    policy: Policy, route53: Any, workers: dict[str, Worker]
) -> None:
    """us-east's pool at 25 / 75 % (us-east / eu-west) in Route 53: of 600 answers to its users, eu-west served
    75 % ± 7 % (4 standard deviations), ap-southeast none; each worker's request_success_total counts exactly
    what it served."""
    set_weights(policy, route53, drain_us(0.25))
    urls = {r: [w.url] for r, w in workers.items()}
    gen = LoadGen(policy, {"us-east": 200.0}, workers=urls, client=route53, rng=random.Random(7))
    task = await running(gen)
    try:
        await eventually_async(lambda: sum(gen.served.values()) >= 600, "600 answers", timeout_s=30)
    finally:
        await stop(gen, task)
    share = gen.share("us-east")
    sd = math.sqrt(0.75 * 0.25 / sum(gen.served.values()))
    assert abs(share["eu-west"] - 0.75) <= max(0.07, 4 * sd), share
    assert share["ap-southeast"] == 0.0
    assert not gen.failed
    for region, w in workers.items():
        load = await asyncio.to_thread(read_worker_load, w.url)
        assert load.completed == gen.served_by_region()[region], region
        assert load.running == 0 and load.waiting == 0


async def test_load_moves_when_route53_changes(policy: Policy, route53: Any, workers: dict[str, Worker]) -> None:
    """Users follow a weight change within the refresh: us-east's users are served at home while its pool says so,
    then (pool moved to eu-west in Route 53) the served rate moves to eu-west and us-east serves none of them."""
    urls = {r: [w.url] for r, w in workers.items()}
    gen = LoadGen(policy, {"us-east": 100.0}, workers=urls, client=route53, refresh_s=0.2, window_s=1.0)
    task = await running(gen)
    try:
        rates = await eventually_async(
            lambda: r if (r := gen.served_rates())["us-east"] > 20 else None, "us-east serving its users", timeout_s=20
        )
        assert rates["eu-west"] == 0.0
        await asyncio.to_thread(set_weights, policy, route53, drain_us(0.0))

        def moved() -> dict[str, float] | None:
            r = gen.served_rates()
            return r if r["eu-west"] > 20 and r["us-east"] == 0.0 else None

        await eventually_async(moved, "us-east's users served by eu-west only", timeout_s=20)
        assert gen.matrix["us-east"] == drain_us(0.0)["us-east"]
    finally:
        await stop(gen, task)


async def test_route53_unreadable_keeps_the_last_weights_and_is_logged_once(
    moto: Any, hosted_zone: dict[str, str], workers: dict[str, Worker]
) -> None:
    """Route 53 refusing every listing (AccessDenied through the proxy): one loadgen.route53_read_failed for the
    episode while the users keep going where the last weights said; one loadgen.route53_read_recovered after."""
    proxy = r53proxy.start(moto.upstream_url)
    try:
        policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=proxy.url)
        client = route53_client(policy)
        bootstrap(policy, client)
        set_weights(policy, client, drain_us(0.0))
        urls = {r: [w.url] for r, w in workers.items()}
        gen = LoadGen(policy, {"us-east": 50.0}, workers=urls, client=client, refresh_s=0.1)
        with capture_logs() as logs:
            task = await running(gen)
            try:
                await eventually_async(lambda: gen.served[("us-east", "eu-west")] > 0, "users sent to eu-west")
                proxy.inject("list", "error", times=-1, status=403, code="AccessDenied")
                lists = proxy.ops.count("list")
                await eventually_async(lambda: proxy.ops.count("list") >= lists + 5, "5 refused listings")
                before = gen.served[("us-east", "eu-west")]
                await eventually_async(lambda: gen.served[("us-east", "eu-west")] > before + 10, "users still sent")
                proxy.faults.clear()
                await eventually_async(
                    lambda: any(e["event"] == "loadgen.route53_read_recovered" for e in logs), "recovered"
                )
            finally:
                await stop(gen, task)
        failed = [e for e in logs if e["event"] == "loadgen.route53_read_failed"]
        assert len(failed) == 1 and "AccessDenied" in failed[0]["detail"], failed
        assert [e["event"] for e in logs].count("loadgen.route53_read_recovered") == 1
        assert gen.share("us-east")["us-east"] == 0.0  # the last weights read held throughout
    finally:
        proxy.stop()
