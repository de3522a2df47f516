"""The fake worker's engine: a concurrency limit with a real queue, KV-cache use and vLLM-format metrics.

Like vLLM's scheduler, the engine runs at most `max_num_seqs` requests at once; the others wait in arrival order.
A request is admitted when a slot is free and the KV cache has room for it: each running request reserves its
prompt plus its answer tokens (`kv_tokens`) of `kv_cache_tokens` (vLLM: `num_gpu_blocks × block_size`). vLLM
allocates blocks as it generates and preempts when it runs out; the fake reserves up front and never preempts —
simple, and the usage it reports is still what the running requests hold. A single request larger than the cache
is still admitted when nothing else runs, so the queue never deadlocks.

`GET /metrics` (`render`) publishes what the engine really carries, in vLLM's own names and types
(`vllm/v1/metrics/loggers.py`: labels `model_name` and `engine`):

| metric | type | value |
|---|---|---|
| `vllm:num_requests_running` | gauge | requests being served now |
| `vllm:num_requests_waiting` | gauge | requests queued beyond the limit (or the KV cache) |
| `vllm:kv_cache_usage_perc` | gauge | reserved / capacity, 0..1 (also as the pre-0.10 `vllm:gpu_cache_usage_perc`) |
| `vllm:request_success_total` | counter | completed requests, `finished_reason="stop"` |
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ["model_name", "engine"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What the engine can carry at once."""

    max_num_seqs: int  # concurrent requests (vLLM's --max-num-seqs)
    kv_cache_tokens: int  # KV-cache capacity in tokens


class Engine:
    """Admits requests up to its limits, queues the rest in arrival order, counts what it served."""

    def __init__(self, limits: Callable[[], Limits]) -> None:
        self._limits = limits
        self._changed = asyncio.Condition()
        self.running = 0
        self.waiting = 0
        self.kv_reserved = 0
        self.completed = 0

    def kv_usage(self) -> float:
        return min(1.0, self.kv_reserved / max(1, self._limits().kv_cache_tokens))

    def _fits(self, kv_tokens: int) -> bool:
        limits = self._limits()
        if self.running >= limits.max_num_seqs:
            return False
        return self.running == 0 or self.kv_reserved + kv_tokens <= limits.kv_cache_tokens

    @contextlib.asynccontextmanager
    async def slot(self, kv_tokens: int) -> AsyncIterator[None]:
        """Wait for a slot (counted as waiting), hold it while the body runs (counted as running)."""
        async with self._changed:
            self.waiting += 1
            try:
                await self._changed.wait_for(lambda: self._fits(kv_tokens))
            finally:
                self.waiting -= 1
            self.running += 1
            self.kv_reserved += kv_tokens
        try:
            yield
        finally:
            async with self._changed:
                self.running -= 1
                self.kv_reserved -= kv_tokens
                self._changed.notify_all()

    async def limits_changed(self) -> None:
        """Re-check the queue after the limits were raised at run time."""
        async with self._changed:
            self._changed.notify_all()


class _VllmCollector(Collector):
    def __init__(self, engine: Engine, model: Callable[[], str]) -> None:
        self.engine = engine
        self.model = model

    def collect(self) -> Iterable[Metric]:
        e, labels = self.engine, [self.model(), "0"]
        gauges = [
            ("vllm:num_requests_running", "Number of requests in model execution batches.", e.running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", e.waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage()),
            (
                "vllm:gpu_cache_usage_perc",
                "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
                e.kv_usage(),
            ),
        ]
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=LABELS)
            gauge.add_metric(labels, float(value))
            yield gauge
        success = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.", labels=[*LABELS, "finished_reason"]
        )
        success.add_metric([*labels, "stop"], float(e.completed))
        yield success


def registry(engine: Engine, model: Callable[[], str]) -> CollectorRegistry:
    """A registry of this worker's own (not the process-global one): several workers may share a process."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_VllmCollector(engine, model))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
