"""Shared by the controller and daemon tests: a three-region policy with short windows for real Redis and moto,
that policy loaded with its owned records created (`bootstrapped`), and samples written through the real sink
(`feed`)."""

from __future__ import annotations

import time
from pathlib import Path

from trafficd.dns.route53 import client as r53client
from trafficd.dns.route53 import provider as route53
from trafficd.model import Sample
from trafficd.policy.schema import LoadedPolicy, Policy, load_policy
from trafficd.stats import store

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


def bootstrapped(
    tmp_path: Path, redis_url: str, prefix: str, zone: dict[str, str], moto_url: str
) -> tuple[Path, LoadedPolicy]:
    """`policy_text` written to tmp_path/policy.yaml and loaded, its owned records created in moto."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(redis_url, prefix, zone, moto_url))
    loaded = load_policy(path)
    route53.bootstrap(loaded.policy, r53client.route53_client(loaded.policy))
    return path, loaded


async def feed(policy: Policy, latency_ms: dict[str, float], n: int = 20) -> None:
    """Write `n` samples per region (real SampleSink) with the given total latency, plus heartbeats."""
    client = store.redis_client(policy.redis)
    sink = store.SampleSink(client, policy)
    now = time.time()
    samples = [
        Sample(region=r, worker=f"{r}-w1", model="m", t=now - 0.5 - i * 0.01, ok=True, reason=None, total_ms=ms)
        for r, ms in latency_ms.items()
        for i in range(n)
    ]
    await sink.write(samples)
    for r in latency_ms:
        await sink.heartbeat("test-agent", r)
    await client.aclose()
