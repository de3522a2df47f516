"""The controller's stored state in Redis (JSON of `ControllerState`): the one reader and writer.

The controller saves it after every committed evaluation; a new leader, `trafficd status`, `dns plan` and the
drain pre-check read it. Nothing else knows the key or the encoding.
"""

from __future__ import annotations

import json
from typing import Any

from trafficd import keys
from trafficd.decide.state import ControllerState
from trafficd.policy.schema import Policy


async def load(client: Any, policy: Policy) -> ControllerState | None:
    """The stored state, or None when no controller has stored one yet."""
    raw = await client.get(keys.controller_state_key(policy.redis.key_prefix, policy.service))
    return ControllerState.from_dict(json.loads(raw)) if raw else None


async def save(client: Any, policy: Policy, state: ControllerState) -> None:
    await client.set(keys.controller_state_key(policy.redis.key_prefix, policy.service), json.dumps(state.to_dict()))
