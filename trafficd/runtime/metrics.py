"""Prometheus metrics and `/healthz` for each daemon (aiohttp server on a loopback-or-given address).

Metric names carry units; labels are bounded (regions, workers and models come from the policy).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from trafficd.model import RegionStateName

REGISTRY = CollectorRegistry(auto_describe=True)

REGION_P99_MS = Gauge(
    "trafficd_region_p99_ms", "Rolling p99 total latency (trip window)", ["region"], registry=REGISTRY
)
REGION_SAMPLES = Gauge("trafficd_region_samples", "Samples in the trip window", ["region"], registry=REGISTRY)
REGION_ERROR_RATE = Gauge("trafficd_region_error_rate", "Error rate in the trip window", ["region"], registry=REGISTRY)
REGION_OVER_SLO = Gauge(
    "trafficd_region_over_slo_ratio", "Share of samples over the SLO threshold (exact)", ["region"], registry=REGISTRY
)
REGION_STATE = Gauge(
    "trafficd_region_state", "1 for the region's current state", ["region", "state"], registry=REGISTRY
)
REGION_SERVING = Gauge(
    "trafficd_region_serving_fraction", "Share of its own users a region serves", ["region"], registry=REGISTRY
)
DNS_CHANGES = Counter("trafficd_dns_changes_total", "Route 53 change batches sent", ["outcome"], registry=REGISTRY)
EVALUATIONS = Counter("trafficd_evaluations_total", "Controller evaluations", ["role"], registry=REGISTRY)
LEADER = Gauge("trafficd_leader", "1 while this controller holds the lease", registry=REGISTRY)
PROBES = Counter(
    "trafficd_probes_total", "Probes by outcome", ["region", "worker", "model", "outcome"], registry=REGISTRY
)
LAST_LOOP = Gauge("trafficd_last_loop_timestamp_seconds", "When the main loop last completed", registry=REGISTRY)


def record_region(region: str, fields: dict[str, Any]) -> None:
    """Update the per-region gauges from one decision's log fields."""
    if fields.get("p99_ms") is not None:
        REGION_P99_MS.labels(region).set(float(fields["p99_ms"]))
    REGION_SAMPLES.labels(region).set(float(fields.get("n") or 0))
    REGION_ERROR_RATE.labels(region).set(float(fields.get("error_rate") or 0.0))
    if fields.get("over_slo_fraction") is not None:
        REGION_OVER_SLO.labels(region).set(float(fields["over_slo_fraction"]))
    state = fields.get("state_after")
    for name in RegionStateName:
        REGION_STATE.labels(region, name.value).set(1.0 if name.value == state else 0.0)
    if fields.get("serving_fraction_after") is not None:
        REGION_SERVING.labels(region).set(float(fields["serving_fraction_after"]))


def loop_completed() -> None:
    LAST_LOOP.set(time.time())


async def start_server(host: str, port: int) -> web.AppRunner:
    """Serve /metrics and /healthz; returns the runner (call `.cleanup()` to stop)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "last_loop_s_ago": round(time.time() - LAST_LOOP._value.get(), 3)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
