"""The fake worker's vLLM-format /metrics: what it publishes is the load it really carries (a real aiohttp server,
scraped over HTTP and parsed with prometheus_client's parser)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kit import eventually_async
from prometheus_client.parser import text_string_to_metric_families

from trafficd.dev.fakeworker import Behaviour, make_app

MODEL = "demo-small"


class Worker:
    """One fake worker on a free loopback port."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.runner = web.AppRunner(make_app(behaviour), access_log=None, shutdown_timeout=0.5)
        self.url = ""

    async def start(self) -> Worker:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start(**behaviour: Any) -> Worker:
    return await Worker(Behaviour(jitter=0.0, models=[MODEL], **behaviour)).start()


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """Every sample of /metrics by name (labels checked: model_name is the served model), and each family's type."""
    async with http.get(url + "/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
    out: dict[str, Any] = {"types": {}}
    for family in text_string_to_metric_families(text):
        out["types"][family.name] = family.type
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert sample.labels["model_name"] == MODEL and sample.labels["engine"] == "0", sample
            out[sample.name] = sample.value
            if "finished_reason" in sample.labels:
                out[f"{sample.name}:{sample.labels['finished_reason']}"] = sample.value
    return out


BODY = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 400}], "stream": True, "max_tokens": 4}


async def stream(http: aiohttp.ClientSession, url: str, t0: float) -> tuple[int, float]:
    """One streaming chat request read to the end: (status, seconds from t0 to the end)."""
    async with http.post(url + "/v1/chat/completions", json=BODY) as resp:
        await resp.read()
        return resp.status, time.monotonic() - t0


async def test_running_and_waiting_are_the_requests_it_carries(http: aiohttp.ClientSession) -> None:
    """With max_num_seqs 2 and 4 concurrent requests, 2 run and 2 wait; the waiting ones end a full answer later;
    afterwards nothing runs or waits and the success counter counts the 4 (finished_reason="stop")."""
    w = await start(max_num_seqs=2, ttft_ms=4000.0, token_ms=1.0, tokens=4)
    try:
        t0 = time.monotonic()
        tasks = [asyncio.create_task(stream(http, w.url, t0)) for _ in range(4)]

        async def two_and_two() -> bool:
            m = await scrape(http, w.url)
            return bool(m["vllm:num_requests_running"] == 2 and m["vllm:num_requests_waiting"] == 2)

        await eventually_async(two_and_two, "2 running and 2 waiting", timeout_s=3.5)
        results = sorted(await asyncio.gather(*tasks), key=lambda r: r[1])
        assert [status for status, _ in results] == [200] * 4
        assert results[2][1] >= 8.0 and results[3][1] >= 8.0  # queued behind a 4 s answer
        m = await scrape(http, w.url)
        assert m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
        assert m["vllm:request_success_total:stop"] == 4
        assert m["vllm:kv_cache_usage_perc"] == 0.0
        assert m["types"] == {
            "vllm:num_requests_running": "gauge",
            "vllm:num_requests_waiting": "gauge",
            "vllm:kv_cache_usage_perc": "gauge",
            "vllm:gpu_cache_usage_perc": "gauge",
            "vllm:request_success": "counter",
        }
    finally:
        await w.runner.cleanup()


async def test_kv_cache_usage_is_what_running_requests_hold_and_a_full_cache_queues(
    http: aiohttp.ClientSession,
) -> None:
    """Each running request holds its prompt (~4 characters a token) plus its answer tokens of the KV capacity; a
    cache too small for two makes the second wait although a slot is free; both names carry the same value."""
    per_request = len(json.dumps(BODY).encode()) // 4 + 4
    capacity = per_request * 3 // 2  # room for one and a half requests
    w = await start(max_num_seqs=8, kv_cache_tokens=capacity, ttft_ms=4000.0, token_ms=1.0, tokens=4)
    try:
        t0 = time.monotonic()
        tasks = [asyncio.create_task(stream(http, w.url, t0)) for _ in range(2)]

        async def one_held_one_queued() -> dict[str, Any] | None:
            m = await scrape(http, w.url)
            return m if (m["vllm:num_requests_running"], m["vllm:num_requests_waiting"]) == (1, 1) else None

        m = await eventually_async(one_held_one_queued, "1 running, 1 waiting for the KV cache", timeout_s=3.5)
        assert m["vllm:kv_cache_usage_perc"] == pytest.approx(per_request / capacity)
        assert m["vllm:gpu_cache_usage_perc"] == m["vllm:kv_cache_usage_perc"]
        assert [status for status, _ in await asyncio.gather(*tasks)] == [200, 200]
        assert (await scrape(http, w.url))["vllm:kv_cache_usage_perc"] == 0.0
    finally:
        await w.runner.cleanup()


async def test_failed_requests_are_not_counted_as_served(http: aiohttp.ClientSession) -> None:
    """Answers the worker fails (HTTP 500) leave the success counter alone; completed ones add one each."""
    w = await start(ttft_ms=1.0, token_ms=1.0, tokens=2, error_rate=1.0)
    try:
        assert (await stream(http, w.url, time.monotonic()))[0] == 500
        assert (await scrape(http, w.url))["vllm:request_success_total:stop"] == 0
        async with http.post(w.url + "/control", json={"error_rate": 0.0}) as resp:
            assert resp.status == 200
        for _ in range(3):
            assert (await stream(http, w.url, time.monotonic()))[0] == 200
        assert (await scrape(http, w.url))["vllm:request_success_total:stop"] == 3
    finally:
        await w.runner.cleanup()


async def test_a_long_prompt_holds_a_slot_through_its_prefill(http: aiohttp.ClientSession) -> None:
    """prefill_ms_per_ktok delays the first token by the prompt's length: a ~1,000-token prompt at 1 s per 1,000
    tokens is seen running, holding its KV-cache share, and answers no sooner than 1 s after it was sent."""
    w = await start(ttft_ms=1.0, token_ms=1.0, tokens=2, prefill_ms_per_ktok=1000.0, kv_cache_tokens=10_000)
    body = {**BODY, "messages": [{"role": "user", "content": "x" * 4000}]}
    try:
        t0 = time.monotonic()

        async def send() -> float:
            async with http.post(w.url + "/v1/chat/completions", json=body) as resp:
                await resp.read()
                return time.monotonic() - t0

        task = asyncio.create_task(send())
        m = await eventually_async(lambda: _held(http, w.url), "the long prompt running", timeout_s=5, interval_s=0.02)
        assert m["vllm:kv_cache_usage_perc"] >= 0.1  # ≥ 1,000 of 10,000 tokens
        assert await task >= 1.0
    finally:
        await w.runner.cleanup()


async def _held(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    m = await scrape(http, url)
    return m if m["vllm:num_requests_running"] == 1 else None
