"""Read one inference worker's load from its Prometheus metrics text (pure: text in, `WorkerLoad` out).

The text is parsed with prometheus-client's own parser (`text_string_to_metric_families`), never by hand. Each
figure is read from one metric *sample* name (a counter's sample carries `_total`), summed over every label set
(vLLM labels by model and engine, `request_success_total` by finish reason); KV-cache usage is the largest of its
label sets (the fullest engine decides). The names each server publishes, read from their sources:

| figure | vLLM (`vllm/v1/metrics/loggers.py`) | SGLang (`srt/metrics/collector.py`) | TGI (`router/src/server.rs`) |
|---|---|---|---|
| running | `vllm:num_requests_running` | `sglang:num_running_reqs` | `tgi_batch_current_size` |
| waiting | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` | `tgi_queue_size` |
| limit | — (policy `max_concurrency`) | `sglang:max_running_requests` | — (policy `max_concurrency`) |
| KV usage 0..1 | `vllm:kv_cache_usage_perc`, older `vllm:gpu_cache_usage_perc` | `sglang:token_usage` | — |
| completed | `vllm:request_success_total` | `sglang:num_requests_total` | `tgi_request_success` |

`generic` reads only the names the policy gives (`capacity.metrics`); for the others a name given there replaces
the known one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from trafficd.policy.capacity import Capacity

FIGURES = ("running", "waiting", "limit", "kv_usage", "completed")

# figure → sample names, first present wins (vLLM renamed its KV gauge in v1: both are accepted)
SERVER_METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "running": ("vllm:num_requests_running",),
        "waiting": ("vllm:num_requests_waiting",),
        "limit": (),
        "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "completed": ("vllm:request_success_total",),
    },
    "sglang": {
        "running": ("sglang:num_running_reqs",),
        "waiting": ("sglang:num_queue_reqs",),
        "limit": ("sglang:max_running_requests",),
        "kv_usage": ("sglang:token_usage",),
        "completed": ("sglang:num_requests_total",),
    },
    "tgi": {
        "running": ("tgi_batch_current_size",),
        "waiting": ("tgi_queue_size",),
        "limit": (),
        "kv_usage": (),
        "completed": ("tgi_request_success", "tgi_request_success_total"),
    },
    "generic": {f: () for f in FIGURES},
}


class MetricsError(ValueError):
    """The text is not Prometheus exposition format, or lacks the running gauge."""


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One scrape of one worker. None: the server does not publish that figure."""

    running: float
    waiting: float | None = None
    limit: float | None = None  # from the server, else the policy's max_concurrency
    kv_usage: float | None = None  # 0..1
    completed_total: float | None = None  # counter of completed requests


def names_for(cfg: Capacity) -> dict[str, tuple[str, ...]]:
    """The sample names read for each figure: the policy's name, else the server kind's."""
    known = SERVER_METRICS[cfg.server]
    given = cfg.metrics.model_dump(exclude_none=True)
    return {f: ((str(given[f]),) if f in given else known[f]) for f in FIGURES}


def _samples(text: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if isinstance(s.value, int | float) and math.isfinite(s.value):
                    out.setdefault(s.name, []).append(float(s.value))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise MetricsError(f"not Prometheus text format: {exc}") from None
    return out


def _pick(samples: dict[str, list[float]], names: tuple[str, ...], combine: str = "sum") -> float | None:
    for name in names:
        values = samples.get(name)
        if values:
            return max(values) if combine == "max" else sum(values)
    return None


def parse(text: str, cfg: Capacity) -> WorkerLoad:
    """The worker's load from its metrics text; MetricsError when it is unreadable or lacks the running gauge."""
    samples = _samples(text)
    names = names_for(cfg)
    running = _pick(samples, names["running"])
    if running is None:
        wanted = " or ".join(names["running"]) or "metrics.running"
        raise MetricsError(f"no {wanted} in the metrics (server kind {cfg.server!r}: set capacity.server)")
    limit = _pick(samples, names["limit"], "max")
    kv = _pick(samples, names["kv_usage"], "max")
    return WorkerLoad(
        running=max(0.0, running),
        waiting=_nonneg(_pick(samples, names["waiting"])),
        limit=limit if limit is not None and limit > 0 else _float(cfg.max_concurrency),
        kv_usage=None if kv is None else min(1.0, max(0.0, kv)),
        completed_total=_nonneg(_pick(samples, names["completed"])),
    )


def _nonneg(x: float | None) -> float | None:
    return None if x is None else max(0.0, x)


def _float(x: int | None) -> float | None:
    return None if x is None else float(x)
