"""The controller: the only place where Redis, the pure core and Route 53 meet.

One evaluation (`Controller._evaluate`) reads like its docstring, one named step each:
    adapters for the policy in force → lead (lease) or stand by → inputs (state, evidence, overrides)
    → judge + guards + plan (pure) → log one decision per region → apply (Route 53, unless held: `apply.py`)
    → commit (save the state only when Route 53 shows the plan) → one summary event.

Nothing is written before the lease is held and the state is known: a new leader takes the stored state aligned
with what Route 53 holds now (or, with none stored, the state the records imply: see `start.py`) and sends
nothing in its first evaluation. A dry-run controller takes no lease and saves nothing: it judges from the
leader's stored state and logs what it would change. The stats store and the DNS provider are ports (`Ports`),
so tests about control logic run on in-memory ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trafficd.control import apply, overrides, presence, start
from trafficd.control import state_store as controller_state
from trafficd.control.blind import BlindWatch
from trafficd.control.lease import Lease
from trafficd.control.threads import Interrupted, in_thread
from trafficd.control.watch import watch_once
from trafficd.decide import judge
from trafficd.decide.state import ControllerState
from trafficd.dns.provider import DnsProvider, ReconcileResult
from trafficd.dns.select import provider_for
from trafficd.model import Overrides, RegionEvidence, TrafficMatrix
from trafficd.policy.schema import LoadedPolicy, Policy
from trafficd.runtime import metrics, notify
from trafficd.runtime.logs import get_logger
from trafficd.runtime.reload import PolicyHolder
from trafficd.runtime.report import ControllerReport
from trafficd.stats import store
from trafficd.stats.reader import RedisStatsReader, StatsReader


def _policy_provider(policy: Policy, writer: str) -> DnsProvider:
    return provider_for(policy, writer=writer)


@dataclass(frozen=True)
class Ports:
    """How the controller builds its stats reader and DNS provider for a policy (tests pass in-memory ones)."""

    stats: Callable[[Any, Policy], StatsReader] = RedisStatsReader
    dns: Callable[[Policy, str], DnsProvider] = _policy_provider  # (policy, writer) → provider


@dataclass(frozen=True, slots=True)
class Inputs:
    state: ControllerState
    evidence: dict[str, RegionEvidence]
    overrides: Overrides
    fresh: bool  # the first evaluation since this controller took the lease: no judging, nothing sent


@dataclass
class Controller:
    holder: PolicyHolder
    controller_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    dry_run: bool = False
    ports: Ports = field(default_factory=Ports)

    def __post_init__(self) -> None:
        self.log = get_logger("controller", controller=self.controller_id)
        self._built_for: str | None = None  # effective-policy hash the adapters were built for
        self._built_policy: Policy | None = None
        self._retired_clients: list[Any] = []
        self.client: Any = None
        self.lease: Lease  # built by _build() before the first evaluation
        self.stats: StatsReader
        self.dns: Any
        self._state: ControllerState | None = None
        self._lock = asyncio.Lock()
        self.stopping = threading.Event()
        self.evaluations = 0
        self.blind = BlindWatch(self.log)
        self.report = ControllerReport(self.log)  # log events within the budget, metrics, audit stream
        self.epoch: int | None = None  # the writer epoch this leader took in DNS (the fence)

    # ---- adapters, rebuilt when the policy changes

    def _build(self, loaded: LoadedPolicy) -> None:
        """(Re)build the adapters a policy change affects; keep the lease and Redis client when possible.

        A reload that only changes judging (SLO, windows, ramp, guards) keeps the Redis client, the lease and the
        DNS provider (with its pending change); only the statistics reader is rebuilt.
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
            self.dns = self.ports.dns(policy, self.controller_id)
            if hasattr(self.dns, "sleep"):  # Route 53's backoff sleeps end at once when we stop
                self.dns.sleep = self._sleep
        self.stats = self.ports.stats(self.client, policy)
        self._built_policy = policy
        self._built_for = loaded.hash

    async def _adapters(self) -> LoadedPolicy:
        loaded = self.holder.current
        if self._built_for != loaded.hash:
            self._build(loaded)
        while self._retired_clients:
            with contextlib.suppress(Exception):
                await self._retired_clients.pop().aclose()
        return loaded

    def _sleep(self, seconds: float) -> None:
        """The DNS provider's backoff sleep: cut short (Interrupted) when the controller is stopping."""
        if self.stopping.wait(seconds):
            raise Interrupted

    # ---- one evaluation

    async def evaluate_once(self, now: float | None = None) -> None:
        """Judge every region once and apply the resulting plan (the body of the loop)."""
        async with self._lock:
            await self._evaluate(time.time() if now is None else now)

    async def _evaluate(self, now: float) -> None:
        started = time.monotonic()
        loaded = await self._adapters()
        policy = loaded.policy
        if self.dry_run or policy.controller.dry_run:
            await self._watch(loaded, now, started)
            return
        if not await self._lead(loaded):
            return
        inputs = await self._inputs(policy, now)
        if inputs is None:
            return
        if inputs.fresh:
            await apply.hold_at_start(self, loaded, inputs)
            return
        evaluation = judge.evaluate(policy, inputs.state, inputs.evidence, inputs.overrides, now)
        self.evaluations += 1
        evaluation_id = self.report.next_evaluation_id(self.lease.token)
        self.report.decisions(
            loaded,
            evaluation,
            inputs.overrides,
            dry_run=False,
            lease_token=self.lease.token,
            evaluation_id=evaluation_id,
        )
        await self.blind.update(evaluation.decisions, self.stats, policy.windows.stale_after, now)
        result = await apply.apply_plan(self, loaded, evaluation, inputs, evaluation_id)
        held = await self._commit(loaded, inputs.state, evaluation, result, evaluation_id)
        await self.report.evaluated(
            self.client,
            loaded,
            evaluation,
            result,
            dry_run=False,
            lease_token=self.lease.token,
            evaluation_id=evaluation_id,
            duration_s=time.monotonic() - started,
            held=held,
        )
        notify.notify(f"STATUS=leader token={self.lease.token} {_status_line(evaluation)}")

    async def _lead(self, loaded: LoadedPolicy) -> bool:
        """Acquire or renew the lease; a standby (or Redis down: nobody knows who leads) writes nothing."""
        try:
            leader = await self.lease.ensure()
        except Exception as exc:
            self.log.warning("controller.redis_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            return False
        metrics.LEADER.set(1.0 if leader else 0.0)
        if not leader:
            self._state = None  # reload and re-align the state when we lead again
            self.log.debug("controller.standby")
            self.report.standby(loaded.hash)
        return leader

    async def _inputs(self, policy: Policy, now: float) -> Inputs | None:
        """The judge's inputs; on taking the lease, the state to start from (stored, aligned with Route 53)."""
        fresh = self._state is None
        try:
            if self._state is None:
                self._state = await self.starting_state(
                    policy, now, stored=await controller_state.load(self.client, policy)
                )
                if self._state is None:
                    return None
            evidence = await self.stats.evidence(now)
            active = await overrides.load(self.client, policy, now)
        except Exception as exc:
            self.log.warning("controller.redis_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            return None
        return Inputs(self._state, evidence, active, fresh)

    async def starting_state(
        self, policy: Policy, now: float, stored: ControllerState | None
    ) -> ControllerState | None:
        """The stored state aligned with Route 53, or the state Route 53 implies; None when Route 53 is unreadable."""
        try:
            current = await in_thread(self.dns.current_matrix)
        except Exception as exc:  # without knowing what DNS holds we must not start writing
            self.log.warning("controller.dns_unreadable", error=type(exc).__name__, detail=str(exc)[:200])
            return None
        if current is None:  # an owned record is missing: `trafficd dns bootstrap` first; a start must not guess
            self.log.warning("controller.dns_unreadable", error="incomplete", detail="owned records missing")
            return None
        if stored is None:
            state = start.state_from_dns(policy, current, now)
            self.log.info("controller.state_from_dns", serving=state.fractions())
            return state
        state, changed = start.align_with_dns(policy, stored, current, now)
        self.log.info("controller.state_loaded", regions=sorted(state.regions), aligned_with_dns=changed)
        return state

    def realign(self, *, deposed: bool) -> None:
        """Forget the state: the next evaluation re-aligns with what DNS holds and sends nothing; `deposed`: this
        controller no longer holds the writer epoch and takes a new one first (`apply.py`)."""
        self._state = None
        if deposed:
            self.epoch = None

    async def _commit(
        self,
        loaded: LoadedPolicy,
        state: ControllerState,
        evaluation: judge.Evaluation,
        result: ReconcileResult | None,
        evaluation_id: str,
    ) -> bool:
        """Keep the new state only when Route 53 shows the plan; otherwise re-decide the same step next time.

        Returns whether the plan was held (not committed).
        """
        moved = _matrix_moved(state.matrix, evaluation.matrix)
        committed = result is not None and result.complete
        if moved and not committed:
            self.log.warning(
                "controller.plan_held",
                evaluation_id=evaluation_id,
                policy_hash=loaded.hash,
                lease_token=self.lease.token,
                dns=None if result is None else result.status,
                fractions_wanted=evaluation.fractions,
            )
            return True
        if not self.lease.held:  # deposed while applying: the next leader owns the state now
            self.log.warning(
                "controller.lease_lapsed_before_write",
                evaluation_id=evaluation_id,
                token=self.lease.token,
                what="state",
            )
            self._state = None
            return True
        self._state = evaluation.state
        try:
            await controller_state.save(self.client, loaded.policy, evaluation.state)
        except Exception as exc:
            self.log.warning("controller.state_save_failed", evaluation_id=evaluation_id, error=type(exc).__name__)
        return False

    async def _watch(self, loaded: LoadedPolicy, now: float, started: float) -> None:
        """Dry-run: judge from the leader's stored state and log what would change, writing nothing (watch.py)."""
        await watch_once(self, loaded, now, started)

    async def shutdown(self) -> None:
        """Release the lease (or withdraw the dry-run watcher) and close the Redis client."""
        if self._built_for is None:
            return
        policy = self.holder.current.policy
        try:
            if self.dry_run or policy.controller.dry_run:
                await presence.withdraw_watcher(self.client, policy, self.controller_id)
            else:
                await self.lease.release()
        except Exception as exc:
            self.log.warning("controller.lease_release_failed", error=type(exc).__name__)
        with contextlib.suppress(Exception):
            await self.client.aclose()


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
