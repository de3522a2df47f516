"""DNS records as pure data: desired records from a traffic matrix, the diff, batches, validation, drift, epoch.

No provider API here: a provider (Route 53: `trafficd.dns.route53`) reads the zone into `Record`s, calls
`plan(...)` and sends each batch in its own wire format. Everything in this module is a pure function of its
arguments, so reconcile is testable (and idempotent) without a network. The layout of the records is the
topology's (`trafficd.dns.topology`); the provider's limits (weight scale, batch size) come in as `Limits`.

Only *owned* records — the (name, type, SetIdentifier) keys the topology declares — are ever read as ours or
changed, plus the writer-epoch TXT record (the fence, `epoch_record`). A change is `Change(before, after)`:
the provider deletes `before` exactly as it was read and creates `after` in the same all-or-nothing batch, so
a batch built on a stale read is refused whole. An absent record is never read as "delete it".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trafficd.dns.names import Key, key_text, normalize_name, normalize_value, record_to_log
from trafficd.dns.topology import member_set_identifier, pool_name, scaled_weights, topology_for
from trafficd.model import Record, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy

__all__ = [
    "Batch",
    "Change",
    "Drift",
    "Key",
    "Limits",
    "Plan",
    "desired_records",
    "detect_drift",
    "diff",
    "matrix_from_records",
    "member_set_identifier",
    "normalize_name",
    "normalize_value",
    "own_weights",
    "owned_keys",
    "owned_names",
    "plan",
    "pool_name",
    "record_to_log",
    "required_keys",
    "scaled_weights",
    "validate",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's limits: its weight scale, and what one batch may hold (changes, values, value characters)."""

    max_weight: int
    max_changes: int
    max_values: int
    max_value_chars: int


# ---------------------------------------------------------------- desired records


def owned_keys(policy: Policy) -> frozenset[Key]:
    """Every (name, type, SetIdentifier) the policy may write: the only records trafficd reads as its own.

    With neighbour-sized pools most of these are never created (`required_keys` are); a member the planner
    needs beyond them is created when the matrix first uses it."""
    names = policy.region_names
    everywhere = {r: dict.fromkeys(names, 1.0 / len(names)) for r in names}
    return frozenset(r.key for r in topology_for(policy).desired(everywhere, 1))


def required_keys(policy: Policy) -> frozenset[Key]:
    """The records that always exist once bootstrapped (each pool: itself and its neighbours, and the aliases)."""
    return frozenset(r.key for r in topology_for(policy).desired(identity_matrix(policy.region_names), 1))


def owned_names(policy: Policy) -> list[str]:
    """Every record name trafficd may write (for a listing that reads only these)."""
    return sorted({k[0] for k in owned_keys(policy)})


def desired_records(
    policy: Policy, matrix: TrafficMatrix, *, max_weight: int, existing: Iterable[Key] = ()
) -> list[Record]:
    """The records the matrix asks for, in a stable order (pool members before the alias records); `existing`
    (owned keys in the zone now) keeps every member created before in the layout."""
    return topology_for(policy).desired(matrix, max_weight, frozenset(existing))


def owned(policy: Policy, records: Iterable[Record]) -> dict[Key, Record]:
    keys = owned_keys(policy)
    return {r.key: r for r in records if r.key in keys}


def matrix_from_records(policy: Policy, records: Iterable[Record]) -> TrafficMatrix:
    """The matrix the owned records express now (rows missing when their pool is absent or all zero)."""
    return topology_for(policy).matrix({r.key: r for r in records})


def complete_matrix(policy: Policy, records: Iterable[Record]) -> TrafficMatrix | None:
    """The matrix the owned records express, or None unless every required record is present with a full row."""
    mine = owned(policy, records)
    if not required_keys(policy) <= set(mine):
        return None
    matrix = matrix_from_records(policy, mine.values())
    return matrix if set(matrix) == set(policy.region_names) else None


def own_weights(policy: Policy, records: Iterable[Record]) -> dict[str, int | None]:
    """Each region's weight for serving its own users (None: record absent)."""
    by_key = {r.key: r for r in records}
    topology = topology_for(policy)
    out: dict[str, int | None] = {}
    for region in policy.region_names:
        found = by_key.get(topology.own_key(region))
        out[region] = None if found is None else found.weight
    return out


# ---------------------------------------------------------------- diff, drift


@dataclass(frozen=True, slots=True)
class Change:
    """Replace `before` (the record as read, None when absent) by `after`; before == after asserts a record."""

    before: Record | None
    after: Record

    def to_log(self) -> dict[str, Any]:
        return {
            "key": "/".join(self.after.key),
            "before": record_to_log(self.before),
            "after": record_to_log(self.after),
        }


