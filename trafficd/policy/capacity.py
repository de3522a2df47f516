"""The `capacity` section: how agents read each worker's live load and headroom from its Prometheus metrics (pure).

A top-level `capacity:` switches live capacity on for every region; `regions.R.capacity` and
`regions.R.workers[i].capacity` override single fields (worker over region over top level). A region with none of
them keeps the declared `capacity_headroom` only. docs/capacity.md says how the figures are used.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from trafficd.policy.values import Duration, Percent, Strict, check_url, format_duration

ServerKind = Literal["vllm", "sglang", "tgi", "generic"]
_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$")
_PATH_RE = re.compile(r"^/[^\s?#]{0,199}$")


def _metric_name(value: str) -> str:
    if not _METRIC_RE.match(value):
        raise ValueError(
            f"not a Prometheus metric name: {value!r}; use letters, digits, '_' and ':' and start with a letter "
            "(e.g. vllm:num_requests_running)"
        )
    return value


def _metrics_path(value: str) -> str:
    if not _PATH_RE.match(value):
        raise ValueError(f"write the path of the metrics endpoint, starting with '/' (e.g. /metrics), not {value!r}")
    return value


MetricName = Annotated[str, AfterValidator(_metric_name)]
MetricsPath = Annotated[str, AfterValidator(_metrics_path)]
Concurrency = Annotated[int, Field(ge=1, le=1_000_000)]


class MetricNames(Strict):
    """Which metric (sample name, every label set summed) gives each figure; `generic` servers must name `running`.

    For vllm / sglang / tgi the names are known (`SERVER_METRICS` in probe/capacity_metrics.py); a name given here
    replaces the known one."""

    running: MetricName | None = None  # gauge: requests being served now
    waiting: MetricName | None = None  # gauge: requests queued
    limit: MetricName | None = None  # gauge: concurrent requests the server admits (max_num_seqs and the like)
    kv_usage: MetricName | None = None  # gauge 0..1: KV cache in use
    completed: MetricName | None = None  # counter: requests completed (its rate is the load in requests/s)


class LoadQuery(Strict):
    """A region's load (requests/s) from Prometheus instead of its workers' counters; `{region}` in the query is
    replaced by the region's name (probe/load_query.py)."""

    url: Annotated[str, AfterValidator(check_url)]  # Prometheus' base URL, e.g. http://prometheus:9090
    query: str = Field(min_length=1, max_length=2000)  # PromQL giving a scalar or an instant vector (summed)


class CapacityFields(Strict):
    """Every capacity setting, optional: a region or worker override, or the top level before defaults."""

    server: ServerKind | None = None
    metrics_path: MetricsPath | None = None
    metrics: MetricNames | None = None
    max_concurrency: Concurrency | None = None  # per worker, when the server does not publish its limit
    target: Percent | None = None  # utilisation the headroom is counted against (slots in use / limit)
    kv_target: Percent | None = None  # KV cache usage not to be exceeded
    request_time: Duration | None = None  # mean request duration assumed while a worker carries no request
    scrape_every: Duration | None = None
    timeout: Duration | None = None
    max_age: Duration | None = None  # worker figures older than this are stale: the declared headroom is used
    load_query: LoadQuery | None = None  # the region's load from Prometheus (top level or region; not per worker)


class Capacity(Strict):
    """Resolved settings for one worker (defaults filled in)."""

    server: ServerKind = "vllm"
    metrics_path: MetricsPath = "/metrics"
    metrics: MetricNames = MetricNames.model_construct()
    max_concurrency: Concurrency | None = None
    target: Percent = 0.8
    kv_target: Percent = 0.9
    request_time: Duration = 2.0
    scrape_every: Duration = 5.0
    timeout: Duration = 2.0
    max_age: Duration = 30.0
    load_query: LoadQuery | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Capacity:
        if self.server == "generic" and self.metrics.running is None:
            raise ValueError(
                "server 'generic' needs metrics.running (the gauge of requests being served); name it, or pick "
                "vllm, sglang or tgi"
            )
        if not 0.0 < self.target <= 1.0 or not 0.0 < self.kv_target <= 1.0:
            raise ValueError("target and kv_target must be above 0% and at most 100%")
        if self.max_age <= self.scrape_every:
            raise ValueError(
                f"max_age ({format_duration(self.max_age)}) must be longer than scrape_every "
                f"({format_duration(self.scrape_every)}), or every "
                "figure would be stale before the next scrape"
            )
        return self


def resolve(*layers: CapacityFields | None) -> Capacity | None:
    """Merge the layers (top level, region, worker: later wins field by field); None when no layer is given."""
    given = [layer for layer in layers if layer is not None]
    if not given:
        return None
    merged: dict[str, object] = {}
    for layer in given:
        merged.update({k: v for k, v in layer.model_dump(exclude_none=True).items()})
    names: dict[str, object] = {}
    for layer in given:
        if layer.metrics is not None:
            names.update(layer.metrics.model_dump(exclude_none=True))
    merged["metrics"] = MetricNames(**names)  # type: ignore[arg-type]
    return Capacity.model_validate(merged, strict=False)
