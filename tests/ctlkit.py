"""Shared by the controller and daemon tests: a three-region policy with short windows for real Redis and moto."""

from __future__ import annotations

REGIONS = ("us-east", "eu-west", "ap-southeast")


def policy_text(redis_url: str, prefix: str, zone: dict[str, str], moto_url: str, *, slo: str = "3s") -> str:
    regions = "\n".join(
        f"""  {r}:
    workers: [{{name: {r}-w1, url: "http://127.0.0.1:9"}}]
    dns: {{endpoint: {r}.lb.{zone["name"]}, aws_region: us-east-1}}
    neighbours: [{", ".join(x for x in REGIONS if x != r)}]"""
        for r in REGIONS
    )
    return f"""version: 1
service: ctl
redis: {{url: "{redis_url}", key_prefix: {prefix}}}
probe: {{targets: {{allow_loopback: true}}}}
models: [{{name: m}}]
regions:
{regions}
slo: {{total_p99: {slo}, error_rate: 50%}}
windows: {{evaluate_every: 1s, slice: 1s, trip: 10s, long: 20s, min_samples: 10, stale_after: 30s}}
trip: {{healthy_rate: 5%, breach_rate: 50%, false_trips: 24, false_trip_days: 1}}  # coarse: 20 samples decide
recover: {{hold_down: 1s}}
ramp: {{max_step: 50%, cooldown: 100ms}}
guards: {{min_serving_regions: 2, max_drained: 1}}
dns:
  zone_id: {zone["id"]}
  record_name: api.{zone["name"]}
  ttl: 1
  poll_interval: 100ms
  endpoint_url: {moto_url}
controller: {{lease_ttl: 5s}}
"""
