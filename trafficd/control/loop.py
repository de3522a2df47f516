"""The controller's loop: an evaluation every `windows.evaluate_every`, scheduled by apscheduler 3 on the
monotonic clock (runtime/schedule.py).

A wall-clock step (NTP, a VM resumed, an operator's `date`) neither delays nor repeats an evaluation: the
scheduler's guard re-anchors the next run when the wall clock steps, so it stays due `evaluate_every` after the
previous one on the monotonic clock; at most one runs at a time and a missed run is not caught up (coalesced).
systemd's watchdog is pinged only after an evaluation has completed, so a stuck evaluation stops the pings and
systemd restarts the process within `WatchdogSec`. READY=1 follows the first evaluation. On stop (SIGTERM) a
running evaluation gets `STOP_GRACE_S` to finish — a Route 53 backoff sleep is cut short at once — then it is
abandoned (its batch, if any, is resolved by re-reading at the next start) and the lease is released: the
process exits within 5 s in any state.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from trafficd.control.controller import Controller
from trafficd.policy.schema import LoadedPolicy
from trafficd.runtime import notify
from trafficd.runtime.reload import PolicyHolder
from trafficd.runtime.schedule import MonotonicScheduler

STOP_GRACE_S = 1.0  # a running evaluation's time to finish after SIGTERM (a backoff sleep ends at once)
RELEASE_TIMEOUT_S = 1.0  # releasing the lease (Redis may be slow or gone)
EVALUATE_JOB = "evaluate"


async def _tick(controller: Controller) -> None:
    try:
        await controller.evaluate_once()
    except Exception:  # a bug in one evaluation must not stop the next ones: log it with its traceback
        controller.log.exception("controller.evaluation_failed")


async def run_controller(
    holder: PolicyHolder, *, stop: asyncio.Event, dry_run: bool = False, controller: Controller | None = None
) -> None:
    """Evaluate every `windows.evaluate_every` until `stop` is set; release the lease on the way out."""
    controller = controller or Controller(holder, dry_run=dry_run)
    policy = holder.current.policy
    controller.log.info(
        "controller.started",
        policy_hash=holder.current.hash,
        policy_file=holder.current.path,
        regions=policy.region_names,
        dry_run=controller.dry_run or policy.controller.dry_run,
        evaluate_every_s=policy.windows.evaluate_every,
    )
    controller._build(holder.current)  # outside _tick's try: a configuration error ends the start (exit 78, no READY)
    schedule = MonotonicScheduler(controller.log)
    running = _Running()

    async def evaluate() -> None:
        """One scheduled run: the evaluation as a task of its own (so SIGTERM can give it a grace), then the
        watchdog ping and, the first time, READY."""
        running.evaluation = asyncio.ensure_future(_tick(controller))
        try:
            await asyncio.shield(running.evaluation)
        except asyncio.CancelledError:  # the scheduler shut down mid-evaluation: `_stop` decides its fate
            return
        notify.notify("WATCHDOG=1")
        if not running.ready:
            notify.notify("READY=1", "STATUS=started")
            running.ready = True

    def follow(old: LoadedPolicy, new: LoadedPolicy) -> None:
        """A reload that changes `windows.evaluate_every` takes effect now, not after the old interval."""
        every = new.policy.windows.evaluate_every
        if every != old.policy.windows.evaluate_every:
            controller.log.info("controller.interval_changed", evaluate_every_s=every, policy_hash=new.hash)
            schedule.reschedule(EVALUATE_JOB, every)

    holder.on_change(follow)
    schedule.every(EVALUATE_JOB, evaluate, policy.windows.evaluate_every)
    schedule.start()
    try:
        await stop.wait()
    finally:
        schedule.shutdown()
        await _stop(controller, running.evaluation)


@dataclass
class _Running:
    evaluation: asyncio.Future[None] | None = None
    ready: bool = False


async def _stop(controller: Controller, evaluation: asyncio.Future[None] | None) -> None:
    controller.stopping.set()  # cuts a Route 53 backoff sleep short
    if evaluation is not None and not evaluation.done():
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(evaluation), STOP_GRACE_S)
        if not evaluation.done():
            evaluation.cancel()
            controller.log.warning("controller.evaluation_abandoned", grace_s=STOP_GRACE_S)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await evaluation
    try:
        await asyncio.wait_for(controller.shutdown(), RELEASE_TIMEOUT_S)
    except (TimeoutError, Exception) as exc:
        controller.log.warning("controller.lease_release_failed", error=type(exc).__name__)
    controller.log.info("controller.stopped", evaluations=controller.evaluations)
