"""Policies for the Route 53 tests: three regions, a zone of the test's own, either topology."""

from __future__ import annotations

import math
from typing import Any

import kit

from trafficd.dns.provider import ReconcileContext
from trafficd.policy.schema import Policy

REGIONS = {
    "us-east": ("us-east.lb.example.net", "us-east-1"),
    "eu-west": ("eu-west.lb.example.net", "eu-west-1"),
    "ap-southeast": ("ap-southeast.lb.example.net", "ap-southeast-1"),
}


def make_policy(
    zone_id: str = "ZTEST",
    zone_name: str = "example.com.",
    *,
    endpoint_url: str | None = None,
    regions: dict[str, tuple[str, str]] | None = None,
    neighbours: dict[str, list[str]] | None = None,
    **dns: Any,
) -> Policy:
    """A valid policy whose record is `api.<zone>`; `dns` overrides fields of the `dns` section."""
    regions = regions or REGIONS
    doc = kit.policy_doc(
        {
            name: kit.region_doc(
                name,
                worker_url=f"http://127.0.0.1:1/{name}",
                endpoint=endpoint,
                aws_region=aws,
                neighbours=(neighbours or {}).get(name),
            )
            for name, (endpoint, aws) in regions.items()
        },
        guards={"min_serving_regions": 1},
    )
    doc["dns"] = {"zone_id": zone_id, "record_name": f"api.{zone_name}", "endpoint_url": endpoint_url, **dns}
    return kit.as_policy(doc)


def ctx(deadline_s: float = math.inf, **kw: Any) -> ReconcileContext:
    """A reconcile context for tests: evaluation id `test`, no deadline unless given (providers use fake clocks)."""
    return ReconcileContext("test", "test-hash", deadline_s, **kw)