@dataclass(frozen=True, slots=True)
class Drift:
    """An owned record someone else changed: what we last wrote or saw (`before`), what is there now."""

    key: Key
    before: Record | None
    after: Record | None

    def to_log(self) -> dict[str, Any]:
        return {"key": "/".join(self.key), "before": record_to_log(self.before), "after": record_to_log(self.after)}


@dataclass(frozen=True, slots=True)
class Batch:
    """One all-or-nothing batch; `after_insync`: send it only once the previous batch is INSYNC."""

    changes: tuple[Change, ...]
    after_insync: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """The batches to send in order, the problems that forbid sending them, and the drift left alone."""

    batches: tuple[Batch, ...] = ()
    problems: tuple[str, ...] = ()
    respected: tuple[Key, ...] = field(default=())
    fence: Change | None = None  # the epoch assertion repeated at the head of every batch

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def changes(self) -> tuple[Change, ...]:
        """Every record change of every batch (without the epoch assertions)."""
        return tuple(c for b in self.batches for c in b.changes if c is not self.fence)


def diff(desired: Iterable[Record], actual: Mapping[Key, Record]) -> list[Change]:
    """Replace every desired record that is absent or different; never a deletion."""
    return [Change(actual.get(d.key), d) for d in desired if actual.get(d.key) != d]


def detect_drift(expected: Mapping[Key, Record | None], actual: Mapping[Key, Record]) -> list[Drift]:
    """Owned records that differ from what we last wrote or saw (`expected`; keys we know nothing of are skipped)."""
    return [Drift(k, before, actual.get(k)) for k, before in expected.items() if actual.get(k) != before]


# ---------------------------------------------------------------- validation, in named steps


def _size(changes: Sequence[Change]) -> tuple[int, int, int]:
    """(changes, values, value characters) of a batch in a provider's wire form: DELETE before + CREATE after."""
    n = values = chars = 0
    for c in changes:
        for r in (c.before, c.after) if c.before is not None else (c.after,):
            n += 1
            values += len(r.values)
            chars += sum(len(v) for v in r.values)
    return n, values, chars


def _size_problems(changes: Sequence[Change], limits: Limits) -> list[str]:
    n, values, chars = _size(changes)
    out = []
    if n > limits.max_changes:
        out.append(f"{n} changes in one batch (at most {limits.max_changes})")
    if values > limits.max_values:
        out.append(f"{values} values in one batch (at most {limits.max_values})")
    if chars > limits.max_value_chars:
        out.append(f"{chars} value characters in one batch (at most {limits.max_value_chars})")
    return out


def _change_problems(changes: Sequence[Change], limits: Limits) -> list[str]:
    """Each record on its own: unique keys, weights in range, one routing kind, TTL and values."""
    out: list[str] = []
    seen: set[Key] = set()
    for c in changes:
        a, k = c.after, key_text(c.after.key)
        if a.key in seen:
            out.append(f"{k}: changed twice in one batch (SetIdentifiers must be unique)")
        seen.add(a.key)
        if a.weight is not None and not (isinstance(a.weight, int) and 0 <= a.weight <= limits.max_weight):
            out.append(f"{k}: weight {a.weight!r} is not an integer in 0–{limits.max_weight}")
        if a.weight is not None and a.region is not None:
            out.append(f"{k}: both weighted and latency routing")
        if a.alias_target is None and (a.ttl is None or not a.values):
            out.append(f"{k}: a record that is not an alias needs a TTL and values")
    return out


def routing_kind(record: Record) -> str:
    """weighted, latency, simple (no SetIdentifier) or other (failover, geolocation…, not modelled)."""
    if not record.set_identifier:
        return "simple"
    if record.weight is not None:
        return "weighted"
    if record.region is not None:
        return "latency"
    return "other"


def _name_problems(name: str, recs: Sequence[Record]) -> list[str]:
    """One name after the batch: no CNAME beside other types, one routing kind per type, not all weights zero."""
    out: list[str] = []
    types = {r.type for r in recs}
    if "CNAME" in types and len(types) > 1:
        out.append(f"{name}: CNAME beside other types ({', '.join(sorted(types - {'CNAME'}))})")
    for rtype in sorted(types):
        group = [r for r in recs if r.type == rtype]
        kinds = sorted({routing_kind(r) for r in group})
        if len(kinds) > 1:
            out.append(f"{name} {rtype}: mixed routing types ({', '.join(kinds)})")
        if kinds == ["weighted"] and sum(r.weight or 0 for r in group) == 0:
            out.append(f"{name} {rtype}: every weight would be zero")
    return out


def _alias_problems(changes: Sequence[Change], final: Mapping[Key, Record]) -> list[str]:
    out = []
    for c in changes:
        target = c.after.alias_target
        if target is not None and not any(r.name == target and r.type == c.after.type for r in final.values()):
            out.append(f"{key_text(c.after.key)}: alias target {target} {c.after.type} does not exist in the zone")
    return out


