"""Leader lease in Redis so that exactly one controller writes DNS (DESIGN §7).

A Lua script (EXISTS, INCR, SET PX) acquires; a Lua compare-and-extend renews only while the value is still ours; a
compare-and-delete releases on shutdown. Every acquisition takes a fresh, increasing fencing token (INCR),
logged with every change so that a paused ex-leader's late write can be recognised in the audit trail. A
lease is advisory: the leader checks it still holds it right before every write and steps down when a
renewal fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from trafficd.keys import lease_key
from trafficd.keys import lease_token_key as token_key
from trafficd.runtime.logs import get_logger

__all__ = ["Lease", "lease_key", "token_key"]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Acquire atomically: only a successful acquisition takes a fresh fencing token (standbys do not burn tokens).
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class Lease:
    """One controller's view of the lease. `ensure()` acquires or renews; `held` says if it may write now."""

    client: Any  # redis.asyncio.Redis
    prefix: str
    service: str
    holder_id: str
    ttl_s: float
    token: int | None = None
    expires_at: float = 0.0  # local monotonic deadline; we stop writing before the server-side expiry

    def __post_init__(self) -> None:
        self._log = get_logger("lease", holder=self.holder_id)

    @property
    def _value(self) -> str:
        return f"{self.holder_id}:{self.token}"

    @property
    def held(self) -> bool:
        return self.token is not None and time.monotonic() < self.expires_at

    async def ensure(self) -> bool:
        """Renew the lease if we hold it, else try to take it. Returns whether we are the leader now."""
        key = lease_key(self.prefix, self.service)
        ttl_ms = int(self.ttl_s * 1000)
        started = time.monotonic()
        if self.token is not None:
            renewed = await self.client.eval(_RENEW, 1, key, self._value, ttl_ms)
            if renewed:
                # keep a margin: stop writing a third of the TTL before the server-side expiry
                self.expires_at = started + self.ttl_s * 2 / 3
                return True
            self._log.warning("lease.lost", token=self.token)
            self.token = None
        token = int(
            await self.client.eval(_ACQUIRE, 2, key, token_key(self.prefix, self.service), self.holder_id, ttl_ms)
        )
        if token:
            self.token = token
            self.expires_at = started + self.ttl_s * 2 / 3
            self._log.info("lease.acquired", token=token, ttl_s=self.ttl_s)
            return True
        return False

    async def release(self) -> None:
        if self.token is None:
            return
        try:
            await self.client.eval(_RELEASE, 1, lease_key(self.prefix, self.service), self._value)
            self._log.info("lease.released", token=self.token)
        finally:
            self.token = None

    async def current_holder(self) -> str | None:
        value = await self.client.get(lease_key(self.prefix, self.service))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
