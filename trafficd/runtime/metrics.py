"""Prometheus metrics and `/healthz` for each daemon (aiohttp server on a loopback-or-given address).

Names follow Prometheus conventions and pass `promtool check metrics`: base units (`_seconds`, `_ratio`), counters
end in `_total`, `_info` gauges carry their facts as labels. Labels are bounded (regions, workers and models
come from the policy). Three registries: `COMMON` (build, policy, reload, loop), `CONTROLLER` and `AGENT`; a
daemon serves COMMON plus its own, so an agent exports no `trafficd_leader` and a controller no probe histograms.
The README lists every metric; `deploy/prometheus/trafficd-rules.yml` alerts on them.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trafficd.model import RegionStateName, Sample

COMMON = CollectorRegistry(auto_describe=True)
CONTROLLER = CollectorRegistry(auto_describe=True)
AGENT = CollectorRegistry(auto_describe=True)

# ---------------------------------------------------------------- common to both daemons

BUILD_INFO = Gauge("trafficd_build_info", "Always 1; the running build", ["version", "python"], registry=COMMON)
LAST_LOOP = Gauge(
    "trafficd_last_loop_timestamp_seconds",
    "When the main loop (an evaluation, a probe round) last completed",
    registry=COMMON,
)

# ---------------------------------------------------------------- controller

REGION_P99 = Gauge(
    "trafficd_region_p99_seconds", "Rolling p99 total latency over the trip window", ["region"], registry=CONTROLLER
)
REGION_TTFT_P99 = Gauge(
    "trafficd_region_ttft_p99_seconds", "Rolling p99 time to first token over the trip window", ["region"],
    registry=CONTROLLER,
)  # fmt: skip
SLO_P99 = Gauge(
    "trafficd_slo_p99_seconds", "The policy's p99 threshold (total, ttft)", ["latency"], registry=CONTROLLER
)
SLO_ERROR = Gauge("trafficd_slo_error_ratio", "The policy's error-rate threshold", registry=CONTROLLER)
REGION_SAMPLES = Gauge("trafficd_region_samples", "Samples in the trip window", ["region"], registry=CONTROLLER)
REGION_ERROR = Gauge(
    "trafficd_region_error_ratio", "Failed probes / probes in the trip window (0 when none)", ["region"],
    registry=CONTROLLER,
)  # fmt: skip
REGION_OVER_SLO = Gauge(
    "trafficd_region_over_slo_ratio", "Share of samples over the SLO threshold (exact)", ["region"],
    registry=CONTROLLER,
)  # fmt: skip
REGION_STATE = Gauge(
    "trafficd_region_state", "1 for the region's current state", ["region", "state"], registry=CONTROLLER
)
REGION_SERVING = Gauge(
    "trafficd_region_serving_ratio", "Share of its own users a region serves (1 = all)", ["region"],
    registry=CONTROLLER,
)  # fmt: skip
REGION_USERS = Gauge(
    "trafficd_region_users_ratio", "Share of a region's users sent to each region (the planned weights)",
    ["region", "to"], registry=CONTROLLER,
)  # fmt: skip
HEARTBEAT_AGE = Gauge(
    "trafficd_region_heartbeat_age_seconds", "Age of the region's newest agent heartbeat (NaN when none)",
    ["region"], registry=CONTROLLER,
)  # fmt: skip
REGION_OVERRIDE = Gauge(
    "trafficd_region_override", "1 while a manual override (drain, undrain) is in force", ["region", "kind"],
    registry=CONTROLLER,
)  # fmt: skip
REGION_LOAD = Gauge(
    "trafficd_region_load_requests_per_second",
    "Requests/s the region's workers complete (live capacity; NaN unless live)",
    ["region"],
    registry=CONTROLLER,
)
REGION_HEADROOM = Gauge(
    "trafficd_region_headroom_requests_per_second",
    "Requests/s more the region can take within its capacity targets (live capacity; NaN unless live)",
    ["region"],
    registry=CONTROLLER,
)
FROZEN = Gauge("trafficd_frozen", "1 while the global freeze is in force", registry=CONTROLLER)
SHIFTS = Counter(
    "trafficd_weight_shifts_total", "Decisions that moved a region's serving ratio", ["region", "direction"],
    registry=CONTROLLER,
)  # fmt: skip
EVALUATIONS = Counter("trafficd_evaluations_total", "Controller evaluations", ["role"], registry=CONTROLLER)
EVALUATION_SECONDS = Histogram(
    "trafficd_evaluation_duration_seconds", "Time one leader evaluation took, Route 53 included",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=CONTROLLER,
)  # fmt: skip
LEADER = Gauge("trafficd_leader", "1 while this controller holds the lease", registry=CONTROLLER)
DNS_CHANGES = Counter(
    "trafficd_dns_changes_total", "Route 53 change batches sent (or refused before sending), by outcome",
    ["outcome"], registry=CONTROLLER,
)  # fmt: skip
DNS_RECONCILES = Counter(
    "trafficd_dns_reconciles_total", "Reconciles by status (unchanged, applied, pending, stuck, fenced, error, …)",
    ["status"], registry=CONTROLLER,
)  # fmt: skip
DNS_PENDING = Gauge(
    "trafficd_dns_change_pending", "1 while a Route 53 change is propagating (not INSYNC)", registry=CONTROLLER
)
DNS_PENDING_SECONDS = Gauge(
    "trafficd_dns_change_pending_seconds", "How long the current Route 53 change has been pending (0 when none)",
    registry=CONTROLLER,
)  # fmt: skip
DNS_DRIFTED = Gauge(
    "trafficd_dns_drifted_records", "Owned records found changed by hand at the last reconcile", registry=CONTROLLER
)
REGION_BLIND = Gauge(
    "trafficd_region_blind", "1 while a region has no usable evidence (its weights are held)", ["region"],
    registry=CONTROLLER,
)  # fmt: skip
DNS_DRIFT = Counter("trafficd_dns_drift_detected_total", "Owned records found changed by hand", registry=CONTROLLER)

# ---------------------------------------------------------------- agent

PROBES = Counter("trafficd_probes_total", "Probes by outcome", ["region", "worker", "model", "outcome"], registry=AGENT)
AGENT_CLOCK_OFFSET = Gauge(
    "trafficd_agent_clock_offset_seconds",
    "This agent's clock minus Redis's (TIME), as last measured by its sample sink",
    ["agent_id"],
    registry=AGENT,
)
PROBES_SKIPPED = Counter(
    "trafficd_probes_skipped_total",
    "Probes skipped because no concurrency slot freed up within their round's interval (the agent fell behind)",
    ["region"],
    registry=AGENT,
)
SAMPLES_DISCARDED_STALL = Counter(
    "trafficd_samples_discarded_stall_total",
    "Probe samples discarded because their measurement overlapped a stall of the agent itself",
    ["region"],
    registry=AGENT,
)
SAMPLES_RESTAMPED = Counter(
    "trafficd_samples_restamped_total",
    "Samples re-stamped onto Redis's clock because the agent's clock was off",
    ["agent_id"],
    registry=AGENT,
)
# buckets as multiples of the SLO threshold, fine around it (the p99 decision is made there)
SLO_MULTIPLES = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0)
_DEFAULT_TTFT_SLO_S = 0.3
_probe_hist: dict[str, Histogram] = {}


def slo_buckets(slo_s: float) -> tuple[float, ...]:
    """Histogram bucket bounds around an SLO threshold (seconds), rounded to the millisecond."""
    return tuple(sorted({round(slo_s * m, 3) for m in SLO_MULTIPLES}))


def configure_probe_buckets(total_slo_s: float, ttft_slo_s: float | None) -> None:
    """Create the probe latency histograms with buckets around the SLO (once per process: the first policy's)."""
    if _probe_hist:
        return
    _probe_hist["total"] = Histogram(
        "trafficd_probe_duration_seconds", "Probe total latency (request → [DONE], or the deadline hit)",
        ["region", "model"], buckets=slo_buckets(total_slo_s), registry=AGENT,
    )  # fmt: skip
    _probe_hist["ttft"] = Histogram(
        "trafficd_probe_ttft_seconds", "Probe time to first token", ["region", "model"],
        buckets=slo_buckets(ttft_slo_s or _DEFAULT_TTFT_SLO_S), registry=AGENT,
    )  # fmt: skip


def record_probe(sample: Sample) -> None:
    """Count one probe by outcome and observe its latencies (a failed probe counts at the deadline it hit)."""
    outcome = "ok" if sample.ok else str(sample.reason)
    PROBES.labels(sample.region, sample.worker, sample.model, outcome).inc()
    if not _probe_hist:
        configure_probe_buckets(3.0, None)
    _probe_hist["total"].labels(sample.region, sample.model).observe(sample.total_ms / 1000.0)
    if sample.ttft_ms is not None:
        _probe_hist["ttft"].labels(sample.region, sample.model).observe(sample.ttft_ms / 1000.0)


class _AgentCollector(Collector):
    """Samples buffered, dropped and written, read from the running agent and its sink at scrape time."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterable[Metric]:
        sink = getattr(self.agent, "sink", None)
        buffered = len(getattr(sink, "buffer", ())) + len(getattr(self.agent, "pending", ()))
        yield GaugeMetricFamily(
            "trafficd_samples_buffered", "Samples waiting to be written to Redis (agent and sink buffers)", buffered
        )
        yield CounterMetricFamily(
            "trafficd_samples_dropped", "Samples dropped because the buffer was full (oldest first)",
            float(getattr(sink, "dropped_total", 0)),
        )  # fmt: skip
        yield CounterMetricFamily(
            "trafficd_samples_written", "Samples written to Redis", float(getattr(sink, "written_total", 0))
        )
        yield CounterMetricFamily(
            "trafficd_samples_rejected", "Samples in batches Redis refused as commands (not retried)",
            float(getattr(sink, "rejected_total", 0)),
        )  # fmt: skip
        slot = getattr(self.agent, "_slot", None)
        if slot is not None:
            region = [str(self.agent.region)]
            limit = GaugeMetricFamily(
                "trafficd_probe_concurrency",
                "Probes this agent lets run at once now (probe.concurrency, or what `auto` sized)", labels=["region"],
            )  # fmt: skip
            limit.add_metric(region, float(slot.sem.limit))
            yield limit
            ceiling = GaugeMetricFamily(
                "trafficd_probe_concurrency_max",
                "The most probes this agent may run at once (probe.max_concurrency for auto, else the fixed number)",
                labels=["region"],
            )
            ceiling.add_metric(region, float(slot.cfg.max_in_flight))
            yield ceiling
            in_flight = GaugeMetricFamily("trafficd_probes_in_flight", "Probes running now", labels=["region"])
            in_flight.add_metric(region, float(slot.sem.in_use))
            yield in_flight


_watched: dict[str, Collector] = {}


def _watch(name: str, registry: CollectorRegistry, collector: Collector) -> None:
    """Register `collector` as the one watching `name` (a later daemon in the same process replaces it)."""
    old = _watched.pop(name, None)
    if old is not None:
        registry.unregister(old)
    registry.register(collector)
    _watched[name] = collector


def watch_agent(agent: Any, total_slo_s: float, ttft_slo_s: float | None) -> None:
    """Export the agent's buffers and counters, and size the probe histograms from its policy's SLO."""
    configure_probe_buckets(total_slo_s, ttft_slo_s)
    _watch("agent", AGENT, _AgentCollector(agent))


class _PolicyCollector(Collector):
    """The policy in force and whether the last reload worked, read from the daemon's PolicyHolder."""

    def __init__(self, holder: Any) -> None:
        self.holder = holder

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("trafficd_policy_info", "Always 1; the effective policy in force", labels=["hash"])
        info.add_metric([str(self.holder.hash)], 1.0)
        yield info
        yield GaugeMetricFamily(
            "trafficd_config_last_reload_successful",
            "1 when the last policy (re)load was accepted, 0 when it was rejected (the last good one stays)",
            1.0 if getattr(self.holder, "last_reload_ok", True) else 0.0,
        )
        reloads = CounterMetricFamily("trafficd_config_reloads", "Policy reloads by outcome", labels=["outcome"])
        reloads.add_metric(["accepted"], float(getattr(self.holder, "reloads", 0)))
        reloads.add_metric(["rejected"], float(getattr(self.holder, "rejections", 0)))
        yield reloads


def watch_policy(holder: Any) -> None:
    """Export `trafficd_policy_info{hash}` and the reload outcome of `holder` (a PolicyHolder)."""
    _watch("policy", COMMON, _PolicyCollector(holder))


def _build_version() -> str:
    try:
        return metadata.version("trafficd")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_build_version(), platform.python_version()).set(1.0)