def apply_changes(zone: Iterable[Record], changes: Iterable[Change]) -> list[Record]:
    """The zone after a batch (what the provider does when it takes it)."""
    by_key = {r.key: r for r in zone}
    by_key.update({c.after.key: c.after for c in changes})
    return list(by_key.values())


def validate(changes: Sequence[Change], zone: Iterable[Record], limits: Limits) -> list[str]:
    """What the provider would reject (or what we refuse) in this batch, judged on the zone as it would be after it."""
    final = {r.key: r for r in apply_changes(zone, changes)}
    touched = {c.after.name for c in changes}
    by_name: dict[str, list[Record]] = {}
    for r in final.values():
        if r.name in touched:
            by_name.setdefault(r.name, []).append(r)
    problems = _size_problems(changes, limits) + _change_problems(changes, limits)
    for name, recs in sorted(by_name.items()):
        problems += _name_problems(name, recs)
    return problems + _alias_problems(changes, final)


# ---------------------------------------------------------------- plan: diff → batches → validation


def _groups(changes: Sequence[Change]) -> list[list[Change]]:
    """Changes grouped by name, in order of first appearance (a pool is never split across batches if it fits)."""
    names: dict[str, list[Change]] = {}
    for c in changes:
        names.setdefault(c.after.name, []).append(c)
    return list(names.values())


def _fits(batch: Sequence[Change], limits: Limits) -> bool:
    return not _size_problems(batch, limits)


def split_batches(changes: Sequence[Change], limits: Limits, fence: Change | None = None) -> list[list[Change]]:
    """Whole names per batch while they fit (the fence at the head of each); a name too big alone is split."""
    head = [fence] if fence else []
    batches: list[list[Change]] = []
    current = list(head)
    for group in _groups(changes):
        if len(current) > len(head) and not _fits(current + group, limits):
            batches.append(current)
            current = list(head)
        for c in group:
            if len(current) > len(head) and not _fits([*current, c], limits):
                batches.append(current)
                current = list(head)
            current.append(c)
    if len(current) > len(head):
        batches.append(current)
    return batches


def _needs_insync(batch: Sequence[Change], created_before: set[str]) -> bool:
    """A batch creating an alias to a name an earlier batch created waits for that batch to be INSYNC."""
    return any(c.before is None and c.after.alias_target in created_before for c in batch)


def plan(
    policy: Policy,
    matrix: TrafficMatrix,
    zone: Sequence[Record],
    limits: Limits,
    *,
    respected: Iterable[Key] = (),
    fence: Change | None = None,
) -> Plan:
    """Desired vs the owned records in `zone` → validated batches, in order, each within `limits`.

    `zone` is every record listed (owned or not: the validation needs the neighbours). Keys in `respected`
    (drift the policy respects) are left as they are. `fence` (the epoch assertion) heads every batch. Each
    batch is validated on the zone as the batches before it leave it.
    """
    actual = owned(policy, zone)
    skip = set(respected)
    desired = desired_records(policy, matrix, max_weight=limits.max_weight, existing=actual)
    changes = [c for c in diff(desired, actual) if c.after.key not in skip]
    return plan_changes(changes, zone, limits, fence=fence, respected=tuple(sorted(skip)))


def plan_changes(
    changes: Sequence[Change],
    zone: Sequence[Record],
    limits: Limits,
    *,
    fence: Change | None = None,
    respected: tuple[Key, ...] = (),
) -> Plan:
    """Changes → batches within `limits` (the fence heading each), each validated on the zone the batches
    before it leave. Aliases to names the plan creates come in batches of their own after those names, and wait
    for them to be INSYNC (Route 53 resolves an alias target when it takes the batch)."""
    batches: list[Batch] = []
    problems: list[str] = []
    state: list[Record] = list(zone)
    created: set[str] = set()
    # An alias to a name this plan creates goes in a later batch, sent once the target's batch is INSYNC
    new_names = {c.after.name for c in changes if c.before is None}
    late = [c for c in changes if c.before is None and c.after.alias_target in new_names]
    early = [c for c in changes if not any(c is x for x in late)]
    for group in split_batches(early, limits, fence) + split_batches(late, limits, fence):
        problems += validate(group, state, limits)
        batches.append(Batch(tuple(group), _needs_insync(group, created)))
        created |= {c.after.name for c in group if c.before is None}
        state = apply_changes(state, group)
    return Plan(tuple(batches), tuple(problems), respected, fence)


def regions_touched(policy: Policy, changes: Iterable[Change]) -> list[str]:
    """The regions whose records the changes touch (a pool's source region, an alias's or weighted record's)."""
    pools = {pool_name(policy, r): r for r in policy.region_names}
    setids = {policy.set_identifier(r): r for r in policy.region_names}
    out = {pools.get(c.after.name) or setids.get(c.after.set_identifier) for c in changes}
    return sorted(r for r in out if r)
