"""Dry-run watchers, for `trafficd status`: each dry-run controller announces itself under a key with a TTL.

A dry-run controller writes its watcher key (id, policy hash, time) every evaluation with a TTL of a few
evaluations and deletes it when it stops; a killed one vanishes with the TTL. No controller reads these keys to
decide anything. (The leader and its policy hash come from the leader's last-evaluation record, runtime/audit.py.)
"""

from __future__ import annotations

import json
from typing import Any

from trafficd import keys
from trafficd.policy.schema import Policy


async def announce_watcher(client: Any, policy: Policy, watcher_id: str, policy_hash: str, now: float) -> None:
    record = {"id": watcher_id, "policy_hash": policy_hash, "at": now}
    ttl_ms = int(max(3 * policy.windows.evaluate_every, 5.0) * 1000)
    await client.set(
        keys.watcher_key(policy.redis.key_prefix, policy.service, watcher_id), json.dumps(record), px=ttl_ms
    )


async def withdraw_watcher(client: Any, policy: Policy, watcher_id: str) -> None:
    await client.delete(keys.watcher_key(policy.redis.key_prefix, policy.service, watcher_id))


async def watchers(client: Any, policy: Policy) -> list[dict[str, Any]]:
    """Every dry-run controller seen within its TTL, by id."""
    found = [k async for k in client.scan_iter(match=keys.watcher_pattern(policy.redis.key_prefix, policy.service))]
    raws = await client.mget(found) if found else []
    out = [r for r in (_json(raw) for raw in raws) if r is not None]
    return sorted(out, key=lambda r: str(r.get("id")))


def _json(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