# ---------------------------------------------------------------- controller updates


def record_region(region: str, fields: dict[str, Any]) -> None:
    """Update the per-region gauges from one decision's log fields."""
    nan = float("nan")
    p99_ms, ttft_ms = fields.get("p99_ms"), fields.get("ttft_p99_ms")
    REGION_P99.labels(region).set(nan if p99_ms is None else float(p99_ms) / 1000.0)
    REGION_TTFT_P99.labels(region).set(nan if ttft_ms is None else float(ttft_ms) / 1000.0)
    REGION_SAMPLES.labels(region).set(float(fields.get("n") or 0))
    REGION_ERROR.labels(region).set(float(fields.get("error_rate") or 0.0))
    if fields.get("over_slo_fraction") is not None:
        REGION_OVER_SLO.labels(region).set(float(fields["over_slo_fraction"]))
    state = fields.get("state_after")
    for name in RegionStateName:
        REGION_STATE.labels(region, name.value).set(1.0 if name.value == state else 0.0)
    if fields.get("serving_fraction_after") is not None:
        REGION_SERVING.labels(region).set(float(fields["serving_fraction_after"]))
    for to, share in (fields.get("weights_after") or {}).items():
        REGION_USERS.labels(region, to).set(float(share))
    age = fields.get("heartbeat_age_s")
    HEARTBEAT_AGE.labels(region).set(nan if age is None else float(age))
    cap = fields.get("capacity")
    if cap is not None:  # live capacity configured (docs/capacity.md)
        load, room = cap.get("load_rps"), cap.get("headroom_rps")
        REGION_LOAD.labels(region).set(nan if load is None else float(load))
        REGION_HEADROOM.labels(region).set(nan if room is None else float(room))


