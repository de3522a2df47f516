"""Samples land exactly once when Redis applied a batch but its reply was lost (a primary dying mid-reply)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import kit
import pytest
import structlog

from trafficd.model import Sample
from trafficd.policy.schema import Policy
from trafficd.stats import store
from trafficd.stats.records import records_of


class ReplyEatingProxy:
    """A TCP proxy in front of redis-server that, while `eating`, forwards commands but drops Redis's replies."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.eating = False
        self.clients: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.clients.append(writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if replies and self.eating:
                        continue
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def cut(self) -> None:
        """Close every client connection (the client sees its reply lost)."""
        for w in self.clients:
            w.close()
        self.clients.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[tuple[ReplyEatingProxy, str]]:
    p = ReplyEatingProxy(redis_url)
    url = await p.start()
    yield p, url
    await p.stop()


def policy_at(url: str, prefix: str) -> Policy:
    windows = {"evaluate_every": "1s", "slice": "1s", "trip": "5s", "long": "20s", "stale_after": "5s"}
    return kit.as_loaded(kit.two_region_doc(url, prefix, windows=windows)).policy


@dataclass
class Sides:
    """A sink writing through the proxy, and a reader straight to Redis (for what really landed)."""

    proxy: ReplyEatingProxy
    sink: store.SampleSink
    reader: Any
    direct: Policy
    key_prefix: str

    async def landed(self) -> int:
        return (await store.StatsView(self.reader, self.direct).evidence(time.time()))["r1"].n


@pytest.fixture
async def sides(proxy: tuple[ReplyEatingProxy, str], redis_url: str, key_prefix: str) -> AsyncIterator[Sides]:
    p, url = proxy
    via_proxy, direct = policy_at(url, key_prefix), policy_at(redis_url, key_prefix)
    client, reader = store.redis_client(via_proxy.redis), store.redis_client(direct.redis)
    sink = store.SampleSink(client, via_proxy, agent_id="a1", retry_base_s=0.05, retry_cap_s=0.1)
    await sink.heartbeat("a1", "r1")  # the clock is judged now, so the next write sends only the batch
    yield Sides(p, sink, reader, direct, key_prefix)
    await client.aclose()
    await reader.aclose()


def five_samples() -> list[Sample]:
    now = time.time()
    return [Sample("r1", "w1", "m1", now - 0.5, True, None, 100.0) for _ in range(5)]


async def test_a_batch_applied_whose_reply_was_lost_is_not_written_twice(sides: Sides) -> None:
    """Redis applies the MULTI/EXEC, the reply never arrives: the retry finds the batch's marker and skips it."""
    sink = sides.sink
    sides.proxy.eating = True
    with structlog.testing.capture_logs() as logs:
        write = asyncio.create_task(sink.write(five_samples()))

        async def applied() -> bool:
            return bool([k async for k in sides.reader.scan_iter(match=f"{sides.key_prefix}:*:b:*")])

        await kit.eventually_async(applied, "Redis applied the batch", timeout_s=10.0, interval_s=0.02)
        sides.proxy.cut()
        await asyncio.wait_for(write, 10.0)
        assert sink.buffered == 5 and not sink.healthy  # unsure: it may or may not have landed
        sides.proxy.eating = False
        assert await sink.flush()
    assert sink.duplicates_avoided == 5 and sink.written_total == 5
    assert [e["samples"] for e in logs if e["event"] == "store.batch_already_written"] == [5]
    assert await sides.landed() == 5


async def test_a_batch_that_never_reached_redis_is_sent_again_once(sides: Sides) -> None:
    """A write cut before Redis saw it has no marker: the retry sends it, and it counts once."""
    sink = sides.sink
    await sides.proxy.stop()  # nothing listens: the write fails before Redis sees it
    await sink.write(five_samples())
    assert sink.buffered == 5
    sink.client = sides.reader  # the agent reconnects (here: straight to Redis)
    with structlog.testing.capture_logs() as logs:
        assert await sink.flush()
    assert sink.duplicates_avoided == 0 and sink.written_total == 5
    assert not [e for e in logs if e["event"] == "store.batch_already_written"]
    assert await sides.landed() == 5


async def test_an_early_record_retried_after_a_lost_reply_then_its_final_record_count_once(sides: Sides) -> None:
    """A stalled probe's early record (n, over) lands but its reply is lost: the retry skips it, and the final
    record adds only the error and the latency: n 1, over 1, errors 1."""
    sink = sides.sink
    now = time.time()
    stalled = Sample("r1", "w1", "m1", now - 3.6, False, "total_timeout", 3500.0)
    early, final = records_of(stalled, sides.direct.slo_threshold_ms, sides.direct.ttft_threshold_ms)
    assert early.early and not final.early
    sides.proxy.eating = True
    write = asyncio.create_task(sink.write([early]))

    async def applied() -> bool:
        return bool([k async for k in sides.reader.scan_iter(match=f"{sides.key_prefix}:*:b:*")])

    await kit.eventually_async(applied, "Redis applied the early record", timeout_s=10.0, interval_s=0.02)
    sides.proxy.cut()
    await asyncio.wait_for(write, 10.0)
    sides.proxy.eating = False
    assert await sink.flush()
    assert sink.duplicates_avoided == 1
    await sink.write([final])
    assert await sink.flush()
    ev = (await store.StatsView(sides.reader, sides.direct).evidence(time.time()))["r1"]
    assert (ev.n, ev.errors, ev.over_slo_fraction) == (1, 1, 1.0)
    assert ev.p99_ms is not None and ev.p99_ms >= 3500.0 * 0.99
