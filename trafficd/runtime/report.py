"""What the controller tells the world about an evaluation: log events, metrics and the audit stream.

The log budget (README, "Log event catalogue"): an idle controller writes at most a few INFO lines an hour —
one `controller.summary` every `SUMMARY_EVERY_S`, plus one event whenever something changes (a region's serving
ratio or state, a guard starting or stopping to bite, an override, a Route 53 change). Everything else, such as
`controller.region_judged` for a region that stayed as it was and the per-evaluation `controller.evaluated`, is
DEBUG. Every decision event carries its `evaluation_id` (`<lease token>-<n>`: unique across leaders, because
every acquisition of the lease takes a new token); the same id is in the audit stream and in `trafficd history`.
A region moved by a manual override reads as such: `verdict: override`, `rule: manual_drain` / `manual_undrain`,
the override itself under `override`, and the judge's own verdict on the evidence under `judged_verdict`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trafficd.dns.records import regions_touched
from trafficd.runtime import audit, metrics

SUMMARY_EVERY_S = 300.0
_EPS = 1e-9


@dataclass
class _Period:
    """What happened since the last summary."""

    started: float
    evaluations: Counter[str] = field(default_factory=Counter)
    shifts: int = 0
    dns: Counter[str] = field(default_factory=Counter)
    last_evaluation_id: str | None = None


class ControllerReport:
    """Turns each evaluation into log events (within the budget), metric updates and audit entries."""

    def __init__(
        self,
        log: Any,
        *,
        summary_every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.summary_every_s = summary_every_s
        self.clock = clock
        self._period: _Period | None = None
        self._count = 0
        self._guards_seen: frozenset[tuple[str, str | None]] = frozenset()
        self._overrides_seen: dict[str, dict[str, Any]] = {}
        self._regions: dict[str, dict[str, Any]] = {}
        self._last_change: dict[str, tuple[str, str, float, float]] = {}
        self._pending_logged: str | None = None
        self._would_change: str | None = None  # the dry-run change set last logged
        self.audit_failed = False
        self.pending: list[audit.Entry] = []

    # ---------------------------------------------------------------- per evaluation

    def next_evaluation_id(self, lease_token: int | None) -> str:
        """`<lease token>-<n>` (a dry-run watcher, which holds no lease: `dry-<n>`): the name of one evaluation in
        logs, the audit stream and `trafficd history`."""
        self._count += 1
        return f"{lease_token if lease_token is not None else 'dry'}-{self._count}"

    def decisions(
        self, loaded: Any, evaluation: Any, active: Any, *, dry_run: bool, lease_token: int | None, evaluation_id: str
    ) -> None:
        """One event per region: INFO when its serving ratio or state changed, DEBUG when it stayed."""
        policy = loaded.policy
        now = evaluation.state.evaluated_at if hasattr(evaluation.state, "evaluated_at") else time.time()
        metrics.record_slo(policy.slo.total_p99, policy.slo.ttft_p99, policy.slo.error_rate)
        metrics.record_overrides(
            policy.region_names,
            {r: o.kind for r, o in active.by_region.items()},
            active.freeze is not None,
        )
        for decision in evaluation.decisions:
            fields = self._decision_fields(decision, active)
            ev = decision.evidence
            metrics.record_region(
                decision.region, {**fields, "heartbeat_age_s": None if ev is None else ev.heartbeat_age_s}
            )
            moved = abs(decision.fraction_after - decision.fraction_before) > _EPS
            changed = moved or decision.state_before != decision.state_after
            repeated = changed and self._repeats(decision)
            if not changed:
                self._last_change.pop(decision.region, None)
            event = "controller.weights_shifted" if moved else "controller.region_judged"
            (self.log.info if changed and not repeated else self.log.debug)(
                event,
                evaluation_id=evaluation_id,
                policy_hash=loaded.hash,
                lease_token=lease_token,
                dry_run=dry_run,
                frozen=active.freeze is not None,
                fail_open=evaluation.fail_open,
                **({"repeated": True} if repeated else {}),
                **fields,
            )
            self._regions[decision.region] = fields
            if repeated:
                continue
            if moved:
                direction = "down" if decision.fraction_after < decision.fraction_before else "up"
                metrics.SHIFTS.labels(decision.region, direction).inc()
            if changed:
                self.pending.append(_decision_entry(now, evaluation_id, loaded.hash, dry_run, fields))
        self._guards(evaluation, loaded.hash, evaluation_id, now)
        self._overrides(active, loaded.hash, evaluation_id, now)

    def _repeats(self, decision: Any) -> bool:
        """Whether this change is the one logged last time for the region: a step re-decided because Route 53
        has not taken it yet (plan held), or a dry-run watcher judging from a leader's state that does not move.
        Logged once at INFO; its repeats are DEBUG (`repeated: true`) and not audited again."""
        key = (
            str(decision.state_before),
            str(decision.state_after),
            round(decision.fraction_before, 6),
            round(decision.fraction_after, 6),
        )
        same = self._last_change.get(decision.region) == key
        self._last_change[decision.region] = key
        return same

    @staticmethod
    def _decision_fields(decision: Any, active: Any) -> dict[str, Any]:
        fields: dict[str, Any] = decision.to_log()
        o = active.by_region.get(decision.region)
        if o is not None and "override" in fields.get("guards", ()):
            # the judge's verdict on the evidence (e.g. `recovered`) is not why it moved: keep it apart
            fields["judged_verdict"], fields["verdict"] = fields.get("verdict"), "override"
            fields["rule"] = f"manual_{o.kind}"
            fields["decided_by"] = "override"
            fields["override"] = {k: v for k, v in o.to_dict().items() if k != "region"}
            who = f" by {o.created_by}" if o.created_by else ""
            fields["reasons"] = [f"manual {o.kind}{who}: {o.reason}"]
        return fields

    def _guards(self, evaluation: Any, policy_hash: str, evaluation_id: str, now: float) -> None:
        """A guard starting or stopping to change the plan is an event; biting again every evaluation is not."""
        events = {(g.guard, g.region): g for g in evaluation.guard_events}
        seen = frozenset(events)
        for key in sorted(seen - self._guards_seen, key=str):
            g = events[key]
            self.log.info("controller.guard_engaged", evaluation_id=evaluation_id, **g.to_log())
            regions = () if g.region is None else (g.region,)
            summary = f"guard {g.guard} engaged{'' if g.region is None else ' for ' + g.region}: {g.reason}"
            self.pending.append(audit.Entry("guard", now, evaluation_id, policy_hash, regions, summary, g.to_log()))
        for guard, region in sorted(self._guards_seen - seen, key=str):
            self.log.info("controller.guard_released", evaluation_id=evaluation_id, guard=guard, region=region)
            regions = () if region is None else (region,)
            summary = f"guard {guard} released{'' if region is None else ' for ' + region}"
            detail = {"guard": guard, "released": True}
            self.pending.append(audit.Entry("guard", now, evaluation_id, policy_hash, regions, summary, detail))
        self._guards_seen = seen

    def _overrides(self, active: Any, policy_hash: str, evaluation_id: str, now: float) -> None:
        """Overrides coming into force or ending, as this controller sees them (once each)."""
        current = {r: o.to_dict() for r, o in active.by_region.items()}
        if active.freeze is not None:
            current["*freeze"] = active.freeze.to_dict()
        for key in sorted(set(current) | set(self._overrides_seen)):
            new, old = current.get(key), self._overrides_seen.get(key)
            if new == old:
                continue
            o = new or old or {}
            state = "in_force" if new is not None else "ended"
            region = o.get("region")
            who = f" by {o.get('created_by')}" if o.get("created_by") else ""
            summary = f"manual {o.get('kind')}{'' if region is None else ' of ' + str(region)} {state.replace('_', ' ')}{who}: {o.get('reason')}"  # noqa: E501
            self.log.info("controller.override_seen", evaluation_id=evaluation_id, state=state, **o)
            regions = () if region is None else (str(region),)
            detail = {**o, "state": state}
            self.pending.append(audit.Entry("override", now, evaluation_id, policy_hash, regions, summary, detail))
        self._overrides_seen = current

    async def evaluated(
        self,
        client: Any,
        loaded: Any,
        evaluation: Any,
        result: Any,
        *,
        dry_run: bool,
        lease_token: int | None,
        evaluation_id: str,
        duration_s: float,
        held: bool,
    ) -> None:
        """After the reconcile: the DEBUG per-evaluation event, metrics, audit entries and (when due) a summary."""
        status = None if result is None else result.status
        changes = 0 if result is None else len(result.changes)
        drifted = 0 if result is None else len(result.drift)
        now = evaluation.state.evaluated_at if hasattr(evaluation.state, "evaluated_at") else time.time()
        metrics.record_reconcile(status, changes, drifted)
        metrics.EVALUATIONS.labels("leader").inc()
        metrics.EVALUATION_SECONDS.observe(duration_s)
        metrics.loop_completed()
        self.log.debug(
            "controller.evaluated",
            evaluation_id=evaluation_id,
            policy_hash=loaded.hash,
            lease_token=lease_token,
            dry_run=dry_run,
            dns=status,
            dns_changes=changes,
            duration_ms=round(duration_s * 1000, 1),
            **evaluation.to_log(),
        )
        self._route53_entry(result, now, evaluation_id, loaded, dry_run)
        if held:
            regions = tuple(d.region for d in evaluation.decisions if d.changed)
            summary = f"plan held: Route 53 did not take it ({status})"
            detail = {"dns": status, "fractions_wanted": evaluation.fractions}
            self.pending.append(audit.Entry("plan_held", now, evaluation_id, loaded.hash, regions, summary, detail))
        period = self._tick("leader", evaluation_id)
        period.shifts += sum(1 for d in evaluation.decisions if abs(d.fraction_after - d.fraction_before) > _EPS)
        period.dns[status or "failed"] += 1
        await self._flush(client, loaded.policy)
        await self._last_evaluation(client, loaded, evaluation_id, lease_token, dry_run, now, status)
        self._maybe_summary(loaded.hash, lease_token, dry_run, role="leader")

    def would_change(self, evaluation_id: str, changes: list[dict[str, Any]]) -> None:
        """A dry-run watcher's planned changes: logged when the set differs from the last one logged, not per tick."""
        key = json.dumps(changes, sort_keys=True, default=str) if changes else None
        if key is not None and key != self._would_change:
            self.log.info("controller.would_change", evaluation_id=evaluation_id, dry_run=True, changes=changes)
        self._would_change = key

    def standby(self, policy_hash: str) -> None:
        """A standby controller's evaluation: DEBUG only, and the periodic summary."""
        metrics.EVALUATIONS.labels("standby").inc()
        metrics.loop_completed()
        self._tick("standby", None)
        self._maybe_summary(policy_hash, None, False, role="standby")

    # ---------------------------------------------------------------- helpers

    def _route53_entry(self, result: Any, now: float, evaluation_id: str, loaded: Any, dry_run: bool) -> None:
        """Route 53 facts for the audit stream: batches sent or refused, and a change stuck pending (once)."""
        policy, policy_hash = loaded.policy, loaded.hash
        if result is None:
            return
        status = result.status
        if status in ("pending", "stuck"):
            if status == "stuck" and self._pending_logged != result.change_id:
                self._pending_logged = result.change_id
                summary = f"Route 53 change {result.change_id} stuck PENDING past the propagation timeout"
                detail = {"status": status, "change_id": result.change_id}
                self.pending.append(audit.Entry("route53", now, evaluation_id, policy_hash, (), summary, detail))
            return
        if not result.changes and not result.drift:
            return
        regions = tuple(regions_touched(policy, result.changes))
        cause = "drift" if result.drift and not _planned(result) else "plan"
        detail = {"status": status, "cause": cause, "dry_run": dry_run, **result.to_log()}
        what = f"{len(result.changes)} record change(s)" if result.changes else f"{len(result.drift)} drifted record(s)"
        summary = f"Route 53 {status}: {what} ({cause})" + (f", change {result.change_id}" if result.change_id else "")
        self.pending.append(audit.Entry("route53", now, evaluation_id, policy_hash, regions, summary, detail))

    def _tick(self, role: str, evaluation_id: str | None) -> _Period:
        if self._period is None:
            self._period = _Period(started=self.clock() - self.summary_every_s)  # the first summary comes at once
        self._period.evaluations[role] += 1
        if evaluation_id is not None:
            self._period.last_evaluation_id = evaluation_id
        return self._period

    def _maybe_summary(self, policy_hash: str, lease_token: int | None, dry_run: bool, *, role: str) -> None:
        period = self._period
        now = self.clock()
        if period is None or now - period.started < self.summary_every_s:
            return
        regions = {
            r: {
                "state": f.get("state_after"),
                "serving_fraction": f.get("serving_fraction_after"),
                "p99_ms": f.get("p99_ms"),
                "n": f.get("n"),
                "error_rate": f.get("error_rate") if f.get("n") else None,
            }
            for r, f in sorted(self._regions.items())
        }
        self.log.info(
            "controller.summary",
            role=role,
            period_s=round(now - period.started, 1) if period.evaluations.total() > 1 else 0.0,
            evaluations=dict(period.evaluations),
            last_evaluation_id=period.last_evaluation_id,
            shifts=period.shifts,
            dns=dict(period.dns),
            policy_hash=policy_hash,
            lease_token=lease_token,
            dry_run=dry_run,
            regions=regions if role == "leader" else None,
            overrides=sorted(self._overrides_seen),
            guards=sorted(f"{g}:{r}" if r else g for g, r in self._guards_seen),
        )
        self._period = _Period(started=now)

    async def _last_evaluation(
        self,
        client: Any,
        loaded: Any,
        evaluation_id: str,
        lease_token: int | None,
        dry_run: bool,
        now: float,
        dns: str | None,
    ) -> None:
        """What `trafficd status` shows of the leader: its policy hash, dry-run, last evaluation id and time."""
        info = {
            "evaluation_id": evaluation_id,
            "policy_hash": loaded.hash,
            "dry_run": dry_run,
            "at": now,
            "lease_token": lease_token,
            "dns": dns,
        }
        policy = loaded.policy
        # a Redis outage is logged once per episode by the audit write just before
        with contextlib.suppress(Exception):
            await audit.record_last_evaluation(client, policy.redis.key_prefix, policy.service, info)

    async def _flush(self, client: Any, policy: Any) -> None:
        """Write the pending audit entries; a failure is logged once per episode and the entries are retried."""
        if not self.pending:
            return
        try:
            await audit.record(client, policy.redis.key_prefix, policy.service, self.pending)
        except Exception as exc:
            if not self.audit_failed:
                self.log.warning("controller.audit_write_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            self.audit_failed = True
            self.pending = self.pending[-1000:]
            return
        if self.audit_failed:
            self.log.info("controller.audit_write_recovered")
        self.audit_failed = False
        self.pending = []


def _planned(result: Any) -> bool:
    """Whether a reconcile's changes are the plan's (not only a drift correction)."""
    drifted = {d.key for d in result.drift}
    return any(c.after.key not in drifted for c in result.changes)


def _decision_entry(now: float, evaluation_id: str, policy_hash: str, dry_run: bool, f: dict[str, Any]) -> audit.Entry:
    region = str(f.get("region"))
    before, after = f.get("serving_fraction_before"), f.get("serving_fraction_after")
    head = f"{region} {f.get('state_before')}→{f.get('state_after')}"
    if before is not None and after is not None and abs(after - before) > _EPS:
        head += f", serving {before:.2f}→{after:.2f}"
    reasons = "; ".join(str(r) for r in f.get("reasons") or ()) or "no reason given"
    summary = f"{head} by {f.get('decided_by')}: {reasons}" + (" (dry run)" if dry_run else "")
    detail = {k: v for k, v in f.items() if k != "region"}
    detail["dry_run"] = dry_run
    return audit.Entry("decision", now, evaluation_id, policy_hash, (region,), summary, detail)
