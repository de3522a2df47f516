"""Benchmark of the statistics store: `python -m trafficd.dev.bench.stats [--quick]`.

Starts its own redis-server on a free loopback port and prints every figure of issue 4: ingest samples/s from one
process and Redis CPU µs per sample (`INFO cpu` deltas); evaluation time of 10/100/1,000 series at 1 and 100
samples/s (rebuild and incremental); Redis memory per series per 5-min window at 1/s and 100/s; p99 relative error
against the exact value on a heavy-tailed lognormal and on a bimodal with 1–2 % stalls of 10–30 s; disagreements of
the SLO decision with the exact computation over ≥ 5,000 windows (pure) plus windows sent through Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from trafficd import keys
from trafficd.dev.services import redis_server
from trafficd.model import Sample
from trafficd.policy.schema import Policy, parse_policy
from trafficd.runtime import logs
from trafficd.stats import sketch, store
from trafficd.stats.sketch import Sketch

THRESHOLD_MS = 3000.0
Q = 0.99


def make_policy(url: str, prefix: str, regions: int, slice_s: str = "10s") -> Policy:
    region_yaml = "".join(
        f"  r{i}:\n    workers: [{{name: w, url: 'http://127.0.0.1:9'}}]\n"
        f"    dns: {{endpoint: r{i}.example.com, aws_region: us-east-1}}\n"
        for i in range(regions)
    )
    text = (
        f"version: 1\nservice: bench\nredis: {{url: '{url}', key_prefix: {prefix}}}\n"
        "probe: {targets: {allow_loopback: true}}\nmodels: [{name: m}]\n"
        f"regions:\n{region_yaml}"
        "slo: {total_p99: 3s, ttft_p99: 300ms}\n"
        f"windows: {{slice: {slice_s}, trip: 1m, long: 5m, max_clock_skew: 30s, stale_after: 30s}}\n"
        "guards: {min_serving_regions: 1}\n"
        "dns: {zone_id: Z1, record_name: api.example.com.}\n"
    )
    return parse_policy(text).policy


# ---------------------------------------------------------------- synthetic latencies


def lognormal(rng: random.Random, scale: float = 1.0) -> float:
    """Heavy-tailed lognormal: median 700 ms, σ = 0.8 (p99 ≈ 4.5 s before scaling)."""
    return rng.lognormvariate(math.log(700.0), 0.8) * scale


def bimodal(rng: random.Random, stall_share: float = 0.015) -> float:
    """Body: lognormal median 800 ms, σ = 0.4; a `stall_share` of 10–30 s stalls."""
    if rng.random() < stall_share:
        return rng.uniform(10_000.0, 30_000.0)
    return rng.lognormvariate(math.log(800.0), 0.4)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


def samples_of(values: list[float], region: str = "r0", worker: str = "w", done: float = 0.0) -> list[Sample]:
    return [Sample(region, worker, "m", done - v / 1000.0, True, None, v, ttft_ms=v / 8) for v in values]


# ---------------------------------------------------------------- accuracy and decisions (pure)


def accuracy(windows: int, rng: random.Random) -> None:
    print(f"\n## p99 error and SLO decisions over {windows:,} windows (pure codec, n = 400…1,200 per window)")
    dists: list[tuple[str, Callable[[float], float]]] = [
        ("lognormal σ=0.8 (p99 scaled to 0.9–1.1 × SLO)", lambda s: lognormal(rng, s)),
        ("bimodal, 0.5–2 % stalls of 10–30 s", lambda s: bimodal(rng, s)),
    ]
    for name, draw in dists:
        errs: list[float] = []
        exact_dis = float_dis = bucket_dis = breaches = 0
        for _ in range(windows // 2):
            n = rng.randint(400, 1200)
            param = (
                THRESHOLD_MS * rng.uniform(0.9, 1.1) / (700.0 * math.exp(2.326 * 0.8))
                if name.startswith("log")
                else rng.uniform(0.005, 0.02)
            )
            values = [draw(param) for _ in range(n)]
            sk = Sketch.from_samples(samples_of(values), THRESHOLD_MS, None)
            exact = exact_quantile(values, Q)
            est = sk.quantile("total", Q) or 0.0
            errs.append(abs(est - exact) / exact)
            truth = exact > THRESHOLD_MS
            breaches += truth
            exact_dis += sketch.exceeds_quantile(sk.over("total"), sk.n, Q) != truth
            float_dis += (sk.over_fraction("total") > 1 - Q) != truth
            bucket_dis += (est > THRESHOLD_MS) != truth
        print(
            f"{name}: {windows // 2:,} windows ({breaches:,} breaching); p99 relative error mean "
            f"{statistics.fmean(errs):.3%} max {max(errs):.3%}; decision disagreements: exact count "
            f"{exact_dis}, over_slo_fraction > 1-q {float_dis}, histogram p99 > SLO {bucket_dis}"
        )


# ---------------------------------------------------------------- Redis helpers


async def redis_cpu_s(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def ingest(client: Any, policy: Policy, total: int, rng: random.Random) -> None:
    print("\n## Ingest from one process (SampleSink → Redis, 20 series, bimodal latencies)")
    now = time.time()
    pool = [
        Sample("r0", f"w{i % 10}", f"m{i % 2}", now - 5 + i / total, True, None, bimodal(rng), ttft_ms=90.0)
        for i in range(total)
    ]

    async def batched(size: int) -> None:
        sink = store.SampleSink(client, policy)
        for i in range(0, len(pool), size):
            await sink.write(pool[i : i + size])

    async def concurrent_single(tasks: int) -> None:
        sink = store.SampleSink(client, policy)
        it = iter(pool)

        async def worker() -> None:
            for s in it:
                await sink.write([s])

        await asyncio.gather(*(worker() for _ in range(tasks)))
        while sink.buffered:
            await sink.write([])

    async def sequential_single() -> None:
        sink = store.SampleSink(client, policy)
        for s in pool[: total // 10]:
            await sink.write([s])

    modes: list[tuple[str, Callable[[], Any], int]] = [
        ("write() of 100-sample batches", lambda: batched(100), total),
        ("write() of 1,000-sample batches", lambda: batched(1000), total),
        ("write() of 1 sample from 64 concurrent tasks", lambda: concurrent_single(64), total),
        ("write() of 1 sample, awaited one by one", sequential_single, total // 10),
    ]
    for label, run, count in modes:
        cpu0, t0 = await redis_cpu_s(client), time.perf_counter()
        await run()
        elapsed, cpu = time.perf_counter() - t0, await redis_cpu_s(client) - cpu0
        print(f"{label}: {count / elapsed:,.0f} samples/s; Redis CPU {cpu / count * 1e6:.2f} µs/sample")


async def memory(client: Any, url: str, rng: random.Random, series: int) -> None:
    print(f"\n## Redis memory per series per 5-min window (10-s slices, {series} worker × model series in one region)")
    figures: dict[tuple[str, int], float] = {}
    dists: list[tuple[str, Callable[[], float]]] = [
        ("bimodal with stalls", lambda: bimodal(rng)),
        ("lognormal", lambda: lognormal(rng)),
    ]
    for dist_name, draw in dists:
        for rate in (1, 100):
            prefix = f"mem{rate}{dist_name[0]}"
            sink = store.SampleSink(client, make_policy(url, prefix, 1), max_batch=10_000)
            now = time.time()
            batch = []
            for w in range(series):
                for i in range(300 * rate):
                    v = draw()
                    batch.append(Sample("r0", f"w{w}", "m", now - 300 + i / rate, True, None, v, ttft_ms=v / 8))
            for i in range(0, len(batch), 10_000):
                await sink.write(batch[i : i + 10_000])
            series_bytes = region_bytes = slices = 0
            async for k in client.scan_iter(match=f"{prefix}:*", count=1000):
                used = int(await client.memory_usage(k, samples=0) or 0)
                if b":s:" in k:
                    series_bytes, slices = series_bytes + used, slices + 1
                else:
                    region_bytes += used
            per_series = series_bytes / series / 2  # two metrics per worker × model key
            figures[(dist_name, rate)] = per_series
            print(
                f"{dist_name} at {rate:>3}/s: {per_series / 1024:5.1f} KB per metric series ({slices // series} "
                f"slice keys per worker × model, both metrics); plus {region_bytes / 1024:5.1f} KB per region "
                f"(aggregate, index, newest, recent keys) = {(series_bytes + region_bytes) / series / 2048:5.1f} KB "
                f"per metric series with {series} worker × model series in the region"
            )
        ratio = figures[(dist_name, 100)] / figures[(dist_name, 1)]
        print(f"{dist_name}: memory at 100/s is {ratio:.2f}× that at 1/s")


async def populate(
    client: Any, prefix: str, size: int, sids: range, pool: list[tuple[bytes, Sketch]], rng: random.Random
) -> None:
    """Write what SampleSink would for `size` series over 10 regions: series slices, region aggregates, index."""
    regions, per_slice = min(10, size), pool[0][1].n
    pipe = client.pipeline(transaction=False)
    for sid in sids:
        totals: dict[str, list[Sketch]] = {}
        for s in range(size):
            region, series = f"r{s % regions}", keys.series_id(f"w{s}", "m")
            raw, sk = rng.choice(pool)
            totals.setdefault(region, []).append(sk)
            pipe.set(keys.slice_key(prefix, "bench", region, sid, series), raw, ex=900)
            pipe.hincrby(keys.index_key(prefix, "bench", region, keys.epoch_of(sid)), str(sid), per_slice)
            pipe.hset(keys.newest_key(prefix, "bench", region), series, repr(sid * 10.0 + 5))
        for region, parts in totals.items():
            pipe.set(
                keys.region_slice_key(prefix, "bench", region, sid),
                sketch.encode_aggregate(sketch.merge(parts)),
                ex=900,
            )
            pipe.hset(keys.heartbeat_key(prefix, "bench", region), "agent", repr(sid * 10.0 + 5))
    await pipe.execute()


async def evaluation(client: Any, url: str, rng: random.Random, sizes: tuple[int, ...], repeats: int) -> None:
    print("\n## Evaluation time: StatsView.evidence() (10 regions; one series = worker × model, both metrics)")
    for rate in (1, 100):
        pool = []
        for _ in range(16):
            words = sketch.increments(samples_of([bimodal(rng) for _ in range(10 * rate)]), 3000, 300)
            pool.append((sketch.encode_be(words), Sketch.from_words(words)))
        for size in sizes:
            prefix = f"ev{rate}x{size}"
            policy = make_policy(url, prefix, min(10, size))
            now = math.floor(time.time() / 10) * 10 + 5.0
            cur = math.floor(now / 10)
            await populate(client, prefix, size, range(cur - 29, cur + 1), pool, rng)
            view = store.StatsView(client, policy)
            t0 = time.perf_counter()
            first = await view.evidence(now)
            rebuild_ms = (time.perf_counter() - t0) * 1000
            assert sum(e.n for e in first.values()) == size * 6 * 10 * rate
            times = []
            for k in range(1, repeats + 1):
                # the slice that just ended gets its last samples and a new current slice starts
                await populate(client, prefix, size, range(cur + k - 1, cur + k + 1), pool, rng)
                t0 = time.perf_counter()
                await view.evidence(now + 10 * k)
                times.append((time.perf_counter() - t0) * 1000)
            refetched = view.last_fetch_count
            t0 = time.perf_counter()
            detail = await view.detail(now + 10 * repeats)
            detail_ms = (time.perf_counter() - t0) * 1000
            assert sum(len(d.series) for d in detail.values()) == size
            print(
                f"{size:>5} series at {rate:>3}/s: evidence() incremental {statistics.median(times):6.1f} ms median "
                f"(max {max(times):.1f}; {refetched} region slices refetched); rebuild on start "
                f"{rebuild_ms:6.1f} ms; detail() for status {detail_ms:6.0f} ms"
            )
            await client.flushdb()


async def decisions_via_redis(client: Any, url: str, windows: int, rng: random.Random) -> None:
    print(f"\n## SLO decisions through Redis: {windows} consecutive 1-min windows (SampleSink → StatsView)")
    policy = make_policy(url, "dec", 1)
    sink, view = store.SampleSink(client, policy, max_batch=10_000), store.StatsView(client, policy)
    base = math.floor(time.time() / 60) * 60 - 3600.0
    disagree = p99_err_max = 0.0
    exact_same = 0
    for k in range(windows):
        start, n = base + 60.0 * k, 400
        stall = rng.uniform(0.005, 0.02)
        values = [bimodal(rng, stall) for _ in range(n)]
        batch = [
            Sample("r0", f"w{i % 4}", "m", start + 60.0 * (i + 0.5) / n - v / 1000, True, None, v, ttft_ms=v / 8)
            for i, v in enumerate(values)
        ]
        await sink.write(batch)
        ev = (await view.evidence(start + 59.9))["r0"]
        exact = exact_quantile(values, Q)
        truth = exact > THRESHOLD_MS
        over = round(ev.over_slo_fraction * ev.n)
        exact_same += ev.n == n and over == sum(v > THRESHOLD_MS for v in values)
        disagree += sketch.exceeds_quantile(over, ev.n, Q) != truth
        p99_err_max = max(p99_err_max, abs((ev.p99_ms or 0) - exact) / exact)
    print(
        f"windows with n and over-count identical to the raw samples: {exact_same}/{windows}; "
        f"decision disagreements {int(disagree)}; p99 relative error max {p99_err_max:.3%}"
    )
    await client.flushdb()


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


async def run(quick: bool) -> None:
    logs.configure("WARNING", to_stderr=True)
    rng = random.Random(20261127)
    print(f"# trafficd stats benchmark ({'quick' if quick else 'full'})")
    print(f"machine: {machine()}")
    t_start = time.perf_counter()
    accuracy(400 if quick else 5_000, rng)
    with redis_server() as server:
        policy = make_policy(server.url, "ing", 1)
        client = store.redis_client(policy.redis)
        try:
            info = await client.info("server")
            print(f"redis-server {info['redis_version']} on {server.url}")
            await ingest(client, policy, 5_000 if quick else 60_000, rng)
            await client.flushdb()
            await memory(client, server.url, rng, 1 if quick else 5)
            await evaluation(client, server.url, rng, (10, 100) if quick else (10, 100, 1000), 3 if quick else 6)
            await decisions_via_redis(client, server.url, 30 if quick else 300, rng)
        finally:
            await client.aclose()
    print(f"\nbenchmark took {time.perf_counter() - t_start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trafficd.dev.bench.stats", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds (smoke test)")
    args = parser.parse_args()
    asyncio.run(run(args.quick))


if __name__ == "__main__":
    main()
