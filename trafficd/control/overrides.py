"""On-call overrides in Redis (adapter): read by the controller, `status` and `dns plan`; set by the commands
`drain`, `undrain`, `freeze` and `unfreeze` (trafficd/commands/overrides.py).

Keys (one hash tag per service so a Redis Cluster keeps them in one slot for MGET):
    {prefix}:{service}:override:region:{region}   JSON Override (kind drain|undrain), expires at expires_at
    {prefix}:{service}:override:freeze            JSON Override (kind freeze)
Redis expires each key at `expires_at` (PXAT) and `load` drops anything expired by the caller's clock as well.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from trafficd import keys
from trafficd.model import Override, Overrides

if TYPE_CHECKING:
    from trafficd.policy.schema import Policy


def region_key(policy: Policy, region: str) -> str:
    return keys.override_region_key(policy.redis.key_prefix, policy.service, region)


def freeze_key(policy: Policy) -> str:
    return keys.override_freeze_key(policy.redis.key_prefix, policy.service)


def _parse(raw: Any) -> Override | None:
    if raw is None:
        return None
    try:
        return Override.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        return None  # a corrupt entry is ignored, never fatal


async def load(client: Any, policy: Policy, now: float) -> Overrides:
    """Every override in force at `now` (one MGET)."""
    names = policy.region_names
    raws = await client.mget([freeze_key(policy), *(region_key(policy, r) for r in names)])
    freeze = _parse(raws[0])
    if freeze is not None and (freeze.expires_at <= now or freeze.kind != "freeze"):
        freeze = None
    by_region: dict[str, Override] = {}
    for name, raw in zip(names, raws[1:], strict=True):
        o = _parse(raw)
        if o is not None and o.expires_at > now and o.kind in ("drain", "undrain"):
            by_region[name] = o
    return Overrides(freeze=freeze, by_region=by_region)


async def set_override(client: Any, policy: Policy, override: Override) -> None:
    """Store `override`; Redis drops it at its expiry."""
    key = freeze_key(policy) if override.kind == "freeze" else region_key(policy, str(override.region))
    await client.set(key, json.dumps(override.to_dict()), pxat=int(override.expires_at * 1000))


async def clear(client: Any, policy: Policy, region: str | None) -> Override | None:
    """Remove the region's override (region None: the freeze); returns what was removed."""
    key = freeze_key(policy) if region is None else region_key(policy, region)
    raw = await client.getdel(key)
    return _parse(raw)
