"""The controller's loop: an evaluation every `windows.evaluate_every`, timed on the monotonic clock.

A wall-clock step (NTP, a VM resumed, an operator's `date`) neither delays nor repeats an evaluation: the next
one is due `evaluate_every` after the previous one started, on `loop.time()` (monotonic); a late one is not
caught up (at most one runs at a time). systemd's watchdog is pinged only after an evaluation has completed,
so a stuck evaluation stops the pings and systemd restarts the process within `WatchdogSec`. READY=1 follows the
first evaluation. On stop (SIGTERM) a running evaluation gets `STOP_GRACE_S` to finish — a Route 53 backoff
sleep is cut short at once — then it is abandoned (its batch, if any, is resolved by re-reading at the next
start) and the lease is released: the process exits within 5 s in any state.
"""

from __future__ import annotations

import asyncio
import contextlib

from trafficd.control.controller import Controller
from trafficd.policy.schema import LoadedPolicy
from trafficd.runtime import notify
from trafficd.runtime.reload import PolicyHolder

STOP_GRACE_S = 1.0  # a running evaluation's time to finish after SIGTERM (a backoff sleep ends at once)
RELEASE_TIMEOUT_S = 1.0  # releasing the lease (Redis may be slow or gone)


async def _tick(controller: Controller) -> None:
    try:
        await controller.evaluate_once()
    except Exception:  # a bug in one evaluation must not stop the next ones: log it with its traceback
        controller.log.exception("controller.evaluation_failed")


async def _wait_any(events: list[asyncio.Event], timeout_s: float) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


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
    changed = asyncio.Event()

    def follow(old: LoadedPolicy, new: LoadedPolicy) -> None:
        """A reload that changes `windows.evaluate_every` takes effect now, not after the old interval."""
        every = new.policy.windows.evaluate_every
        if every != old.policy.windows.evaluate_every:
            controller.log.info("controller.interval_changed", evaluate_every_s=every, policy_hash=new.hash)
            changed.set()

    holder.on_change(follow)
    controller._build(holder.current)  # outside _tick's try: a configuration error ends the start (exit 78, no READY)
    loop = asyncio.get_running_loop()
    ready = False
    evaluation: asyncio.Future[None] | None = None
    try:
        while not stop.is_set():
            began = loop.time()
            evaluation = asyncio.ensure_future(_tick(controller))
            await _wait_any([stop, _done_event(evaluation)], float("inf"))
            if not evaluation.done():  # stopping mid-evaluation
                break
            notify.notify("WATCHDOG=1")
            if not ready:
                notify.notify("READY=1", "STATUS=started")
                ready = True
            changed.clear()
            while not stop.is_set():
                due = began + holder.current.policy.windows.evaluate_every
                if loop.time() >= due:
                    break
                await _wait_any([stop, changed], due - loop.time())
                changed.clear()
    finally:
        await _stop(controller, evaluation)


def _done_event(task: asyncio.Future[None]) -> asyncio.Event:
    done = asyncio.Event()
    task.add_done_callback(lambda _: done.set())
    return done


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