def record_slo(total_s: float, ttft_s: float | None, error_ratio: float) -> None:
    SLO_P99.labels("total").set(total_s)
    if ttft_s is not None:
        SLO_P99.labels("ttft").set(ttft_s)
    SLO_ERROR.set(error_ratio)


def record_overrides(regions: Iterable[str], by_region: dict[str, str], frozen: bool) -> None:
    """`by_region`: region → override kind in force (drain, undrain)."""
    FROZEN.set(1.0 if frozen else 0.0)
    for region in regions:
        for kind in ("drain", "undrain"):
            REGION_OVERRIDE.labels(region, kind).set(1.0 if by_region.get(region) == kind else 0.0)


# reconcile statuses that mean a change batch was sent, or built and refused before sending
SENT_STATUSES = frozenset({"applied", "refused", "denied", "fenced", "throttled", "error"})
_pending_since: list[float] = []


def record_reconcile(status: str | None, changes: int, drifted: int, now: float | None = None) -> None:
    """Count one reconcile. A batch counts in `dns_changes_total` only when one was built (`changes` > 0): a
    failed zone listing is a reconcile error, not a failed change."""
    now = time.monotonic() if now is None else now
    DNS_RECONCILES.labels(status or "failed").inc()
    if status in SENT_STATUSES and changes > 0:
        DNS_CHANGES.labels(status).inc()
    if status in ("pending", "stuck"):
        if not _pending_since:
            _pending_since.append(now)
        DNS_PENDING.set(1.0)
        DNS_PENDING_SECONDS.set(now - _pending_since[0])
    elif status is not None:
        _pending_since.clear()
        DNS_PENDING.set(0.0)
        DNS_PENDING_SECONDS.set(0.0)
    DNS_DRIFTED.set(float(drifted))
    if drifted:
        DNS_DRIFT.inc(drifted)


def loop_completed() -> None:
    LAST_LOOP.set(time.time())


def exposition(role: str) -> bytes:
    """The text a daemon of `role` ("controller" or "agent") serves on /metrics."""
    own = CONTROLLER if role == "controller" else AGENT
    return generate_latest(COMMON) + generate_latest(own)


async def start_server(host: str, port: int, role: str = "controller") -> web.AppRunner:
    """Serve /metrics and /healthz; returns the runner (call `.cleanup()` to stop)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=exposition(role), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "last_loop_s_ago": round(time.time() - LAST_LOOP._value.get(), 3)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
