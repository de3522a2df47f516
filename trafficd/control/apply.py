"""The controller's apply step: the one write to DNS of an evaluation, fenced by the writer epoch, within the lease.

- `apply_plan`: renew the lease right before the send, then reconcile DNS with the plan carrying the epoch, the
  freeze flag and a deadline `DEADLINE_MARGIN_S` inside the lease; no epoch yet → take one instead (no weight
  is sent); a fenced batch is never resent (`fenced`).
- `hold_at_start`: a new leader's first evaluation judges nothing and only takes the writer epoch (`take_over`),
  so a deposed writer's batches fail from then on.
- `fenced`: Route 53 refused a batch built on a stale read: re-read the epoch; the next evaluation re-aligns with
  what DNS holds and sends nothing, and takes a new epoch if another writer took this one.

Each step reads and updates the controller it is given (`Controller.epoch`, `Controller.realign`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trafficd.control.threads import Interrupted, in_thread
from trafficd.decide import judge
from trafficd.dns.provider import ReconcileContext, ReconcileResult, Status
from trafficd.policy.schema import LoadedPolicy
from trafficd.runtime import metrics

if TYPE_CHECKING:
    from trafficd.control.controller import Controller, Inputs

DEADLINE_MARGIN_S = 0.5  # a reconcile returns this long before the lease's local expiry
TAKING_OVER = "taking_over"  # a reconcile replaced by taking the writer epoch: no weight is sent


async def apply_plan(
    ctl: Controller, loaded: LoadedPolicy, evaluation: judge.Evaluation, inputs: Inputs, evaluation_id: str
) -> ReconcileResult | None:
    """Reconcile DNS with the plan, fenced by our writer epoch and within the lease (module docstring)."""
    frozen = inputs.overrides.freeze is not None
    try:  # renew right before sending: the send must end before what is left of the lease
        held = await ctl.lease.ensure()
    except Exception:
        held = False
    if not held:
        ctl.log.warning("controller.lease_lapsed_before_write", evaluation_id=evaluation_id, token=ctl.lease.token)
        ctl.realign(deposed=True)
        return None
    context = ReconcileContext(
        evaluation_id=evaluation_id,
        policy_hash=loaded.hash,
        deadline_s=ctl.lease.expires_at - DEADLINE_MARGIN_S,
        epoch=ctl.epoch,
        frozen=frozen,
        writer=ctl.controller_id,
    )
    try:
        if ctl.epoch is None and not frozen:
            return await take_over(ctl, context)
        result: ReconcileResult = await in_thread(lambda: ctl.dns.reconcile(evaluation.matrix, context=context))
    except Interrupted:
        ctl.log.warning("controller.reconcile_interrupted", evaluation_id=evaluation_id, token=ctl.lease.token)
        return None
    except Exception as exc:  # the provider translates API errors; anything else is a bug: log, go on
        ctl.log.error(
            "controller.reconcile_failed",
            evaluation_id=evaluation_id,
            error=type(exc).__name__,
            detail=str(exc)[:300],
        )
        return None
    if result.status == Status.FENCED and not frozen:
        await fenced(ctl, result, evaluation_id)
    return result


async def hold_at_start(ctl: Controller, loaded: LoadedPolicy, inputs: Inputs) -> None:
    """The first evaluation as leader judges nothing and sends no weight: it takes the writer epoch in DNS."""
    context = ReconcileContext(
        evaluation_id=f"{ctl.lease.token}-start",
        policy_hash=loaded.hash,
        deadline_s=ctl.lease.expires_at - DEADLINE_MARGIN_S,
        cause="takeover",
        frozen=inputs.overrides.freeze is not None,
        writer=ctl.controller_id,
    )
    if not context.frozen:  # frozen: no write of any kind, the epoch is taken after the freeze
        try:
            await take_over(ctl, context)
        except Exception as exc:
            ctl.log.error("controller.takeover_failed", error=type(exc).__name__, detail=str(exc)[:300])
    ctl.log.info("controller.held_at_start", policy_hash=loaded.hash, epoch=ctl.epoch, serving=inputs.state.fractions())
    metrics.loop_completed()


async def take_over(ctl: Controller, context: ReconcileContext) -> ReconcileResult:
    """Bump the writer epoch in DNS before writing anything else: a deposed writer's batches now fail."""
    result: ReconcileResult = await in_thread(lambda: ctl.dns.take_over(context=context))
    if result.status == Status.APPLIED:
        ctl.epoch = result.epoch
        ctl.log.info(
            "controller.epoch_taken",
            evaluation_id=context.evaluation_id,
            epoch=result.epoch,
            lease_token=ctl.lease.token,
        )
    else:
        ctl.log.warning(
            "controller.takeover_failed",
            evaluation_id=context.evaluation_id,
            dns=str(result.status),
            error=result.error,
        )
    return ReconcileResult(Status.PENDING, error=TAKING_OVER)


async def fenced(ctl: Controller, result: ReconcileResult, evaluation_id: str) -> None:
    """Route 53 refused a batch built on a stale read: never resend it; re-read and re-judge next time.

    If the writer epoch moved (another writer took over), this controller no longer holds it: it takes a new
    one only while it still holds the lease, at its next evaluation, and sends nothing in that evaluation.
    """
    try:
        seen: int | None = await in_thread(ctl.dns.read_epoch)
    except Exception:
        seen = None
    deposed = seen != ctl.epoch
    ctl.log.warning(
        "controller.fenced",
        evaluation_id=evaluation_id,
        epoch=ctl.epoch,
        epoch_seen=seen,
        deposed=deposed,
        error=result.error,
    )
    ctl.realign(deposed=deposed)  # the next evaluation re-aligns with what DNS holds, and sends nothing
