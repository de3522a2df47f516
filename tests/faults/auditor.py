"""An independent auditor of the Route 53 history: every batch the recording proxy accepted, checked as a whole.

It reads only what the proxy recorded (time, writer, epoch, every change) and the policy, and replays the zone
from its state before the scenario. It does not call trafficd's planner, judge or provider: pools, owned names
and shares are derived here from the policy, so a bug there cannot hide from it. Checks:

    one_writer_per_epoch   every batch of one writer epoch comes from one writer; epochs never go back in time
    no_write_while_frozen  no batch changes a weight inside a window the scenario declares frozen
    no_write_at_start      no batch changes a weight inside a window the scenario declares "a start"
    no_write_redis_down    no batch changes a weight while Redis (and so the lease) is gone
    max_step               per pool, the own member's share moves ≤ ramp.max_step per batch, and no spill-over
                           member gains more than ramp.max_step (a receiver losing its share — re-routed away
                           from a tripped receiver — is allowed), with one weight unit of rounding
    never_all_zero         after every batch every pool keeps a positive total weight
    foreign_untouched      no batch touches a record trafficd does not own (the epoch TXT record is owned)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trafficd.policy.schema import Policy

ROUNDING = 1.5 / 255  # one weight unit either way, plus the share's own rounding

Key = tuple[str, str, str]
Shares = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Window:
    """A time span (time.time()) in which no weight may change, with why ("while_frozen", "at_start", …)."""

    why: str
    start: float
    end: float


def _name(n: str) -> str:
    return n.lower().rstrip(".") + "."


@dataclass
class Auditor:
    policy: Policy
    baseline: dict[Key, dict[str, Any]]  # the zone before the scenario (the proxy's zone_now)
    windows: list[Window] = field(default_factory=list)

    def __post_init__(self) -> None:
        record = _name(self.policy.dns.record_name)
        self.pools = {
            _name(self.policy.dns.pool_name.format(region=r, record=record.rstrip("."))): r
            for r in self.policy.region_names
        }
        self.own_names = {record, *self.pools}

    def owned(self, key: Key) -> bool:
        name, rtype, _ = key
        return name in self.own_names or (rtype == "TXT" and name.endswith(_name(self.policy.dns.record_name)))

    def shares(self, zone: dict[Key, dict[str, Any]]) -> dict[str, dict[str, float]]:
        """Pool → member set identifier → share of the pool's total weight (empty dict: all zero)."""
        weights: dict[str, dict[str, int]] = defaultdict(dict)
        for (name, _, sid), r in zone.items():
            if name in self.pools and r.get("weight") is not None:
                weights[self.pools[name]][sid] = int(r["weight"])
        out = {}
        for pool, ws in weights.items():
            total = sum(ws.values())
            out[pool] = {sid: (w / total if total else 0.0) for sid, w in ws.items()}
        return out

    def audit(self, batches: Iterable[Any]) -> list[str]:
        """Every violation in the history (empty: the history is clean)."""
        problems: list[str] = []
        zone = dict(self.baseline)
        writers: dict[int | None, set[str | None]] = defaultdict(set)
        last_epoch = -1
        step = self.policy.ramp.max_step
        for b in sorted(batches, key=lambda b: b.at):
            before = self.shares(zone)
            weights_changed = False
            ours = b.writer is not None  # a hand edit (no trafficd writer) is replayed, not judged
            for action, r in b.changes:
                key = (r["name"], r["type"], r["set_identifier"])
                if ours and not self.owned(key):
                    problems.append(f"foreign_untouched: {b.writer} {action} {key} at {b.at:.3f}")
                if r["type"] != "TXT":
                    weights_changed = True
                if action == "DELETE":
                    zone.pop(key, None)
                else:
                    zone[key] = r
            if b.epoch is not None and ours:
                writers[b.epoch].add(b.writer)
                if b.epoch < last_epoch:
                    problems.append(f"one_writer_per_epoch: epoch {b.epoch} written after {last_epoch} by {b.writer}")
                last_epoch = max(last_epoch, b.epoch)
            after = self.shares(zone)
            if weights_changed and ours:
                problems += self._windows(b)
                problems += self._steps(b, before, after, step)
            problems += [f"never_all_zero: pool {p} all zero after {b.change_id}" for p in self.zero_pools(zone)]
        for epoch, ws in writers.items():
            if len(ws) > 1:
                problems.append(f"one_writer_per_epoch: epoch {epoch} written by {sorted(map(str, ws))}")
        return problems

    def _windows(self, b: Any) -> list[str]:
        return [
            f"no_write_{w.why}: {b.writer} changed weights at {b.at:.3f} inside [{w.start:.3f}, {w.end:.3f}]"
            for w in self.windows
            if w.start <= b.at <= w.end
        ]

    def zero_pools(self, zone: dict[Key, dict[str, Any]]) -> list[str]:
        """Pools whose member weights sum to zero (Route 53 would then spread traffic evenly)."""
        totals: dict[str, int] = defaultdict(int)
        for (name, _, _), r in zone.items():
            if name in self.pools and r.get("weight") is not None:
                totals[self.pools[name]] += int(r["weight"])
        return [p for p, t in totals.items() if t <= 0]

    def _steps(self, b: Any, before: Shares, after: Shares, step: float) -> list[str]:
        out = []
        for pool, now in after.items():
            was = before.get(pool, {})
            own = self.policy.set_identifier(pool)
            for sid, share in now.items():
                delta = share - was.get(sid, 0.0)
                is_own = sid.endswith(f"-to-{own}") and sid.startswith(f"{own}-to-")
                if (abs(delta) if is_own else delta) > step + ROUNDING:
                    out.append(f"max_step: pool {pool} member {sid} {was.get(sid, 0.0):.3f}→{share:.3f} by {b.writer}")
        return out


def report(name: str, problems: Sequence[str], batches: int, extra: str = "") -> str:
    """The scenario's one line."""
    verdict = "ok" if not problems else f"FAILED ({len(problems)}): " + "; ".join(problems[:3])
    return f"fault {name}: {verdict} — {batches} batch(es) audited{', ' + extra if extra else ''}"
