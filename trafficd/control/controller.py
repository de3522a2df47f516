"""The controller loop: the only place where Redis, the pure core and Route 53 meet.

One evaluation reads like its docstring:
    lease → read window stats → load overrides → judge + guards + plan (pure) → log one decision per region
    → reconcile DNS through the provider port (`trafficd.dns.provider`; Route 53 by default) within the lease,
    unless dry-run (then only `plan`) → persist state.

Nothing is written until the lease is held and the previous state has been loaded. Redis or Route 53 failures
are logged and the evaluation is retried on the next tick; missing evidence makes regions unknown (hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from trafficd.control import overrides
from trafficd.control import state_store as controller_state
from trafficd.control.lease import Lease
from trafficd.decide import judge
from trafficd.decide.state import ControllerState
from trafficd.dns.provider import DnsProvider, ReconcileContext, ReconcileResult, Status
from trafficd.dns.select import provider_for
from trafficd.model import Overrides, RegionEvidence, TrafficMatrix
from trafficd.policy.schema import LoadedPolicy, Policy
from trafficd.runtime import metrics, notify
from trafficd.runtime.logs import get_logger
from trafficd.runtime.reload import PolicyHolder
from trafficd.runtime.report import ControllerReport
from trafficd.stats import store

DEADLINE_MARGIN_S = 0.5  # a reconcile returns this long before the lease's local expiry


@dataclass
class Controller:
    holder: PolicyHolder
    controller_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    dry_run: bool = False
    # builds the DNS provider for a policy (default: the policy's, `dns.select.provider_for`); tests pass
    # `MemoryProvider`s
    provider_factory: Callable[[Policy, str], DnsProvider] | None = None

    def __post_init__(self) -> None:
        self.log = get_logger("controller", controller=self.controller_id)
        self._built_for: str | None = None  # effective-policy hash the adapters were built for
        self._built_policy: Policy | None = None
        self._retired_clients: list[Any] = []
        self.client: Any = None
        self.lease: Lease  # built by _build() before the first evaluation
        self._state: ControllerState | None = None
        self._lock = asyncio.Lock()
        self.evaluations = 0
        self.report = ControllerReport(self.log)  # log events within the budget, metrics, audit stream

    # ---- adapters, rebuilt when the policy changes

    def _build(self, loaded: LoadedPolicy) -> None:
        """(Re)build the adapters a policy change affects; keep the lease and Redis client when possible.

        A reload that only changes judging (SLO, windows, ramp, guards) keeps the Redis client, the lease and the
        DNS provider (with its pending change); only the statistics view is rebuilt.
        """
        policy = loaded.policy
        old = self._built_policy
        if old is None or (old.redis, old.service, old.controller) != (policy.redis, policy.service, policy.controller):
            if old is not None:
                self._retired_clients.append(self.client)
            self.client = store.client_for(policy, "controller")
            previous: Lease | None = getattr(self, "lease", None)
            self.lease = Lease(
                self.client, policy.redis.key_prefix, policy.service, self.controller_id, policy.controller.lease_ttl
            )
            if previous is not None:  # keep leading without a gap when the same Redis is still behind it
                self.lease.token, self.lease.expires_at = previous.token, previous.expires_at
        if old is None or (old.dns, old.regions) != (policy.dns, policy.regions):
            factory = self.provider_factory or (lambda p, writer: provider_for(p, writer=writer))
            self.dns: DnsProvider = factory(policy, self.controller_id)
        self.stats = store.StatsView(self.client, policy)
        self._built_policy = policy
        self._built_for = loaded.hash

    async def _load_state(self, policy: Policy, now: float) -> ControllerState:
        state = await controller_state.load(self.client, policy)
        if state is not None:
            self.log.info("controller.state_loaded", regions=sorted(state.regions))
            return state
        self.log.info("controller.state_initialised", regions=policy.region_names)
        return ControllerState.initial(policy, now)

    # ---- one evaluation

    async def evaluate_once(self, now: float | None = None) -> None:
        """Judge every region once and apply the resulting plan (the body of the loop)."""
        async with self._lock:
            await self._evaluate(time.time() if now is None else now)

    async def _evaluate(self, now: float) -> None:
        started = time.monotonic()
        loaded = self.holder.current
        if self._built_for != loaded.hash:
            self._build(loaded)
        while self._retired_clients:
            with contextlib.suppress(Exception):
                await self._retired_clients.pop().aclose()
        policy = loaded.policy
        dry_run = self.dry_run or policy.controller.dry_run
        try:
            leader = await self.lease.ensure()
        except Exception as exc:  # Redis down: we cannot know who leads, so nobody writes
            self.log.warning("controller.redis_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            return
        metrics.LEADER.set(1.0 if leader else 0.0)
        if not leader:
            self._state = None  # reload state when we become leader again
            self.log.debug("controller.standby")
            self.report.standby(loaded.hash)
            return
        try:
            if self._state is None:
                self._state = await self._load_state(policy, now)
            state = self._state
            evidence = await self.stats.evidence(now)
            active = await overrides.load(self.client, policy, now)
        except Exception as exc:
            self.log.warning("controller.redis_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            return
        evaluation = judge.evaluate(policy, state, evidence, active, now)
        self.evaluations += 1
        evaluation_id = self.report.next_evaluation_id(self.lease.token)
        self.report.decisions(
            loaded, evaluation, active, dry_run=dry_run, lease_token=self.lease.token, evaluation_id=evaluation_id
        )
        if not self.lease.held:  # the lease may have lapsed while we were reading
            self.log.warning("controller.lease_lapsed_before_write", token=self.lease.token)
            return
        try:
            result = await self._apply(loaded, evaluation, evaluation_id, dry_run)
        except Exception as exc:  # the provider translates API errors; anything else is a bug: log, go on
            self.log.error("controller.reconcile_failed", error=type(exc).__name__, detail=str(exc)[:300])
            result = None
        moved = _matrix_moved(state.matrix, evaluation.matrix)
        held = moved and (result is None or not (dry_run or result.complete))
        if held:
            # Route 53 does not (yet) show this plan: keep the previous state, so that the next evaluation
            # re-decides the same step instead of walking on while DNS stays behind (and then jumps).
            self.log.warning(
                "controller.plan_held",
                evaluation_id=evaluation_id,
                policy_hash=loaded.hash,
                lease_token=self.lease.token,
                dns=None if result is None else result.status,
                fractions_wanted=evaluation.fractions,
            )
        else:
            self._state = evaluation.state
            try:
                await controller_state.save(self.client, policy, evaluation.state)
            except Exception as exc:
                self.log.warning("controller.state_save_failed", error=type(exc).__name__)
        await self.report.evaluated(
            self.client,
            loaded,
            evaluation,
            result,
            dry_run=dry_run,
            lease_token=self.lease.token,
            evaluation_id=evaluation_id,
            duration_s=time.monotonic() - started,
            held=held,
        )
        notify.notify(f"STATUS=leader token={self.lease.token} {_status_line(evaluation)}")

    async def _apply(
        self, loaded: LoadedPolicy, evaluation: judge.Evaluation, evaluation_id: str, dry_run: bool
    ) -> ReconcileResult:
        """Reconcile DNS with the evaluation's matrix within the lease (dry-run: only plan, write nothing)."""
        if dry_run:
            plan = await asyncio.to_thread(self.dns.plan, evaluation.matrix)
            return ReconcileResult(Status.DRY_RUN, plan.changes)
        context = ReconcileContext(
            evaluation_id=evaluation_id,
            policy_hash=loaded.hash,
            deadline_s=self.lease.expires_at - DEADLINE_MARGIN_S,
            cause="plan",
            frozen=evaluation.frozen,
            writer=self.controller_id,
        )
        return await asyncio.to_thread(self.dns.reconcile, evaluation.matrix, context=context)

    async def _close_client(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def shutdown(self) -> None:
        if self._built_for is None:
            return
        try:
            await self.lease.release()
        except Exception as exc:
            self.log.warning("controller.lease_release_failed", error=type(exc).__name__)
        await self._close_client()


async def preview(policy: Policy, now: float | None = None) -> tuple[judge.Evaluation, ControllerState]:
    """What the controller would decide now, from the same Redis inputs, writing nothing (for `dns plan`/status).

    Returns the evaluation and the stored state it started from (initial state when none is stored yet).
    """
    now = time.time() if now is None else now
    stored, evidence, active = await read_inputs(policy, now)
    state = stored or ControllerState.initial(policy, now)
    return judge.evaluate(policy, state, evidence, active, now), state


async def read_inputs(
    policy: Policy, now: float
) -> tuple[ControllerState | None, dict[str, RegionEvidence], Overrides]:
    """The judge's inputs as stored in Redis now: controller state (None if none yet), evidence, overrides."""
    client = store.client_for(policy, "oncall")
    try:
        state = await controller_state.load(client, policy)
        evidence = await store.StatsView(client, policy).evidence(now)
        active = await overrides.load(client, policy, now)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return state, evidence, active


def _matrix_moved(before: TrafficMatrix, after: TrafficMatrix) -> bool:
    """Whether any share of any region's users moved between two plans."""
    sources = set(before) | set(after)
    return any(
        abs(before.get(s, {}).get(d, 0.0) - after.get(s, {}).get(d, 0.0)) > 1e-9
        for s in sources
        for d in set(before.get(s, {})) | set(after.get(s, {}))
    )


def _status_line(evaluation: judge.Evaluation) -> str:
    parts = []
    for d in evaluation.decisions:
        f = d.to_log()
        parts.append(f"{f.get('region')}={f.get('state_after')}:{f.get('serving_fraction_after')}")
    return " ".join(parts)


async def run_controller(holder: PolicyHolder, *, stop: asyncio.Event, dry_run: bool = False) -> None:
    """Evaluate every `windows.evaluate_every` until `stop` is set; release the lease on the way out."""
    controller = Controller(holder, dry_run=dry_run)
    policy = holder.current.policy
    controller.log.info(
        "controller.started",
        policy_hash=holder.current.hash,
        policy_file=holder.current.path,
        regions=policy.region_names,
        dry_run=dry_run or policy.controller.dry_run,
        evaluate_every_s=policy.windows.evaluate_every,
    )

    async def tick() -> None:
        try:
            await controller.evaluate_once()
        except Exception:  # a bug in one evaluation must not stop the next ones: log it with its traceback
            controller.log.exception("controller.evaluation_failed")

    scheduler = AsyncIOScheduler()
    scheduler.add_job(
        tick, "interval", id="evaluate", seconds=policy.windows.evaluate_every, max_instances=1, coalesce=True
    )

    def follow(old: LoadedPolicy, new: LoadedPolicy) -> None:
        """A reload that changes `windows.evaluate_every` reschedules the loop (other fields apply next tick)."""
        every = new.policy.windows.evaluate_every
        if every != old.policy.windows.evaluate_every:
            scheduler.reschedule_job("evaluate", trigger="interval", seconds=every)
            controller.log.info("controller.interval_changed", evaluate_every_s=every, policy_hash=new.hash)

    holder.on_change(follow)
    scheduler.start()
    await tick()  # the first evaluation at once (it loads the state before anything is written)
    notify.notify("READY=1", "STATUS=started")
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        async with controller._lock:
            await controller.shutdown()
        controller.log.info("controller.stopped", evaluations=controller.evaluations)
