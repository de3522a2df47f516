"""A dry-run controller's evaluation: it judges like the leader and logs what it would change, and writes nothing.

No lease, no saved state, no audit entry, no DNS write (the provider's `plan` only); it announces itself as a
watcher (`presence.py`) so that `trafficd status` lists it. It judges from the leader's stored state, or with none
stored from the state Route 53 implies.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from trafficd.control import overrides, presence
from trafficd.control import state_store as controller_state
from trafficd.control.threads import in_thread
from trafficd.decide import judge
from trafficd.dns.provider import ReconcileResult, Status
from trafficd.policy.schema import LoadedPolicy
from trafficd.runtime import metrics

if TYPE_CHECKING:
    from trafficd.control.controller import Controller


async def watch_once(ctl: Controller, loaded: LoadedPolicy, now: float, started: float) -> None:
    """Judge from the leader's stored state and log what would change; no lease, no saved state, no DNS write."""
    policy = loaded.policy
    try:
        await presence.announce_watcher(ctl.client, policy, ctl.controller_id, loaded.hash, now)
        stored = await controller_state.load(ctl.client, policy)
        evidence = await ctl.stats.evidence(now)
        active = await overrides.load(ctl.client, policy, now)
    except Exception as exc:
        ctl.log.warning("controller.redis_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
        return
    state = stored or await ctl.starting_state(policy, now, stored=None)
    if state is None:
        return
    evaluation = judge.evaluate(policy, state, evidence, active, now)
    ctl.evaluations += 1
    evaluation_id = ctl.report.next_evaluation_id(None)
    ctl.report.decisions(loaded, evaluation, active, dry_run=True, lease_token=None, evaluation_id=evaluation_id)
    ctl.report.pending.clear()  # a dry-run writes nothing to Redis, the audit stream included
    try:
        plan = await in_thread(lambda: ctl.dns.plan(evaluation.matrix))
        result: ReconcileResult | None = ReconcileResult(Status.DRY_RUN, plan.changes)
    except Exception as exc:
        ctl.log.warning(
            "controller.reconcile_failed",
            evaluation_id=evaluation_id,
            error=type(exc).__name__,
            detail=str(exc)[:300],
        )
        result = None
    if result is not None:
        ctl.report.would_change(evaluation_id, [c.to_log() for c in result.changes])
    ctl.log.debug(
        "controller.evaluated",
        evaluation_id=evaluation_id,
        policy_hash=loaded.hash,
        lease_token=None,
        dry_run=True,
        dns=None if result is None else result.status,
        dns_changes=0 if result is None else len(result.changes),
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        **evaluation.to_log(),
    )
    metrics.EVALUATIONS.labels("dry_run").inc()
    metrics.loop_completed()
