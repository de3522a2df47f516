"""What the controller would decide now, from the live inputs, writing nothing (`dns plan`, `status`)."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from trafficd.control import overrides
from trafficd.control import state_store as controller_state
from trafficd.decide.state import ControllerState
from trafficd.model import Overrides, RegionEvidence, TrafficMatrix
from trafficd.policy.schema import Policy
from trafficd.stats.client import client_for  # not stats.store: on-call commands need no sink (aiohttp)
from trafficd.stats.reader import with_capacity
from trafficd.stats.view import StatsView

if TYPE_CHECKING:
    from trafficd.decide import judge


async def preview(
    policy: Policy, now: float | None = None, current: TrafficMatrix | None = None
) -> tuple[judge.Evaluation, ControllerState]:
    """What the controller would decide now, from the same Redis inputs, writing nothing (for `dns plan`/status).

    Starts from the stored state, or (none stored) from the state `current` (what Route 53 holds) implies.
    """
    from trafficd.control import start  # here: `status` reads the inputs only and need not import the judge
    from trafficd.decide import judge

    now = time.time() if now is None else now
    stored, evidence, active = await read_inputs(policy, now)
    state = stored or start.state_from_dns(policy, current or {}, now)
    return judge.evaluate(policy, state, evidence, active, now), state


async def read_inputs(
    policy: Policy, now: float
) -> tuple[ControllerState | None, dict[str, RegionEvidence], Overrides]:
    """The judge's inputs as stored in Redis now: controller state (None if none yet), evidence, overrides."""
    client = client_for(policy, "oncall")
    try:
        state = await controller_state.load(client, policy)
        evidence = await with_capacity(client, policy, await StatsView(client, policy).evidence(now), now)
        active = await overrides.load(client, policy, now)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return state, evidence, active
