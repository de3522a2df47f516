"""Live capacity figures in Redis: the agents' writer and the controller's reader (layout in keys.py).

Each agent writes its workers' figures into the region's hash of the current time bucket (`capacity.max_age` long)
with HSET + EXPIRE only — what a region's agent ACL user may send — so a worker that disappears (discovery, a
policy edit) is gone after at most three buckets and memory stays bounded by the number of live workers. Replicas
of a region's agent write the same fields: the newest scrape wins. The reader takes, per worker, the newest figures
of the two previous, the current and the next bucket (the next covers an agent clock a little ahead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trafficd import keys
from trafficd.policy.schema import Policy
from trafficd.stats.capacity import RegionCapacity, WorkerFigures, region_capacity

BUCKETS_KEPT = 3
QUERY_FIELD = "*load_query"  # the region's load from capacity.load_query (worker names never start with '*')


def read_buckets(b: int) -> tuple[int, ...]:
    """The buckets read at bucket b: two back (figures up to 2 × max_age old still show as stale, not missing)
    and one ahead (an agent clock a little ahead)."""
    return (b - 2, b - 1, b, b + 1)


def bucket_of(at: float, max_age_s: float) -> int:
    return math.floor(at / max_age_s)


async def write(client: Any, policy: Policy, region: str, figures: Mapping[str, WorkerFigures], now: float) -> None:
    """Store `figures` (worker → figures) of `region` in the bucket of `now`. Redis errors reach the caller."""
    cfg = policy.capacity_for(region)
    if cfg is None or not figures:
        return
    key = keys.capacity_key(policy.redis.key_prefix, policy.service, region, bucket_of(now, cfg.max_age))
    pipe = client.pipeline(transaction=False)  # no MULTI: redis-py's cluster client fails one sent before any other
    pipe.hset(key, mapping={w: f.to_json() for w, f in figures.items()})
    pipe.expire(key, math.ceil(cfg.max_age * BUCKETS_KEPT))
    await pipe.execute()


async def read(client: Any, policy: Policy, now: float) -> dict[str, RegionCapacity]:
    """Per region with live capacity configured, its figures at `now`. Redis errors reach the caller."""
    regions = [r for r in policy.region_names if policy.capacity_for(r) is not None]
    if not regions:
        return {}
    pipe = client.pipeline(transaction=False)
    for r in regions:
        max_age = _max_age(policy, r)
        b = bucket_of(now, max_age)
        for bucket in read_buckets(b):
            pipe.hgetall(keys.capacity_key(policy.redis.key_prefix, policy.service, r, bucket))
    raw = await pipe.execute()
    out: dict[str, RegionCapacity] = {}
    for i, r in enumerate(regions):
        newest: dict[str, WorkerFigures] = {}
        for fields in raw[i * len(read_buckets(0)) : (i + 1) * len(read_buckets(0))]:
            for k, v in (fields or {}).items():
                fig = WorkerFigures.from_json(v)
                name = k.decode() if isinstance(k, bytes) else str(k)
                if fig is not None and (name not in newest or fig.at > newest[name].at):
                    newest[name] = fig
        queried = newest.pop(QUERY_FIELD, None)
        out[r] = region_capacity(newest, now, _max_age(policy, r), queried)
    return out


def _max_age(policy: Policy, region: str) -> float:
    cfg = policy.capacity_for(region)
    return cfg.max_age if cfg is not None else 30.0
