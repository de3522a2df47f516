"""The Route 53 test proxy, importable by any test (and the fault suite's auditor): moto behind a proxy that
enforces what Route 53 enforces and records every accepted batch (`trafficd.dev.route53_proxy`).

    proxy = start(moto.upstream_url)       # a proxy of the test's own (its own faults, ops and history)
    proxy.url                               # endpoint_url for boto3 / the policy's dns.endpoint_url
    proxy.inject("change", "error", code="Throttling", times=2)
    proxy.accepted_batches                  # [AcceptedBatch(at, zone_id, change_id, writer, epoch, …)]
    proxy.stop()

The session's `moto` fixture is already behind one (`moto.url`; `moto.proxy.accepted_batches`).
"""

from __future__ import annotations

from typing import Any

from trafficd.dev.route53_proxy import AcceptedBatch, Fault, Route53Proxy
from trafficd.dev.route53_rules import judge_batch

__all__ = ["AcceptedBatch", "Fault", "Route53Proxy", "judge_batch", "start"]


def start(moto_url: str, **kw: Any) -> Route53Proxy:
    """A new proxy in front of moto at `moto_url` (options: pending_s, rate_limit_per_s, clock)."""
    return Route53Proxy.start(moto_url, **kw)
