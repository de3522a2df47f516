"""Policies for the Route 53 tests: three regions, a zone of the test's own, either topology."""

from __future__ import annotations

from typing import Any

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
    **dns: Any,
) -> Policy:
    """A valid policy whose record is `api.<zone>`; `dns` overrides fields of the `dns` section."""
    regions = regions or REGIONS
    return Policy.model_validate(
        {
            "version": 1,
            "service": "svc",
            "models": [{"name": "m"}],
            "regions": {
                name: {
                    "workers": [{"name": "w", "url": f"http://127.0.0.1:1/{name}"}],
                    "dns": {"endpoint": endpoint, "aws_region": aws},
                }
                for name, (endpoint, aws) in regions.items()
            },
            "guards": {"min_serving_regions": 1},
            "dns": {"zone_id": zone_id, "record_name": f"api.{zone_name}", "endpoint_url": endpoint_url, **dns},
        }
    )
